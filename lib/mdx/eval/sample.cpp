#include "mdx/eval/sample.h"

#include <fmt/format.h>
#include <torch/torch.h>

#include <cmath>
#include <sstream>

#include "mdx/corrupt/render.h"
#include "mdx/eval/trained_model.h"
#include "mdx/io/hdf5.h"
#include "mdx/io/image_table.h"
#include "mdx/io/png.h"
#include "mdx/tokenize/patches.h"
#include "mdx/util/error.h"
#include "mdx/util/log.h"
#include "mdx/util/output.h"
#include "mdx/util/progress.h"
#include "mdx/util/tool.h"
#include "mdx/util/torch_compat.h"

namespace mdx {

RespacedSchedule respace(const NoiseSchedule& schedule, int64_t steps) {
  const int64_t T = schedule.steps();
  if (steps < 1 || steps > T) throw UsageError(fmt::format("--steps must lie in [1, {}]", T));
  RespacedSchedule r;
  at::Tensor ac = schedule.alphas_cumprod().contiguous();
  const double* a = ac.data_ptr<double>();
  // guided-diffusion's space_timesteps with one section: a fractional stride, rounded.
  const double stride = steps > 1 ? static_cast<double>(T - 1) / static_cast<double>(steps - 1) : 0.0;
  double index = 0;
  for (int64_t i = 0; i < steps; ++i, index += stride) {
    const auto t = static_cast<int64_t>(std::llround(index));
    r.timesteps.push_back(t);
    r.alphas_cumprod.push_back(a[t]);
  }
  return r;
}

SamplerKind parse_sampler(const std::string& name) {
  if (name == "ddim") return SamplerKind::Ddim;
  if (name == "ddpm") return SamplerKind::Ddpm;
  throw UsageError("--sampler must be ddim or ddpm, got '" + name + "'");
}

at::Tensor reverse_diffusion(const RespacedSchedule& schedule, const SamplerSettings& settings,
                             const Denoiser& denoise, const at::Tensor& x_T,
                             const std::function<at::Tensor(int64_t)>& draw) {
  at::Tensor x = x_T;
  const int64_t B = x.size(0);
  for (auto s = static_cast<int64_t>(schedule.timesteps.size()) - 1; s >= 0; --s) {
    // The respaced process: alpha_bar of this step and the previous kept one (1 before the first).
    const double ac = schedule.alphas_cumprod[static_cast<size_t>(s)];
    const double ac_prev = s > 0 ? schedule.alphas_cumprod[static_cast<size_t>(s - 1)] : 1.0;
    at::Tensor t = at::full({B}, schedule.timesteps[static_cast<size_t>(s)], at::kLong);
    at::Tensor out = denoise(x, t).to(at::kFloat);
    // guided-diffusion's _predict_xstart_from_eps / _predict_eps_from_xstart.
    at::Tensor x0 = settings.predicts_x0 ? out : (x * std::sqrt(1 / ac) - out * std::sqrt(1 / ac - 1));
    if (settings.clip) x0 = x0.clamp(-1, 1);
    at::Tensor eps = (x * std::sqrt(1 / ac) - x0) / std::sqrt(1 / ac - 1);
    double sigma = 0;
    at::Tensor mean;
    if (settings.kind == SamplerKind::Ddim) {
      sigma = settings.eta * std::sqrt((1 - ac_prev) / (1 - ac)) * std::sqrt(1 - ac / ac_prev);
      mean = x0 * std::sqrt(ac_prev) + eps * std::sqrt(std::max(0.0, 1 - ac_prev - sigma * sigma));
    } else {
      // DDPM ancestral step: the posterior q(x_{t-1} | x_t, x0) with its own (fixed, small) variance.
      const double beta = 1 - ac / ac_prev;
      mean = x0 * (beta * std::sqrt(ac_prev) / (1 - ac)) + x * ((1 - ac_prev) * std::sqrt(1 - beta) / (1 - ac));
      sigma = std::sqrt(beta * (1 - ac_prev) / (1 - ac));
    }
    x = s > 0 && sigma > 0 ? mean + sigma * draw(s) : mean;
  }
  return x;
}

void SampleOptions::add_to(CLI::App& app) {
  app.add_option("checkpoint", checkpoint, "checkpoint made by mdx-train (umd or dit, or a generation fine-tune)")
      ->required();
  app.add_option("-o,--output", output, "image table to write (HDF5): images and the labels asked for");
  app.add_option("--grid", grid, "PNG grid to write: a row per class, the sampling parameters in tEXt chunks");
  app.add_option("--sampler", sampler, "ddim | ddpm (ancestral)")->capture_default_str();
  app.add_option("--eta", eta, "DDIM's eta (1: UMD's default; 0: deterministic)")->capture_default_str();
  app.add_option("--steps", steps, "sampling steps, respaced over the T of training")->capture_default_str();
  app.add_option("--cfg", cfg, "classifier-free guidance scale s: u + s (c - u) (1: none)")->capture_default_str();
  app.add_option("--classes", classes, "classes to sample (comma-separated; default: all)")->delimiter(',');
  app.add_option("--per-class", per_class, "samples per class")->capture_default_str();
  app.add_option("--count", count, "samples of an unconditional model")->capture_default_str();
  app.add_option("--predict", predict, "which head drives the sampler: eps | x0 | auto (eps)")->capture_default_str();
  app.add_flag("--raw-weights", raw_weights, "use the raw weights instead of the EMA weights");
  app.add_flag("--no-clip", no_clip, "do not clamp the x0 prediction to [-1, 1] at each step");
  app.add_option("--batch", batch, "samples per forward pass (twice that many rows with guidance)")
      ->capture_default_str();
  app.add_option("--grid-columns", grid_columns, "samples per class shown in the grid")->capture_default_str();
  app.add_option("--shard", shard, "I/N: generate only part I (0-based) of N contiguous parts of the samples")
      ->capture_default_str();
}

void SampleOptions::validate() const {
  if (output.empty() && grid.empty()) throw UsageError("give -o and/or --grid");
  parse_sampler(sampler);
  parse_shard(shard);
  if (!(eta >= 0)) throw UsageError("--eta must be >= 0");
  if (!std::isfinite(cfg)) throw UsageError("--cfg must be finite");
  if (per_class < 1 || batch < 1 || grid_columns < 1) throw UsageError("--per-class, --batch and --grid-columns must be >= 1");
  if (count < 0) throw UsageError("--count must be >= 0");
  if (predict != "eps" && predict != "x0" && predict != "auto") throw UsageError("--predict must be eps, x0 or auto");
}

namespace {

// SplitMix64: a well-mixed seed per sample, so sample i is the same whatever the batch or shard.
uint64_t mix(uint64_t x) {
  x += 0x9e3779b97f4a7c15ULL;
  x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ULL;
  x = (x ^ (x >> 27)) * 0x94d049bb133111ebULL;
  return x ^ (x >> 31);
}

std::vector<std::string> split_lines(const std::string& text) {
  std::vector<std::string> lines;
  std::istringstream in(text);
  for (std::string l; std::getline(in, l);) lines.push_back(l);
  return lines;
}

}  // namespace

void sample(const SampleOptions& opt, Provenance& prov) {
  opt.validate();
  const Shard shard = parse_shard(opt.shard);
  const at::Device device(prov.device);
  TrainedModel m = load_trained_model(opt.checkpoint, !opt.raw_weights, device);
  const ModelConfig& c = m.config;
  const std::string objective = m.setting("objective", "umd");
  NoiseSchedule schedule(m.objective.schedule, m.objective.steps);
  if (objective == "mae" || objective == "ldae" || !schedule.variance_preserving())
    throw Error(fmt::format("'{}' was trained under {} ({} schedule) and is not a pixel-space diffusion model; "
                            "fine-tune it for generation (mdx-train --init {} --objective dit --class-cond)",
                            opt.checkpoint, objective, m.setting("schedule", "no"), opt.checkpoint));
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
  SamplerSettings settings;
  settings.kind = parse_sampler(opt.sampler);
  settings.eta = opt.eta;
  settings.predicts_x0 = opt.predict == "x0";
  settings.clip = !opt.no_clip;
  const RespacedSchedule respaced = respace(schedule, opt.steps);

  const int64_t per = conditional ? opt.per_class : opt.count;
  const int64_t rows = conditional ? static_cast<int64_t>(classes.size()) : 1, total = rows * per;
  const auto [begin, end] = shard.range(total);
  std::vector<std::string> inputs = {opt.checkpoint};
  prov.add_input(opt.checkpoint, m.history);
  std::unique_ptr<AtomicOutput> table_out, grid_out;
  if (!opt.output.empty()) table_out = std::make_unique<AtomicOutput>(opt.output, inputs);
  if (!opt.grid.empty()) grid_out = std::make_unique<AtomicOutput>(opt.grid, inputs);
  const int64_t L = c.tokens(), D = c.token_dim();
  log("{} samples{} of '{}' ({}, step {}, {} weights): {} {} steps{}, cfg {}, predicting {}", end - begin,
      shard.count > 1 ? fmt::format(" (part {} of {}: {}..{})", shard.index, shard.count, begin, end - 1) : "",
      opt.checkpoint, objective, m.step, m.ema ? "EMA" : "raw", opt.sampler, opt.steps,
      settings.kind == SamplerKind::Ddim ? fmt::format(" (eta {})", opt.eta) : "", opt.cfg,
      settings.predicts_x0 ? "x0" : "eps");

  const bool guided = conditional && opt.cfg != 1.0;
  auto model_fn = [&](const at::Tensor& labels) -> Denoiser {
    return [&, labels](const at::Tensor& xt, const at::Tensor& t) {
      at::NoGradGuard ng;
      const int64_t B = xt.size(0);
      ModelInput in;
      in.tokens = guided ? at::cat({xt, xt}) : xt;
      in.time_index = (guided ? at::cat({t, t}) : t) + 1;  // index 0 means "no noise"
      if (conditional)
        in.labels = guided ? at::cat({labels, at::full({B}, c.num_classes, at::kLong)}) : labels;
      for (at::Tensor* p : {&in.tokens, &in.time_index, &in.labels})
        if (p->defined()) *p = p->to(device);
      ModelOutput out;
      {
        compat::CudaAutocast autocast(device.is_cuda());
        out = m.model->forward(in);
      }
      at::Tensor pred = (settings.predicts_x0 ? out.x0 : out.eps).to(at::kFloat).to(at::kCPU);
      if (!guided) return pred;
      at::Tensor cond = pred.slice(0, 0, B), uncond = pred.slice(0, B);
      return (uncond + opt.cfg * (cond - uncond)).contiguous();
    };
  };

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
    std::vector<at::Tensor> x_T;
    for (int64_t i = 0; i < B; ++i) {
      const int64_t index = start + i;
      gens.push_back(compat::cpu_generator(mix(prov.seed ^ mix(static_cast<uint64_t>(index)))));
      x_T.push_back(at::randn({L, D}, gens.back()));
      labels_v[static_cast<size_t>(i)] = conditional ? classes[static_cast<size_t>(index / per)] : -1;
    }
    auto draw = [&](int64_t) {
      std::vector<at::Tensor> z;
      for (auto& g : gens) z.push_back(at::randn({L, D}, g));
      return at::stack(z);
    };
    at::Tensor labels = at::tensor(labels_v, at::kLong);
    at::Tensor x0 = reverse_diffusion(respaced, settings, model_fn(labels), at::stack(x_T), draw);
    if (!at::isfinite(x0).all().item<bool>())
      throw Error(fmt::format("samples {}..{} are not finite", start, start + B - 1));
    at::Tensor images = to_uint8(unpatchify(x0, c.patch, c.height, c.width, c.channels)).contiguous();
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
      {"objective", objective},
      {"weights", m.ema ? "ema" : "raw"},
      {"sampler", opt.sampler},
      {"eta", fmt::format("{}", opt.eta)},
      {"steps", std::to_string(opt.steps)},
      {"schedule", schedule_name(schedule.kind())},
      {"cfg", fmt::format("{}", opt.cfg)},
      {"predict", settings.predicts_x0 ? "x0" : "eps"},
      {"clip", settings.clip ? "1" : "0"},
      {"classes", fmt::format("{}", fmt::join(classes, ","))},
      {"per_class", std::to_string(per)},
      {"shard", opt.shard}};
  const std::vector<std::string> names = split_lines(m.setting("label_names"));
  if (table_out) {
    if (conditional && static_cast<int64_t>(names.size()) == c.num_classes) h5::write_strings(file, "label_names", names);
    for (const auto& [k, v] : params) h5::write_attr(file, k, v);
    h5::write_provenance(file, prov);
    h5::close_output(file, opt.output);
    table_out->commit();
    log("wrote {} ({} images)", opt.output, end - begin);
  }
  if (grid_out) {
    Grid grid = render_grid(cells, at::Tensor(), at::Tensor(), c.patch, 0);
    auto text = prov.fields();
    for (const auto& [k, v] : params) text.push_back({"mdx_" + k, v});
    std::vector<std::string> row_names;
    for (int64_t k : classes)
      row_names.push_back(static_cast<size_t>(k) < names.size() ? names[static_cast<size_t>(k)] : std::to_string(k));
    text.push_back({"mdx_rows", conditional ? fmt::format("{}", fmt::join(row_names, "; ")) : "unconditional"});
    write_png(grid_out->temp_path(), grid.pixels.data(), grid.height, grid.width, 3, text);
    grid_out->commit();
    log("wrote {} ({} rows of {})", opt.grid, rows, columns);
  }
}

}  // namespace mdx
