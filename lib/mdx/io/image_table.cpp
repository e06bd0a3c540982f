#include "mdx/io/image_table.h"

#include <fmt/format.h>

#include <zlib.h>

#include <algorithm>

#include "mdx/util/error.h"

namespace mdx {

namespace {
std::string shape_text(const std::vector<hsize_t>& dims) {
  std::string s = "[";
  for (size_t i = 0; i < dims.size(); ++i) s += (i ? "," : "") + std::to_string(dims[i]);
  return s + "]";
}
std::string type_text(const h5::DatasetInfo& i) {
  if (i.type_class == H5T_INTEGER) return (i.is_signed ? "int" : "uint") + std::to_string(8 * i.type_size);
  if (i.type_class == H5T_FLOAT) return "float" + std::to_string(8 * i.type_size);
  if (i.type_class == H5T_STRING) return "string";
  return "non-numeric";
}
}  // namespace

ImageTable::ImageTable(const std::vector<std::string>& paths) : paths_(paths) {
  if (paths.empty()) throw UsageError("no input table given");
  for (const auto& path : paths) {
    Part p;
    p.path = path;
    p.file = h5::open_file(path);
    p.images = h5::open_dataset(p.file, "images", path);
    h5::DatasetInfo in = h5::info(p.images);
    if (in.dims.size() != 4 || in.type_class != H5T_INTEGER || in.type_size != 1 || in.is_signed)
      throw Error(fmt::format("'{}': dataset 'images' is {} {}, expected uint8 [N,H,W,C]", path, type_text(in),
                              shape_text(in.dims)));
    auto h = static_cast<int64_t>(in.dims[1]), w = static_cast<int64_t>(in.dims[2]),
         c = static_cast<int64_t>(in.dims[3]);
    // Gray or RGB only: 2 (gray + alpha) and 4 (RGBA) channels would be read as if they were
    // colour, and every later stage (grids, FID's extractor) expects 1 or 3.
    if (c != 1 && c != 3)
      throw Error(fmt::format("'{}': images have {} channels; tables are gray (1) or RGB (3), alpha dropped "
                              "(mdx-tokenize does that for image files)", path, c));
    if (h < 1 || w < 1) throw Error(fmt::format("'{}': images are {}x{}, expected at least 1x1", path, h, w));
    if (parts_.empty()) {
      h_ = h, w_ = w, c_ = c;
    } else if (h != h_ || w != w_ || c != c_) {
      throw Error(fmt::format("'{}': images are {}x{}x{}, but '{}' has {}x{}x{}; tables read together must agree",
                              path, h, w, c, paths[0], h_, w_, c_));
    }
    p.rows = static_cast<int64_t>(in.dims[0]);
    bool labelled = h5::has(p.file, "labels");
    if (labelled) {
      p.labels = h5::open_dataset(p.file, "labels", path);
      h5::DatasetInfo li = h5::info(p.labels);
      if (li.dims.size() != 1 || li.type_class != H5T_INTEGER)
        throw Error(fmt::format("'{}': dataset 'labels' is {} {}, expected integers [N]", path, type_text(li),
                                shape_text(li.dims)));
      if (static_cast<int64_t>(li.dims[0]) != p.rows)
        throw Error(fmt::format("'{}': {} labels for {} images", path, li.dims[0], p.rows));
    }
    if (parts_.empty()) {
      has_labels_ = labelled;
      if (labelled && h5::has(p.file, "label_names")) label_names_ = h5::read_strings(p.file, "label_names", path);
    } else if (labelled != has_labels_) {
      throw Error(fmt::format("'{}' {} labels but '{}' {}; tables read together must agree", path,
                              labelled ? "has" : "has no", paths[0], has_labels_ ? "has" : "has none"));
    }
    for (auto& l : h5::read_history(p.file))
      if (std::find(history_.begin(), history_.end(), l) == history_.end()) history_.push_back(l);
    p.offset = size_;
    size_ += p.rows;
    parts_.push_back(std::move(p));
  }
  open_posterior();
  open_codes();
}

void ImageTable::open_posterior() {
  std::string identity;
  int64_t L = 0, D = 0;
  for (auto& p : parts_) {
    if (!h5::has(p.file, "latent_mean") || !h5::has(p.file, "latent_logvar") ||
        !h5::has_attr(p.file, "tokens_identity"))
      return;
    const std::string id = h5::read_attr_string(p.file, "tokens_identity");
    if (!identity.empty() && id != identity) return;  // latents of two tokenizers: not one posterior
    identity = id;
    p.mean = h5::open_dataset(p.file, "latent_mean", p.path);
    p.logvar = h5::open_dataset(p.file, "latent_logvar", p.path);
    for (hid_t ds : {p.mean.get(), p.logvar.get()}) {
      h5::DatasetInfo i = h5::info(ds);
      if (i.dims.size() != 3 || i.type_class != H5T_FLOAT || static_cast<int64_t>(i.dims[0]) != p.rows)
        throw Error(fmt::format("'{}': its latents are {} {}, expected float [{}, L, D]", p.path, type_text(i),
                                shape_text(i.dims), p.rows));
      const auto l = static_cast<int64_t>(i.dims[1]), d = static_cast<int64_t>(i.dims[2]);
      if ((L > 0 && (l != L || d != D)) || l < 1 || d < 1)
        throw Error(fmt::format("'{}': latents of [{}, {}] per image, where [{}, {}] were read before", p.path, l, d,
                                L, D));
      L = l, D = d;
    }
  }
  posterior_identity_ = identity;
  latent_l_ = L, latent_d_ = D;
}

void ImageTable::open_codes() {
  std::string identity;
  int64_t L = 0;
  for (auto& p : parts_) {
    if (!h5::has(p.file, "codes") || !h5::has_attr(p.file, "tokens_identity")) return;
    const std::string id = h5::read_attr_string(p.file, "tokens_identity");
    if (!identity.empty() && id != identity) return;  // codes of two tokenizers: not one vocabulary
    identity = id;
    p.codes = h5::open_dataset(p.file, "codes", p.path);
    h5::DatasetInfo i = h5::info(p.codes);
    if (i.dims.size() != 2 || i.type_class != H5T_INTEGER || static_cast<int64_t>(i.dims[0]) != p.rows)
      throw Error(fmt::format("'{}': its codes are {} {}, expected integer [{}, L]", p.path, type_text(i),
                              shape_text(i.dims), p.rows));
    const auto l = static_cast<int64_t>(i.dims[1]);
    if ((L > 0 && l != L) || l < 1)
      throw Error(fmt::format("'{}': {} codes per image, where {} were read before", p.path, l, L));
    L = l;
  }
  codes_identity_ = identity;
  code_l_ = L;
}

void ImageTable::read_codes(int64_t start, int64_t count, int64_t* codes) const {
  if (codes_identity_.empty()) throw Error("the table holds no pre-extracted codes");
  if (start < 0 || count < 0 || start + count > size_)
    throw Error(fmt::format("rows [{}, {}) are outside the table of {} images", start, start + count, size_));
  for (const auto& p : parts_) {
    int64_t lo = std::max(start, p.offset), hi = std::min(start + count, p.offset + p.rows);
    if (lo >= hi) continue;
    h5::read_rows(p.codes, lo - p.offset, hi - lo, H5T_NATIVE_INT64, codes + (lo - start) * code_l_,
                  "'codes' in '" + p.path + "'");
  }
}

void ImageTable::read_posterior(int64_t start, int64_t count, float* mean, float* logvar) const {
  if (posterior_identity_.empty()) throw Error("the table holds no pre-extracted latents");
  if (start < 0 || count < 0 || start + count > size_)
    throw Error(fmt::format("rows [{}, {}) are outside the table of {} images", start, start + count, size_));
  const int64_t row = latent_l_ * latent_d_;
  for (const auto& p : parts_) {
    int64_t lo = std::max(start, p.offset), hi = std::min(start + count, p.offset + p.rows);
    if (lo >= hi) continue;
    h5::read_rows(p.mean, lo - p.offset, hi - lo, H5T_NATIVE_FLOAT, mean + (lo - start) * row,
                  "'latent_mean' in '" + p.path + "'");
    h5::read_rows(p.logvar, lo - p.offset, hi - lo, H5T_NATIVE_FLOAT, logvar + (lo - start) * row,
                  "'latent_logvar' in '" + p.path + "'");
  }
}

void ImageTable::read(int64_t start, int64_t count, uint8_t* images, int64_t* labels) const {
  if (start < 0 || count < 0 || start + count > size_)
    throw Error(fmt::format("rows [{}, {}) are outside the table of {} images", start, start + count, size_));
  for (const auto& p : parts_) {
    int64_t lo = std::max(start, p.offset), hi = std::min(start + count, p.offset + p.rows);
    if (lo >= hi) continue;
    if (images)
      h5::read_rows(p.images, lo - p.offset, hi - lo, H5T_NATIVE_UINT8, images + (lo - start) * image_bytes(),
                    "'images' in '" + p.path + "'");
    if (labels) {
      int64_t* got = labels + (lo - start);
      h5::read_rows(p.labels, lo - p.offset, hi - lo, H5T_NATIVE_INT64, got, "'labels' in '" + p.path + "'");
      for (int64_t i = 0; i < hi - lo; ++i)
        if (got[i] < 0 || got[i] >= kMaxLabel)
          throw Error(fmt::format("'{}': row {} has a label of {}; labels are class indices 0..{}", p.path,
                                  lo - p.offset + i, got[i], kMaxLabel - 1));
    }
  }
}

bool deflate_pays(const uint8_t* bytes, size_t size, double ratio) {
  size = std::min<size_t>(size, 1 << 20);
  if (size == 0) return false;
  uLongf packed = compressBound(size);
  std::vector<Bytef> buf(packed);
  if (compress2(buf.data(), &packed, bytes, size, 1) != Z_OK) return false;
  return static_cast<double>(packed) < ratio * static_cast<double>(size);
}

ImageTableWriter::ImageTableWriter(hid_t file, int64_t height, int64_t width, int64_t channels, bool labels)
    : file_(file),
      row_dims_{static_cast<hsize_t>(height), static_cast<hsize_t>(width), static_cast<hsize_t>(channels)} {
  if (labels) labels_ = std::make_unique<h5::RowWriter>(file, "labels", H5T_NATIVE_INT64, std::vector<hsize_t>{},
                                                        1 << 15, 1);
}

void ImageTableWriter::finish() {
  if (!images_)
    images_ = std::make_unique<h5::RowWriter>(file_, "images", H5T_NATIVE_UINT8, row_dims_,
                                              h5::chunk_rows_for(row_dims_[0] * row_dims_[1] * row_dims_[2], 256 << 10),
                                              0);
}

void ImageTableWriter::append(const uint8_t* images, const int64_t* labels, int64_t count) {
  if (count == 0) return;
  if (!images_) {  // the first block decides the compression
    const hsize_t row = row_dims_[0] * row_dims_[1] * row_dims_[2];
    deflate_ = deflate_pays(images, static_cast<size_t>(row * count)) ? 1 : 0;
    images_ = std::make_unique<h5::RowWriter>(file_, "images", H5T_NATIVE_UINT8, row_dims_,
                                              h5::chunk_rows_for(row, 256 << 10), deflate_);
  }
  images_->append(images, count);
  if (labels_) labels_->append(labels, count);
}

}  // namespace mdx
