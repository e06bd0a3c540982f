// The batches of a training run. A table that fits the memory budget is loaded whole and each
// epoch is a permutation of its rows. A larger one is streamed: each epoch visits blocks of
// consecutive rows (cheap HDF5 reads) in a random order, shuffles the rows of a window of blocks
// together, and serves batches from it while a thread reads the next window. Either way the batch
// of step s depends only on (seed, s), so a resumed run sees the same batches.
#pragma once
#include <torch/types.h>

#include <future>
#include <memory>

#include "mdx/io/image_table.h"

namespace mdx {

class TrainingData {
 public:
  // With `latents`, the batches are the table's pre-extracted posterior (latent_mean,
  // latent_logvar), or its pre-extracted VQ codes (ids 0 .. vocabulary - 1, else an error), instead
  // of its images, held in memory whole.
  TrainingData(const ImageTable& table, int64_t batch, uint64_t seed, int64_t budget_bytes, bool latents = false,
               int64_t vocabulary = 0);
  ~TrainingData();

  bool streamed() const { return streamed_; }
  int64_t steps_per_epoch() const { return spe_; }
  int64_t num_classes() const { return num_classes_; }  // 0 without labels
  // Images uint8 [B,H,W,C] and labels int64 [B] (-1 without labels) of step `step`; reading
  // latents, their mean and log-variance [B,L,D] (or the codes int64 [B,L]) instead of the images
  // (left undefined).
  void batch(int64_t step, at::Tensor& images, at::Tensor& labels, at::Tensor* mean = nullptr,
             at::Tensor* logvar = nullptr, at::Tensor* codes = nullptr);
  // The first n rows of the table (previews).
  void head(int64_t n, at::Tensor& images, at::Tensor& labels);

 private:
  struct Window {
    int64_t epoch = -1, index = -1;
    at::Tensor images, labels;
  };
  std::vector<int64_t> block_order(int64_t epoch) const;
  std::vector<int64_t> window_starts(int64_t epoch) const;  // epoch offsets of the windows, plus the end
  Window load_window(int64_t epoch, int64_t index) const;
  const Window& window(int64_t epoch, int64_t index);
  void rows(int64_t epoch, int64_t begin, int64_t count, at::Tensor& images, at::Tensor& labels);

  const ImageTable& table_;
  int64_t batch_, spe_;
  uint64_t seed_;
  bool streamed_ = false;
  at::Tensor images_, labels_, perm_;  // in memory: all images; always: all labels
  at::Tensor mean_, logvar_;           // reading latents: all of them
  at::Tensor codes_;                   // reading codes: all of them
  int64_t perm_epoch_ = -1, num_classes_ = 0;
  int64_t block_rows_ = 0, window_blocks_ = 0;
  Window current_;
  std::future<Window> next_;
  int64_t next_epoch_ = -1, next_index_ = -1;
};

}  // namespace mdx
