#include "mdx/tokenize/tokenize.h"

#include <CLI/CLI.hpp>
#include <fmt/format.h>
#include <torch/torch.h>

#include <future>
#include <memory>

#include "mdx/io/decode.h"
#include "mdx/io/image_source.h"
#include "mdx/io/hdf5.h"
#include "mdx/io/image_table.h"
#include "mdx/tokenize/tokenizer.h"
#include "mdx/util/error.h"
#include "mdx/util/log.h"
#include "mdx/util/output.h"
#include "mdx/util/progress.h"
#include "mdx/util/tool.h"

namespace mdx {

std::pair<int64_t, int64_t> parse_size(const std::string& text) {
  try {
    size_t x = text.find('x');
    size_t used = 0;
    if (x == std::string::npos) {
      int64_t n = std::stoll(text, &used);
      if (used == text.size() && n > 0) return {n, n};
    } else {
      int64_t h = std::stoll(text.substr(0, x), &used);
      size_t used2 = 0;
      int64_t w = std::stoll(text.substr(x + 1), &used2);
      if (used == x && used2 == text.size() - x - 1 && h > 0 && w > 0) return {h, w};
    }
  } catch (const std::exception&) {
  }
  throw UsageError("--size expects N or HxW (positive integers), got '" + text + "'");
}

void TokenizeOptions::add_to(CLI::App& app) {
  app.add_option("inputs", inputs,
                 "image files, folders (one sub-folder per class), an IDX images file (.gz or plain), "
                 "or HDF5 image tables")
      ->required();
  app.add_option("-o,--output", output, "image table to write (HDF5)")->required();
  app.add_option("--labels", labels, "IDX labels file for an IDX images input");
  // One argument split here: CLI11's own splitting drops empty items and then takes the next
  // words (-o and its file) as more names.
  app.add_option_function<std::string>(
         "--label-names",
         [this](const std::string& text) {
           std::vector<std::string> names;
           for (std::string::size_type begin = 0;;) {
             const auto end = text.find(',', begin);
             names.push_back(text.substr(begin, end == std::string::npos ? std::string::npos : end - begin));
             if (names.back().empty())
               throw CLI::ValidationError("--label-names", fmt::format("name {} of '{}' is empty", names.size(), text));
             if (end == std::string::npos) break;
             begin = end + 1;
           }
           label_names = names;
         },
         "class names, comma-separated, in label order (IDX files have none)")
      ->type_name("NAMES");
  app.add_option("--size", size, "output size, N or HxW (default: the first image's size)");
  app.add_option("--fit", fit, "how --size is reached: crop (cover, centre crop), stretch, pad")
      ->capture_default_str();
  app.add_option("--channels", channels, "1 or 3 (0: as the source)")->capture_default_str()->check(
      CLI::IsMember({0, 1, 3}));
  app.add_option("--limit", limit, "take only the first N images (0: all)")->capture_default_str();
  app.add_option("--shard", shard, "I/N: write part I (0-based) of N contiguous parts, for array jobs");
  app.add_flag("--skip-bad", skip_bad, "skip undecodable image files (counted in the log and the provenance)");
  app.add_option("-j,--jobs", jobs, "decoding threads (0: one per core but one)")->capture_default_str();
  app.add_option("--block", block, "images decoded and written per step")->capture_default_str();
  app.add_option("--tokenizer", tokenizer,
                 "also store every image's tokens under this tokenizer, chunked: a VAE's posterior "
                 "(latent_mean, latent_logvar), a VQ's codes, or the tokens of the others");
}

void TokenizeOptions::validate() const {
  if (!size.empty()) parse_size(size);
  parse_fit(fit);
  if (!shard.empty()) parse_shard(shard);
  if (limit < 0) throw UsageError("--limit must be >= 0");
  if (jobs < 0) throw UsageError("--jobs must be >= 0");
  if (block < 1) throw UsageError("--block must be at least 1");
}

void tokenize(const TokenizeOptions& opt, Provenance& prov) {
  opt.validate();
  FilePlan().read(opt.inputs).read(opt.labels, "--labels").read(opt.tokenizer, "--tokenizer").write(opt.output).check();
  std::unique_ptr<ImageSource> src = open_image_source(opt.inputs, opt.labels, opt.jobs, opt.skip_bad);
  if (!opt.label_names.empty() && !src->labelled())
    throw UsageError("--label-names given, but the input has no labels (an IDX images file needs --labels)");
  AtomicOutput out(opt.output, opt.inputs);
  for (const auto& in : opt.inputs) prov.add_input(in);
  if (!opt.labels.empty()) prov.add_input(opt.labels);
  prov.merge_history(src->history());

  const Fit fit = parse_fit(opt.fit);
  const bool resize = !opt.size.empty();
  ImageGeometry g = src->probe(opt.channels);
  if (resize) std::tie(g.height, g.width) = parse_size(opt.size);

  int64_t n = src->size();
  if (opt.limit > 0) n = std::min(n, opt.limit);
  Shard shard = opt.shard.empty() ? Shard{} : parse_shard(opt.shard);
  auto [begin, end] = shard.range(n);

  log("{} {} image(s){} -> {}x{}x{}{}", end - begin, src->kind(), src->labelled() ? " with labels" : "", g.height,
      g.width, g.channels, shard.count > 1 ? fmt::format(" (shard {}/{}: rows {}..{})", shard.index, shard.count,
                                                          begin, end - 1) : std::string());

  // Pre-extracted tokens (fast-DiT's latents): encoded block by block beside the images.
  std::shared_ptr<const Tokenizer> tok;
  TokenGeometry tg;
  if (!opt.tokenizer.empty()) {
    tok = load_tokenizer_file(opt.tokenizer);
    tg = tok->geometry(g.height, g.width, g.channels);
    prov.add_input(opt.tokenizer);
    log("storing the tokens of {}: {} of {} values per image", tok->describe(), tg.tokens(),
        tg.discrete() ? 1 : tg.values);
  }

  h5::Handle file = h5::create_file(out.temp_path());
  ImageTableWriter writer(file, g.height, g.width, g.channels, src->labelled());
  std::vector<std::unique_ptr<h5::RowWriter>> token_writers;
  if (tok) {
    const auto L = static_cast<hsize_t>(tg.tokens()), D = static_cast<hsize_t>(tg.values);
    auto add = [&](const char* name, hid_t type, std::vector<hsize_t> dims, hsize_t bytes) {
      token_writers.push_back(std::make_unique<h5::RowWriter>(file, name, type, dims, h5::chunk_rows_for(bytes), 0));
    };
    if (tg.discrete()) add("codes", H5T_NATIVE_INT64, {L}, L * 8);
    else if (tok->has_posterior()) {
      add("latent_mean", H5T_NATIVE_FLOAT, {L, D}, L * D * 4);
      add("latent_logvar", H5T_NATIVE_FLOAT, {L, D}, L * D * 4);
    } else {
      add("tokens", H5T_NATIVE_FLOAT, {L, D}, L * D * 4);
    }
  }
  auto write_tokens = [&](const uint8_t* pixels, int64_t count) {
    if (!tok || count == 0) return;
    at::Tensor images = at::from_blob(const_cast<uint8_t*>(pixels), {count, g.height, g.width, g.channels}, at::kByte);
    std::vector<at::Tensor> parts;
    if (tg.discrete()) parts = {tok->encode(images).to(at::kLong).contiguous()};
    else if (tok->has_posterior()) {
      auto [mean, logvar] = tok->moments(images);
      parts = {mean.to(at::kFloat).contiguous(), logvar.to(at::kFloat).contiguous()};
    } else {
      parts = {tok->encode(images).to(at::kFloat).contiguous()};
    }
    for (size_t i = 0; i < parts.size(); ++i) token_writers[i]->append(parts[i].data_ptr(), static_cast<hsize_t>(count));
  };
  std::vector<std::string> skipped;
  std::vector<SourceItem> items, next;
  std::vector<uint8_t> px;
  std::vector<int64_t> lb;
  auto read_block = [&](int64_t start, std::vector<SourceItem>& into) {
    src->read(start, std::min(opt.block, end - start), g, resize, fit, into);
  };
  if (begin < end) read_block(begin, items);
  Progress progress("tokenizing", end - begin, "images");
  for (int64_t start = begin; start < end; start += opt.block) {
    const int64_t count = std::min(opt.block, end - start), following = start + opt.block;
    // Decode the next block while this one is compressed and written.
    std::future<void> ahead;
    if (following < end && src->reads_beside_writer())
      ahead = std::async(std::launch::async, [&, following] { read_block(following, next); });
    px.clear();
    lb.clear();
    for (auto& it : items) {
      if (!it.error.empty()) {
        if (it.fatal || !opt.skip_bad)
          throw Error(it.error + (it.fatal || src->kind() != std::string("files") ? "" : " (--skip-bad skips such files)"));
        warn("skipping: {}", it.error);
        skipped.push_back(it.name);
        continue;
      }
      px.insert(px.end(), it.image.pixels.begin(), it.image.pixels.end());
      lb.push_back(it.label);
    }
    int64_t good = static_cast<int64_t>(lb.size());
    writer.append(px.data(), lb.data(), good);
    write_tokens(px.data(), good);
    if (following < end) {
      if (ahead.valid()) ahead.get();
      else read_block(following, next);
    }
    std::swap(items, next);
    progress.advance(count);
  }
  progress.finish();
  if (writer.rows() == 0)
    throw Error(fmt::format("no images were written: '{}' held none (or all were skipped)",
                            fmt::join(opt.inputs, "', '")));

  std::vector<std::string> names = opt.label_names.empty() ? src->label_names() : opt.label_names;
  if (src->labelled() && !names.empty()) h5::write_strings(file, "label_names", names);
  if (tok) {
    token_writers.clear();  // closes the datasets
    save_tokenizer(file, "tokenizer", *tok);
    h5::write_attr(file, "tokens_identity", tok->identity());
  }
  h5::write_attr(file, "source", std::string(src->kind()));
  h5::write_attr(file, "skipped", static_cast<int64_t>(skipped.size()));
  if (!skipped.empty()) h5::write_strings(file, "skipped_files", skipped);
  h5::write_provenance(file, prov);
  h5::close_output(file, opt.output);
  out.commit();
  if (!skipped.empty()) warn("{} undecodable file(s) skipped", skipped.size());
  log("wrote {} images to {}{}", writer.rows(), opt.output, writer.compressed() ? " (deflated)" : "");
}

}  // namespace mdx
