#include "mdx/tokenize/tokenize.h"

#include <fmt/format.h>
#include <torch/torch.h>

#include <algorithm>
#include <atomic>
#include <filesystem>
#include <future>
#include <map>
#include <memory>
#include <thread>

#include "mdx/io/decode.h"
#include "mdx/io/hdf5.h"
#include "mdx/io/idx.h"
#include "mdx/io/image_table.h"
#include "mdx/tokenize/patches.h"
#include "mdx/tokenize/pca.h"
#include "mdx/util/error.h"
#include "mdx/util/log.h"
#include "mdx/util/output.h"
#include "mdx/util/progress.h"
#include "mdx/util/tool.h"

namespace fs = std::filesystem;

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
  app.add_option("--label-names", label_names, "class names, comma-separated, in label order (IDX files have none)")
      ->delimiter(',')
      ->allow_extra_args(false);
  app.add_option("--size", size, "output size, N or HxW (default: the first image's size)");
  app.add_option("--fit", fit, "how --size is reached: crop (cover, centre crop), stretch, pad")
      ->capture_default_str();
  app.add_option("--channels", channels, "1 or 3 (0: as the source)")->capture_default_str()->check(
      CLI::IsMember({0, 1, 3}));
  app.add_option("--limit", limit, "take only the first N images (0: all)")->capture_default_str();
  app.add_option("--shard", shard, "I/N: write part I (0-based) of N contiguous parts, for array jobs");
  app.add_option("--tokenizer", tokenizer, "PCA tokenizer (mdx-pca-fit): also store every patch's latent");
  app.add_flag("--skip-bad", skip_bad, "skip undecodable image files (counted in the log and the provenance)");
  app.add_option("-j,--jobs", jobs, "decoding threads (0: one per core but one)")->capture_default_str();
  app.add_option("--block", block, "images decoded and written per step")->capture_default_str();
}

void TokenizeOptions::validate() const {
  if (!size.empty()) parse_size(size);
  parse_fit(fit);
  if (!shard.empty()) parse_shard(shard);
  if (limit < 0) throw UsageError("--limit must be >= 0");
  if (jobs < 0) throw UsageError("--jobs must be >= 0");
  if (block < 1) throw UsageError("--block must be at least 1");
}

namespace {

struct Geometry {
  int64_t height = 0, width = 0, channels = 0;
};

struct Item {
  Image image;
  int64_t label = -1;
  std::string error;  // non-empty: the item could not be read
  bool fatal = false; // the error is not a bad file (--skip-bad does not apply)
  std::string name;   // file name for messages
};

// Brings an image to the table's geometry; without --size a different size is an error.
Image conform(Image img, const Geometry& g, bool resize, Fit fit, const std::string& name) {
  img = convert_channels(std::move(img), g.channels);
  if (img.height != g.height || img.width != g.width) {
    if (!resize)
      throw Error(fmt::format("'{}' is {}x{} but the table is {}x{} (the first image's size); give --size to resize",
                              name, img.height, img.width, g.height, g.width));
    img = fit_image(img, g.height, g.width, fit);
  }
  return img;
}

// Where images come from: reads ranges in increasing order.
class Source {
 public:
  virtual ~Source() = default;
  virtual int64_t size() const = 0;
  virtual bool labelled() const = 0;
  virtual std::vector<std::string> label_names() const { return {}; }
  virtual std::vector<std::string> history() const { return {}; }
  virtual const char* kind() const = 0;
  // The native geometry (channels already resolved against `channels`, 0 = natural).
  virtual Geometry probe(int channels) = 0;
  virtual void read(int64_t start, int64_t count, const Geometry& g, bool resize, Fit fit, std::vector<Item>& out) = 0;
  // Whether read() may run while the main thread writes HDF5 (the serial HDF5 library is not
  // thread-safe, so table sources may not).
  virtual bool reads_beside_writer() const { return true; }
};

class IdxSource : public Source {
 public:
  IdxSource(const std::string& images, const std::string& labels) : images_(images, 3), path_(images) {
    if (!labels.empty()) {
      labels_ = std::make_unique<IdxReader>(labels, 1);
      if (labels_->items() != images_.items())
        throw Error(fmt::format("'{}' has {} labels but '{}' has {} images", labels, labels_->items(), images,
                                images_.items()));
    }
  }
  int64_t size() const override { return images_.items(); }
  bool labelled() const override { return labels_ != nullptr; }
  const char* kind() const override { return "idx"; }
  Geometry probe(int channels) override { return {images_.dims()[1], images_.dims()[2], channels ? channels : 1}; }
  void read(int64_t start, int64_t count, const Geometry& g, bool resize, Fit fit, std::vector<Item>& out) override {
    skip_to(start);
    const int64_t h = images_.dims()[1], w = images_.dims()[2];
    std::vector<uint8_t> px(static_cast<size_t>(count * h * w));
    std::vector<uint8_t> lb(static_cast<size_t>(count));
    images_.read(count, px.data());
    if (labels_) labels_->read(count, lb.data());
    pos_ += count;
    out.resize(count);
    for (int64_t i = 0; i < count; ++i) {
      Image img{h, w, 1, std::vector<uint8_t>(px.begin() + i * h * w, px.begin() + (i + 1) * h * w)};
      out[i].name = fmt::format("{}[{}]", path_, start + i);
      out[i].image = conform(std::move(img), g, resize, fit, out[i].name);
      out[i].label = labels_ ? lb[i] : -1;
    }
  }

