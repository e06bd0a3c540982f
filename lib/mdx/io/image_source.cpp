#include "mdx/io/image_source.h"

#include <fmt/format.h>
#include <hdf5.h>

#include <algorithm>
#include <atomic>
#include <filesystem>
#include <future>
#include <map>
#include <thread>

#include "mdx/io/hdf5.h"
#include "mdx/io/idx.h"
#include "mdx/io/image_table.h"
#include "mdx/util/error.h"
#include "mdx/util/log.h"

namespace fs = std::filesystem;

namespace mdx {

namespace {

// Brings an image to the table's geometry; without --size a different size is an error.
Image conform(Image img, const ImageGeometry& g, bool resize, Fit fit, const std::string& name) {
  img = convert_channels(std::move(img), g.channels);
  if (img.height != g.height || img.width != g.width) {
    if (!resize)
      throw Error(fmt::format("'{}' is {}x{} but the table is {}x{} (the first image's size); give --size to resize",
                              name, img.height, img.width, g.height, g.width));
    img = fit_image(img, g.height, g.width, fit);
  }
  return img;
}

class IdxSource : public ImageSource {
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
  ImageGeometry probe(int channels) override { return {images_.dims()[1], images_.dims()[2], channels ? channels : 1}; }
  void read(int64_t start, int64_t count, const ImageGeometry& g, bool resize, Fit fit, std::vector<SourceItem>& out) override {
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

class TableSource : public ImageSource {
 public:
  explicit TableSource(const std::vector<std::string>& paths) : table_(paths) {}
  int64_t size() const override { return table_.size(); }
  bool labelled() const override { return table_.has_labels(); }
  std::vector<std::string> label_names() const override { return table_.label_names(); }
  std::vector<std::string> history() const override { return table_.history(); }
  const char* kind() const override { return "table"; }
  bool reads_beside_writer() const override { return false; }
  ImageGeometry probe(int channels) override {
    return {table_.height(), table_.width(), channels ? channels : table_.channels()};
  }
  void read(int64_t start, int64_t count, const ImageGeometry& g, bool resize, Fit fit, std::vector<SourceItem>& out) override {
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

class FileSource : public ImageSource {
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
          // A dangling link named like an image is listed, so that it fails (or counts under
          // --skip-bad) like any unreadable file instead of vanishing from the table.
          for (const auto& e : fs::recursive_directory_iterator(c))
            if ((e.is_regular_file() || e.is_symlink()) && is_image_file(e.path().string()))
              list.push_back(e.path().string());
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
    if (entries_.empty())
      throw Error(fmt::format("no image files found in '{}'", fmt::join(inputs, "', '")));
  }
  int64_t size() const override { return static_cast<int64_t>(entries_.size()); }
  bool labelled() const override { return labelled_; }
  std::vector<std::string> label_names() const override { return names_; }
  const char* kind() const override { return "files"; }
  ImageGeometry probe(int channels) override {
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
  void read(int64_t start, int64_t count, const ImageGeometry& g, bool resize, Fit fit, std::vector<SourceItem>& out) override {
    out.assign(count, SourceItem{});
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

}  // namespace

bool is_hdf5(const std::string& path) { return fs::is_regular_file(path) && H5Fis_hdf5(path.c_str()) > 0; }

std::unique_ptr<ImageSource> open_image_source(const std::vector<std::string>& inputs, const std::string& labels,
                                               int jobs, bool skip_bad) {
  int tables = 0, images = 0, dirs = 0, other = 0;
  for (const auto& in : inputs) {
    if (!fs::exists(in)) throw Error("cannot open '" + in + "': no such file or directory");
    if (fs::is_directory(in)) ++dirs;
    else if (is_hdf5(in)) ++tables;
    else if (is_image_file(in)) ++images;
    else ++other;
  }
  if (!labels.empty() && other == 0)
    throw UsageError("--labels goes with an IDX images file");
  if (other > 0) {
    if (inputs.size() != 1)
      throw UsageError("an IDX images file is read alone (with --labels); merge tables afterwards by listing them");
    return std::make_unique<IdxSource>(inputs[0], labels);
  }
  if (tables > 0) {
    if (tables != static_cast<int>(inputs.size())) throw UsageError("give either HDF5 tables or images, not both");
    return std::make_unique<TableSource>(inputs);
  }
  auto files = std::make_unique<FileSource>(inputs, jobs);
  files->allow_bad(skip_bad);
  return files;
}

}  // namespace mdx
