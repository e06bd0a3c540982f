#include "mdx/eval/embed.h"

#include <CLI/CLI.hpp>
#include <fmt/format.h>
#include <torch/torch.h>

#include "mdx/eval/trained_model.h"
#include "mdx/io/hdf5.h"
#include "mdx/io/image_table.h"
#include "mdx/util/error.h"
#include "mdx/util/log.h"
#include "mdx/util/output.h"
#include "mdx/util/progress.h"
#include "mdx/util/tool.h"

namespace mdx {

void EmbedOptions::add_to(CLI::App& app) {
  app.add_option("checkpoint", checkpoint, "checkpoint made by mdx-train (any objective)")->required();
  app.add_option("tables", tables, "image table(s) (HDF5), read as one table")->required();
  app.add_option("-o,--output", output, "embeddings file to write (HDF5)")->required();
  app.add_option("--pool", pool, "cls (mean of the CLS outputs: UMD's representation) | mean (of the patch "
                                 "tokens) | cls+mean (both, concatenated)")
      ->capture_default_str();
  app.add_option("--blocks", blocks, "pool each of the encoder's last N blocks (each through its final norm) and "
                                     "concatenate them: N x the pool's width features (DINO's n_last_blocks)")
      ->capture_default_str();
  app.add_option("--t", t, "embed inputs noised at timestep t by the checkpoint's objective (-1: clean, time index 0)")
      ->capture_default_str();
  add_weights_option(app, weights, "raw (as UMD and MAE probe) or ema");
  app.add_option("--tokenizer", tokenizer,
                 "l-DAE with --t: the PCA latent to noise in (default: the one the checkpoint carries)");
  app.add_option("--batch", batch, "images per forward pass")->capture_default_str();
  app.add_option("--shard", shard, "I/N: embed only part I (0-based) of N contiguous parts of the table")
      ->capture_default_str();
}

void EmbedOptions::validate() const {
  parse_pool(pool);
  parse_shard(shard);
  if (batch < 1) throw UsageError("--batch must be at least 1");
  if (blocks < 1) throw UsageError("--blocks must be at least 1");
  if (t < -1) throw UsageError("--t must be -1 (clean) or a timestep >= 0");
}

void embed(const EmbedOptions& opt, Provenance& prov) {
  opt.validate();
  const Shard shard = parse_shard(opt.shard);
  FilePlan().read(opt.tables).read(opt.checkpoint, "the checkpoint").read(opt.tokenizer, "--tokenizer")
      .write(opt.output).check();
  std::vector<std::string> inputs = opt.tables;
  inputs.push_back(opt.checkpoint);
  if (!opt.tokenizer.empty()) inputs.push_back(opt.tokenizer);
  AtomicOutput out(opt.output, inputs);
  ImageTable table(opt.tables);
  TrainedModel m = [&] {
    try {
      return load_trained_model(opt.checkpoint, opt.weights, at::Device(prov.device), opt.tokenizer);
    } catch (const Error& e) {  // a --tokenizer that does not fit the checkpoint is named
      if (opt.tokenizer.empty()) throw;
      throw Error(fmt::format("--tokenizer '{}' with '{}': {}", opt.tokenizer, opt.checkpoint, e.what()));
    }
  }();
  m.bf16 = prov.precision == "bf16";
  const ModelConfig& c = m.config;
  if (table.height() != c.height || table.width() != c.width || table.channels() != c.channels)
    throw Error(fmt::format("'{}' holds {}x{}x{} images; the model of '{}' was trained on {}x{}x{}", opt.tables[0],
                            table.height(), table.width(), table.channels(), opt.checkpoint, c.height, c.width,
                            c.channels));
  FeatureEncoder encoder(m, parse_pool(opt.pool), opt.t, prov.seed, opt.blocks);
  if (!opt.tokenizer.empty()) prov.add_input(opt.tokenizer);
  prov.add_input(opt.checkpoint, m.history);
  for (const auto& path : opt.tables) prov.add_input(path);
  prov.merge_history(table.history());

  const auto [begin, end] = shard.range(table.size());
  const int64_t n = end - begin, F = encoder.dim();
  log("{} images{} through the {} encoder of '{}' (step {}, {} weights), {} pooling{}, {} -> {} features",
      n, shard.count > 1 ? fmt::format(" (part {} of {})", shard.index, shard.count) : std::string(),
      m.objective->name(), opt.checkpoint, m.step, m.ema ? "EMA" : "raw", opt.pool,
      opt.blocks > 1 ? fmt::format(" of the last {} blocks", opt.blocks) : std::string(),
      opt.t < 0 ? std::string("clean input") : fmt::format("noised at t = {}", opt.t), F);

  h5::Handle f = h5::create_file(out.temp_path());
  {
    const hsize_t chunk = h5::chunk_rows_for(static_cast<hsize_t>(F) * sizeof(float));
    h5::RowWriter embeddings(f, "embeddings", H5T_NATIVE_FLOAT, {static_cast<hsize_t>(F)}, chunk, 0);
    std::unique_ptr<h5::RowWriter> labels;
    if (table.has_labels()) labels = std::make_unique<h5::RowWriter>(f, "labels", H5T_NATIVE_INT64,
                                                                     std::vector<hsize_t>{}, 1 << 16, 0);
    const int64_t batch = std::max<int64_t>(1, std::min(opt.batch, end - begin));  // never more than the rows
    at::Tensor images = at::empty({batch, c.height, c.width, c.channels}, at::kByte);
    std::vector<int64_t> label_buf(static_cast<size_t>(batch));
    Progress progress("embedding", n, "images");
    for (int64_t start = begin; start < end; start += batch) {
      const int64_t b = std::min(batch, end - start);
      table.read(start, b, images.data_ptr<uint8_t>(), labels ? label_buf.data() : nullptr);
      at::Tensor e = encoder(images.slice(0, 0, b));
      if (!at::isfinite(e).all().item<bool>())
        throw Error(fmt::format("the encoder of '{}' gives non-finite features for rows {}..{}", opt.checkpoint,
                                start, start + b - 1));
      embeddings.append(e.data_ptr<float>(), static_cast<hsize_t>(b));
      if (labels) labels->append(label_buf.data(), static_cast<hsize_t>(b));
      progress.advance(b);
    }
    progress.finish();
  }
  if (!table.label_names().empty()) h5::write_strings(f, "label_names", table.label_names());
  h5::write_attr(f, "checkpoint", opt.checkpoint);
  h5::write_attr(f, "checkpoint_step", m.step);
  h5::write_attr(f, "objective", m.objective->name());
  h5::write_attr(f, "pool", opt.pool);
  h5::write_attr(f, "blocks", opt.blocks);
  h5::write_attr(f, "t", opt.t);
  h5::write_attr(f, "weights", std::string(m.ema ? "ema" : "raw"));
  h5::write_attr(f, "shard", opt.shard);
  h5::write_provenance(f, prov);
  h5::close_output(f, opt.output);
  out.commit();
  log("wrote {} ({} x {})", opt.output, n, F);
}

}  // namespace mdx