 private:
  void skip_to(int64_t start) {  // gzip streams only go forward
    std::vector<uint8_t> scratch;
    while (pos_ < start) {
      int64_t n = std::min<int64_t>(start - pos_, 4096);
      scratch.resize(static_cast<size_t>(n * images_.item_bytes()));
      images_.read(n, scratch.data());
      if (labels_) labels_->read(n, scratch.data());  // a label is one byte: fits
      pos_ += n;
    }
  }
  IdxReader images_;
  std::unique_ptr<IdxReader> labels_;
  std::string path_;
  int64_t pos_ = 0;
};

class TableSource : public Source {
 public:
  explicit TableSource(const std::vector<std::string>& paths) : table_(paths) {}
  int64_t size() const override { return table_.size(); }
  bool labelled() const override { return table_.has_labels(); }
  std::vector<std::string> label_names() const override { return table_.label_names(); }
  std::vector<std::string> history() const override { return table_.history(); }
  const char* kind() const override { return "table"; }
  bool reads_beside_writer() const override { return false; }
  Geometry probe(int channels) override {
    return {table_.height(), table_.width(), channels ? channels : table_.channels()};
  }
  void read(int64_t start, int64_t count, const Geometry& g, bool resize, Fit fit, std::vector<Item>& out) override {
    const int64_t bytes = table_.image_bytes();
    std::vector<uint8_t> px(static_cast<size_t>(count * bytes));
    std::vector<int64_t> lb(static_cast<size_t>(count), -1);
    table_.read(start, count, px.data(), table_.has_labels() ? lb.data() : nullptr);
    out.resize(count);
    for (int64_t i = 0; i < count; ++i) {
      Image img{table_.height(), table_.width(), table_.channels(),
                std::vector<uint8_t>(px.begin() + i * bytes, px.begin() + (i + 1) * bytes)};
      out[i].name = fmt::format("row {}", start + i);
      out[i].image = conform(std::move(img), g, resize, fit, out[i].name);
      out[i].label = lb[i];
    }
  }

