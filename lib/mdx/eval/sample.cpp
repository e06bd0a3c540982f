#include "mdx/eval/sample.h"

#include <CLI/CLI.hpp>
#include <fmt/format.h>
#include <torch/torch.h>

#include <cmath>
#include <sstream>

#include "mdx/io/grid.h"
#include "mdx/eval/trained_model.h"
#include "mdx/io/hdf5.h"
#include "mdx/io/image_table.h"
#include "mdx/io/png.h"
#include "mdx/eval/sampler.h"
#include "mdx/tokenize/patches.h"
#include "mdx/tokenize/tokenizer.h"
#include "mdx/util/error.h"
#include "mdx/util/log.h"
#include "mdx/util/output.h"
#include "mdx/util/progress.h"
#include "mdx/util/splitmix.h"
#include "mdx/util/tool.h"
#include "mdx/util/torch_compat.h"

namespace mdx {

void SampleOptions::add_to(CLI::App& app) {
  app.add_option("checkpoint", checkpoint, "checkpoint made by mdx-train (umd or dit, or a generation fine-tune)")
      ->required();
  app.add_option("-o,--output", output, "image table to write (HDF5): images and the labels asked for");
  app.add_option("--grid", grid, "PNG grid to write: a row per class, the sampling parameters in tEXt chunks");
  std::string help = "auto (the checkpoint objective's own)";
  for (const auto& e : sampler_registry()) help += fmt::format(" | {} ({}: {})", e.name, e.family, e.summary);
  app.add_option("--sampler", sampler, help)->capture_default_str();
  app.add_option("--steps", steps,
                 "sampling steps: respaced over the T of training (diffusion, default 125) or MaskGIT's "
                 "iterations (default 12)")
      ->default_str("125 | 12");
  app.add_option("--cfg", cfg, "classifier-free guidance scale s: u + s (c - u) on eps or on the logits (1: none)")
      ->capture_default_str();
  app.add_option("--classes", classes, "classes to sample (comma-separated; default: all)")->delimiter(',');
  app.add_option("--per-class", per_class, "samples per class")->capture_default_str();
  app.add_option("--count", count, "samples of an unconditional model")->capture_default_str();
  add_weights_option(app, weights, "ema (as DiT and UMD sample) or raw");
  diffusion.add_to(app);
  maskgit.add_to(app);
  app.add_option("--batch", batch, "samples per forward pass (twice that many rows with guidance)")
      ->capture_default_str();
  app.add_option("--grid-columns", grid_columns, "samples per class shown in the grid")->capture_default_str();
  app.add_option("--shard", shard, "I/N: generate only part I (0-based) of N contiguous parts of the samples")
      ->capture_default_str();
}

void SampleOptions::validate() const {
  if (output.empty() && grid.empty()) throw UsageError("give -o and/or --grid");
  if (!grid.empty() && lowercase_extension(grid) != ".png")
    throw UsageError("--grid writes a PNG image: its name must end in .png, got '" + grid + "'");
  bool known = sampler == "auto";
  for (const auto& e : sampler_registry()) known = known || e.name == sampler;
  if (!known)
    throw UsageError(fmt::format("--sampler must be auto or one of {}, got '{}'", sampler_names(", "), sampler));
  parse_shard(shard);
  diffusion.validate();
  maskgit.validate();
  if (steps != -1 && steps < 1) throw UsageError("--steps must be at least 1");
  if (!std::isfinite(cfg)) throw UsageError("--cfg must be finite");
  if (per_class < 1 || batch < 1 || grid_columns < 1)
    throw UsageError("--per-class, --batch and --grid-columns must be >= 1");
  if (count < 0) throw UsageError("--count must be >= 0");
}

namespace {

std::vector<std::string> split_lines(const std::string& text) {
  std::vector<std::string> lines;
  std::istringstream in(text);
  for (std::string l; std::getline(in, l);) lines.push_back(l);
  return lines;
}

}  // namespace

void sample(const SampleOptions& opt, Provenance& prov) {
  opt.validate();
  FilePlan().read(opt.checkpoint, "the checkpoint").write(opt.output, "-o").write(opt.grid, "--grid").check();
  const Shard shard = parse_shard(opt.shard);
  const at::Device device(prov.device);
  TrainedModel m = load_trained_model(opt.checkpoint, opt.weights, device);
  m.bf16 = prov.precision == "bf16";
  const ModelConfig& c = m.config;
  std::unique_ptr<Sampler> sampler = make_sampler(opt.sampler, opt, m);
  const bool conditional = c.num_classes > 0;
  std::vector<int64_t> classes = opt.classes;
  if (!conditional) {
    if (!classes.empty()) throw Error(fmt::format("--classes: '{}' is not class-conditional", opt.checkpoint));
    if (opt.cfg != 1.0) throw Error(fmt::format("--cfg {}: '{}' is not class-conditional", opt.cfg, opt.checkpoint));
    if (opt.count < 1) throw UsageError("an unconditional model needs --count N");
  } else {
    if (opt.count > 0) throw UsageError("--count is for unconditional models; use --classes and --per-class");
    if (classes.empty())
      for (int64_t k = 0; k < c.num_classes; ++k) classes.push_back(k);
    for (int64_t k : classes)
      if (k < 0 || k >= c.num_classes)
        throw Error(fmt::format("--classes: class {} is outside [0, {}) of '{}'", k, c.num_classes, opt.checkpoint));
  }
  const int64_t per = conditional ? opt.per_class : opt.count;
  const int64_t rows = conditional ? static_cast<int64_t>(classes.size()) : 1, total = rows * per;
  const auto [begin, end] = shard.range(total);
  std::vector<std::string> inputs = {opt.checkpoint};
  prov.add_input(opt.checkpoint, m.history);
  std::unique_ptr<AtomicOutput> table_out, grid_out;
  if (!opt.output.empty()) table_out = std::make_unique<AtomicOutput>(opt.output, inputs);
  if (!opt.grid.empty()) grid_out = std::make_unique<AtomicOutput>(opt.grid, inputs);
  log("{} samples{} of '{}' ({}, step {}, {} weights): {}, cfg {}", end - begin,
      shard.count > 1 ? fmt::format(" (part {} of {}: {}..{})", shard.index, shard.count, begin, end - 1) : "",
      opt.checkpoint, m.objective->name(), m.step, m.ema ? "EMA" : "raw", sampler->describe(), opt.cfg);
  const GuidedModel model(m, opt.cfg, device);
  const TokenGeometry geometry = c.geometry();

  h5::Handle file;
  std::unique_ptr<ImageTableWriter> writer;
  if (table_out) {
    file = h5::create_file(table_out->temp_path());
    writer = std::make_unique<ImageTableWriter>(file, c.height, c.width, c.channels, conditional);
  }
  const int64_t columns = std::min(opt.grid_columns, per);
  at::Tensor cells = at::zeros({rows, columns, c.height, c.width, c.channels}, at::kByte);
  Progress progress("sampling", end - begin, "images");
  for (int64_t start = begin; start < end; start += opt.batch) {
    const int64_t B = std::min(opt.batch, end - start);
    std::vector<at::Generator> gens;
    std::vector<int64_t> labels_v(static_cast<size_t>(B));
    for (int64_t i = 0; i < B; ++i) {
      const int64_t index = start + i;
      gens.push_back(compat::cpu_generator(splitmix64(prov.seed ^ splitmix64(static_cast<uint64_t>(index)))));
      labels_v[static_cast<size_t>(i)] = conditional ? classes[static_cast<size_t>(index / per)] : -1;
    }
    at::Tensor labels = at::tensor(labels_v, at::kLong);
    at::Tensor x0 = sampler->generate(model, conditional ? labels : at::Tensor(), gens);
    if (!at::isfinite(x0).all().item<bool>())
      throw Error(fmt::format("samples {}..{} are not finite", start, start + B - 1));
    at::Tensor images = to_uint8(m.objective->tokenizer()->decode(x0, geometry)).contiguous();
    if (writer) writer->append(images.data_ptr<uint8_t>(), conditional ? labels_v.data() : nullptr, B);
    for (int64_t i = 0; i < B; ++i) {
      const int64_t index = start + i, row = index / per, col = index % per;
      if (col < columns) cells[row][col].copy_(images[i]);
    }
    progress.advance(B);
  }
  progress.finish();

  // Every sampling parameter, for the table's attributes and the grid's text chunks.
  std::vector<std::pair<std::string, std::string>> params = {
      {"checkpoint", opt.checkpoint},
      {"checkpoint_step", std::to_string(m.step)},
      {"objective", m.objective->name()},
      {"weights", m.ema ? "ema" : "raw"}};
  for (const auto& p : sampler->parameters()) params.push_back(p);
  params.insert(params.end(), {{"cfg", fmt::format("{}", opt.cfg)},
                               {"classes", fmt::format("{}", fmt::join(classes, ","))},
                               {"per_class", std::to_string(per)},
                               {"shard", opt.shard}});
  const std::vector<std::string> names = split_lines(m.setting("label_names"));
  // Both outputs are complete before either takes its final name: a failed grid leaves no table.
  if (table_out) {
    writer->finish();
    if (conditional && static_cast<int64_t>(names.size()) == c.num_classes) h5::write_strings(file, "label_names", names);
    for (const auto& [k, v] : params) h5::write_attr(file, k, v);
    h5::write_provenance(file, prov);
    h5::close_output(file, opt.output);
  }
  if (grid_out) {
    std::vector<std::string> row_names;
    for (int64_t k : classes)
      row_names.push_back(static_cast<size_t>(k) < names.size() ? names[static_cast<size_t>(k)]
                                                                 : fmt::format("class {}", k));
    GridLabels drawn;
    if (conditional) drawn.rows = row_names;  // the class each row asked for, beside it
    Grid grid = render_grid(cells, at::Tensor(), at::Tensor(), geometry.cell_h(), 0, drawn);
    auto text = prov.fields();
    for (const auto& [k, v] : params) text.push_back({"mdx_" + k, v});
    text.push_back({"mdx_rows", conditional ? fmt::format("{}", fmt::join(row_names, "; ")) : "unconditional"});
    for (const auto& kv : grid_layout_text(grid)) text.push_back(kv);
    write_png(grid_out->temp_path(), grid.pixels.data(), grid.height, grid.width, 3, text);
  }
  if (table_out) {
    table_out->commit();
    log("wrote {} ({} images)", opt.output, end - begin);
  }
  if (grid_out) {
    grid_out->commit();
    log("wrote {} ({} rows of {})", opt.grid, rows, columns);
  }
}

}  // namespace mdx
