// The image table of SPEC "Files": `images` uint8 [N,H,W,C], optional `labels` int64 [N] and
// `label_names`. Several files read as one concatenated table; reads go by row ranges so memory
// stays flat however large the table.
#pragma once
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "mdx/io/hdf5.h"

namespace mdx {

// Labels are class indices 0 .. kMaxLabel - 1; a table with any other is refused when read (the
// label tables of class-conditional models have max + 1 rows: a stray huge label must be an error,
// not an allocation).
constexpr int64_t kMaxLabel = int64_t{1} << 20;

class ImageTable {
 public:
  explicit ImageTable(const std::vector<std::string>& paths);

  int64_t size() const { return size_; }
  int64_t height() const { return h_; }
  int64_t width() const { return w_; }
  int64_t channels() const { return c_; }
  int64_t image_bytes() const { return h_ * w_ * c_; }
  bool has_labels() const { return has_labels_; }
  const std::vector<std::string>& label_names() const { return label_names_; }
  const std::vector<std::string>& paths() const { return paths_; }
  // Union of the files' history lines, in file order.
  const std::vector<std::string>& history() const { return history_; }

  // Rows [start, start+count) of the concatenated table; `images` or `labels` may be null.
  void read(int64_t start, int64_t count, uint8_t* images, int64_t* labels) const;

  // Pre-extracted latents (mdx-tokenize --tokenizer): the identity of the tokenizer that made them
  // when every file holds a VAE posterior (latent_mean, latent_logvar) of one tokenizer, else "".
  const std::string& posterior_identity() const { return posterior_identity_; }
  int64_t latent_tokens() const { return latent_l_; }
  int64_t latent_values() const { return latent_d_; }
  // Rows [start, start+count) of latent_mean and latent_logvar, float32 [count, L, D] each.
  void read_posterior(int64_t start, int64_t count, float* mean, float* logvar) const;
  // Pre-extracted codes (mdx-tokenize --tokenizer of a VQ): the identity of the tokenizer that made
  // them when every file holds `codes` [N, L] of one tokenizer, else "".
  const std::string& codes_identity() const { return codes_identity_; }
  int64_t code_tokens() const { return code_l_; }
  // Rows [start, start+count) of `codes`, int64 [count, L].
  void read_codes(int64_t start, int64_t count, int64_t* codes) const;
  void read_labels(int64_t start, int64_t count, int64_t* labels) const { read(start, count, nullptr, labels); }

 private:
  struct Part {
    std::string path;
    h5::Handle file, images, labels, mean, logvar, codes;
    int64_t offset = 0, rows = 0;
  };
  void open_posterior();
  void open_codes();
  std::vector<Part> parts_;
  std::vector<std::string> paths_, label_names_, history_;
  std::string posterior_identity_, codes_identity_;
  int64_t size_ = 0, h_ = 0, w_ = 0, c_ = 0, latent_l_ = 0, latent_d_ = 0, code_l_ = 0;
  bool has_labels_ = false;
};

// Streams an image table into an open file: append blocks of images (and labels) as they come.
// `images` is deflated only where that pays: the first block is test-compressed, and a table that
// would not shrink below 80 % is stored plain (decoded photographs rarely do; digits and
// clothing on black backgrounds do, by half).
class ImageTableWriter {
 public:
  ImageTableWriter(hid_t file, int64_t height, int64_t width, int64_t channels, bool labels);
  void append(const uint8_t* images, const int64_t* labels, int64_t count);
  // Writes the `images` dataset even when no row was appended (an empty shard is still a table
  // that merges with the others).
  void finish();
  int64_t rows() const { return images_ ? static_cast<int64_t>(images_->rows()) : 0; }
  bool compressed() const { return deflate_ > 0; }

 private:
  hid_t file_;
  std::vector<hsize_t> row_dims_;
  int deflate_ = 0;
  std::unique_ptr<h5::RowWriter> images_, labels_;
};

// Whether deflate shrinks `bytes` below `ratio` of their size (tested on at most 1 MiB).
bool deflate_pays(const uint8_t* bytes, size_t size, double ratio = 0.8);

}  // namespace mdx