 private:
  ImageTable table_;
};

class FileSource : public Source {
 public:
  FileSource(const std::vector<std::string>& inputs, int jobs) : jobs_(jobs) {
    bool folders = false, files = false;
    for (const auto& in : inputs) (fs::is_directory(in) ? folders : files) = true;
    if (folders && files) throw UsageError("give either image files or folders, not both");
    if (files) {
      for (const auto& in : inputs) entries_.push_back({in, -1});
      return;
    }
    // Folders: one class per sub-folder, names sorted; label = index in the union of all names.
    std::map<std::string, std::vector<std::string>> by_class;
    std::vector<std::string> unlabelled;
    for (const auto& root : inputs) {
      std::vector<fs::path> children;
      for (const auto& e : fs::directory_iterator(root)) children.push_back(e.path());
      std::sort(children.begin(), children.end());
      for (const auto& c : children) {
        std::string name = c.filename().string();
        if (name.empty() || name[0] == '.') continue;
        if (fs::is_directory(c)) {
          auto& list = by_class[name];
          for (const auto& e : fs::recursive_directory_iterator(c))
            if (e.is_regular_file() && is_image_file(e.path().string())) list.push_back(e.path().string());
        } else if (is_image_file(c.string())) {
          unlabelled.push_back(c.string());
        }
      }
    }
    if (!by_class.empty() && !unlabelled.empty())
      warn("{} image files beside the class folders are ignored (e.g. '{}')", unlabelled.size(), unlabelled[0]);
    if (by_class.empty()) {
      std::sort(unlabelled.begin(), unlabelled.end());
      for (auto& f : unlabelled) entries_.push_back({f, -1});
    } else {
      labelled_ = true;
      for (auto& [name, list] : by_class) {
        std::sort(list.begin(), list.end());
        for (auto& f : list) entries_.push_back({f, static_cast<int64_t>(names_.size())});
        names_.push_back(name);
      }
    }
    if (entries_.empty()) throw Error("no image files found in the input folder(s)");
  }
  int64_t size() const override { return static_cast<int64_t>(entries_.size()); }
  bool labelled() const override { return labelled_; }
  std::vector<std::string> label_names() const override { return names_; }
  const char* kind() const override { return "files"; }
  Geometry probe(int channels) override {
    std::string first_error;
    for (const auto& e : entries_) {
      try {
        Image img = decode_image(e.path, channels);
        return {img.height, img.width, img.channels};
      } catch (const Error& err) {
        if (first_error.empty()) first_error = err.what();
      }
      if (!skip_bad_probe_) break;
    }
    throw Error(first_error);
  }
  void allow_bad(bool skip) { skip_bad_probe_ = skip; }
  void read(int64_t start, int64_t count, const Geometry& g, bool resize, Fit fit, std::vector<Item>& out) override {
    out.assign(count, Item{});
    std::atomic<int64_t> next{0};
    auto work = [&] {
      for (int64_t i; (i = next++) < count;) {
        const auto& e = entries_[start + i];
        out[i].name = e.path;
        out[i].label = e.label;
        Image img;
        try {
          img = decode_image(e.path, static_cast<int>(g.channels));
        } catch (const std::exception& err) {
          out[i].error = err.what();
          continue;
        }
        try {
          out[i].image = conform(std::move(img), g, resize, fit, e.path);
        } catch (const std::exception& err) {
          out[i].error = err.what();
          out[i].fatal = true;
        }
      }
    };
    // By default one core is left to the main thread, which compresses and writes meanwhile.
    int n = jobs_ > 0 ? jobs_ : static_cast<int>(std::max(2u, std::thread::hardware_concurrency()) - 1);
    n = static_cast<int>(std::min<int64_t>(n, count));
    std::vector<std::thread> pool;
    for (int t = 1; t < n; ++t) pool.emplace_back(work);
    work();
    for (auto& t : pool) t.join();
  }

 private:
  struct Entry {
    std::string path;
    int64_t label;
  };
  std::vector<Entry> entries_;
  std::vector<std::string> names_;
  bool labelled_ = false, skip_bad_probe_ = false;
  int jobs_;
};

bool is_hdf5(const std::string& path) { return fs::is_regular_file(path) && H5Fis_hdf5(path.c_str()) > 0; }

std::unique_ptr<Source> open_source(const TokenizeOptions& opt) {
  int tables = 0, images = 0, dirs = 0, other = 0;
  for (const auto& in : opt.inputs) {
    if (!fs::exists(in)) throw Error("cannot open '" + in + "': no such file or directory");
    if (fs::is_directory(in)) ++dirs;
    else if (is_hdf5(in)) ++tables;
    else if (is_image_file(in)) ++images;
    else ++other;
  }
  if (!opt.labels.empty() && other == 0)
    throw UsageError("--labels goes with an IDX images file");
  if (other > 0) {
    if (opt.inputs.size() != 1)
      throw UsageError("an IDX images file is read alone (with --labels); merge tables afterwards by listing them");
    return std::make_unique<IdxSource>(opt.inputs[0], opt.labels);
  }
  if (tables > 0) {
    if (tables != static_cast<int>(opt.inputs.size())) throw UsageError("give either HDF5 tables or images, not both");
    return std::make_unique<TableSource>(opt.inputs);
  }
  auto files = std::make_unique<FileSource>(opt.inputs, opt.jobs);
  files->allow_bad(opt.skip_bad);
  return files;
}

}  // namespace

void tokenize(const TokenizeOptions& opt, Provenance& prov) {
  opt.validate();
  std::unique_ptr<Source> src = open_source(opt);
  if (!opt.label_names.empty() && !src->labelled())
    throw UsageError("--label-names given, but the input has no labels (an IDX images file needs --labels)");
  AtomicOutput out(opt.output, opt.inputs);
  for (const auto& in : opt.inputs) prov.add_input(in);
  if (!opt.labels.empty()) prov.add_input(opt.labels);
  prov.merge_history(src->history());

  const Fit fit = parse_fit(opt.fit);
  const bool resize = !opt.size.empty();
  Geometry g = src->probe(opt.channels);
  if (resize) std::tie(g.height, g.width) = parse_size(opt.size);

  int64_t n = src->size();
  if (opt.limit > 0) n = std::min(n, opt.limit);
  Shard shard = opt.shard.empty() ? Shard{} : parse_shard(opt.shard);
  auto [begin, end] = shard.range(n);

  std::unique_ptr<PcaTokenizer> tok;
  if (!opt.tokenizer.empty()) {
    tok = std::make_unique<PcaTokenizer>(PcaTokenizer::load(opt.tokenizer));
    prov.add_input(opt.tokenizer);
    if (tok->channels != g.channels)
      throw Error(fmt::format("tokenizer '{}' is for {} channels, the table has {}", opt.tokenizer, tok->channels,
                              g.channels));
    check_patch(tok->patch, g.height, g.width);
  }

  log("{} {} image(s){} -> {}x{}x{}{}", end - begin, src->kind(), src->labelled() ? " with labels" : "", g.height,
      g.width, g.channels, shard.count > 1 ? fmt::format(" (shard {}/{}: rows {}..{})", shard.index, shard.count,
                                                          begin, end - 1) : std::string());

  h5::Handle file = h5::create_file(out.temp_path());
  ImageTableWriter writer(file, g.height, g.width, g.channels, src->labelled());
  std::unique_ptr<h5::RowWriter> tokens;
  int64_t L = 0;
  if (tok) {
    L = (g.height / tok->patch) * (g.width / tok->patch);
    tokens = std::make_unique<h5::RowWriter>(file, "tokens", H5T_NATIVE_FLOAT,
                                             std::vector<hsize_t>{static_cast<hsize_t>(L), static_cast<hsize_t>(tok->dim)},
                                             h5::chunk_rows_for(L * tok->dim * 4, 256 << 10), 0);
  }

  std::vector<std::string> skipped;
  std::vector<Item> items, next;
  std::vector<uint8_t> px;
  std::vector<int64_t> lb;
  auto read_block = [&](int64_t start, std::vector<Item>& into) {
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
    if (tokens && good > 0) {
      at::Tensor images = at::from_blob(px.data(), {good, g.height, g.width, g.channels}, at::kByte);
      at::Tensor z = tok->encode(patchify(to_unit_range(images), tok->patch)).contiguous();
      tokens->append(z.data_ptr<float>(), good);
    }
    if (following < end) {
      if (ahead.valid()) ahead.get();
      else read_block(following, next);
    }
    std::swap(items, next);
    progress.advance(count);
  }
  progress.finish();
  if (writer.rows() == 0) throw Error("no images were written (all inputs were skipped or empty)");

  std::vector<std::string> names = opt.label_names.empty() ? src->label_names() : opt.label_names;
  if (src->labelled() && !names.empty()) h5::write_strings(file, "label_names", names);
  h5::write_attr(file, "source", std::string(src->kind()));
  h5::write_attr(file, "skipped", static_cast<int64_t>(skipped.size()));
  if (!skipped.empty()) h5::write_strings(file, "skipped_files", skipped);
  if (tok) h5::write_attr(file, "tokenizer", opt.tokenizer);
  h5::write_provenance(file, prov);
  h5::close_output(file, opt.output);
  out.commit();
  if (!skipped.empty()) warn("{} undecodable file(s) skipped", skipped.size());
  log("wrote {} images to {}{}", writer.rows(), opt.output, writer.compressed() ? " (deflated)" : "");
}

}  // namespace mdx
