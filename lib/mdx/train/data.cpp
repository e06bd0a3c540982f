#include "mdx/train/data.h"

#include <fmt/format.h>
#include <torch/torch.h>

#include "mdx/io/hdf5.h"
#include "mdx/util/error.h"
#include "mdx/util/log.h"
#include "mdx/util/progress.h"
#include "mdx/util/torch_compat.h"

namespace mdx {

namespace {
// A table's pre-extracted tokens are read whole: they must fit the budget.
void check_budget(double bytes, int64_t budget_bytes, const char* what) {
  if (bytes > static_cast<double>(budget_bytes))
    throw Error(fmt::format("the table's pre-extracted {} ({:.1f} GiB) exceed --memory-budget and are read whole; "
                            "raise it, or train from the images",
                            what, bytes / double(1 << 30)));
}

// Rows [0, n) in chunks of 8192, each read(start, count) under the HDF5 lock, with progress.
template <class Read>
void read_whole(const char* what, int64_t n, Read read) {
  Progress progress(what, n, "images");
  const int64_t chunk = 8192;
  for (int64_t s = 0; s < n; s += chunk) {
    int64_t c = std::min(chunk, n - s);
    h5::LockGuard lock;
    read(s, c);
    progress.advance(c);
  }
  progress.finish();
}

at::Generator generator(uint64_t seed, int64_t epoch, int64_t salt) {
  return compat::cpu_generator(seed * 1000003ULL + static_cast<uint64_t>(epoch) * 7919ULL + static_cast<uint64_t>(salt) + 1);
}
}  // namespace

TrainingData::TrainingData(const ImageTable& table, int64_t batch, uint64_t seed, int64_t budget_bytes, bool latents,
                           int64_t vocabulary)
    : table_(table), batch_(batch), spe_(std::max<int64_t>(1, table.size() / batch)), seed_(seed) {
  const int64_t n = table.size(), bytes = table.image_bytes();
  if (n == 0) throw Error(fmt::format("the training table ('{}') holds no images", fmt::join(table.paths(), "', '")));
  labels_ = at::full({n}, -1, at::kLong);
  if (table.has_labels()) {
    h5::LockGuard lock;
    for (int64_t s = 0; s < n; s += 1 << 20) {
      int64_t c = std::min<int64_t>(1 << 20, n - s);
      table.read_labels(s, c, labels_.data_ptr<int64_t>() + s);
    }
    const int64_t top = labels_.max().item<int64_t>();  // in 0 .. kMaxLabel - 1: ImageTable checks
    num_classes_ = std::max<int64_t>(top + 1, static_cast<int64_t>(table.label_names().size()));
  }
  if (latents && table.posterior_identity().empty()) {
    const int64_t L = table.code_tokens();
    check_budget(double(n) * L * 8, budget_bytes, "codes");
    codes_ = at::empty({n, L}, at::kLong);
    read_whole("loading codes", n,
               [&](int64_t s, int64_t c) { table.read_codes(s, c, codes_.data_ptr<int64_t>() + s * L); });
    // Ids of the tokenizer's codebook only: a stray one would index past the model's code table.
    at::Tensor bad = ((codes_ < 0) | (codes_ >= vocabulary)).flatten().nonzero();
    if (bad.size(0) > 0) {
      const int64_t i = bad[0][0].item<int64_t>();
      throw Error(fmt::format("the table's pre-extracted codes hold {} (image {}), outside the tokenizer's 0..{}",
                              codes_.flatten()[i].item<int64_t>(), i / L, vocabulary - 1));
    }
    return;
  }
  if (latents) {
    const int64_t L = table.latent_tokens(), D = table.latent_values();
    check_budget(2.0 * n * L * D * 4, budget_bytes, "latents");
    mean_ = at::empty({n, L, D}, at::kFloat);
    logvar_ = at::empty({n, L, D}, at::kFloat);
    read_whole("loading latents", n, [&](int64_t s, int64_t c) {
      table.read_posterior(s, c, mean_.data_ptr<float>() + s * L * D, logvar_.data_ptr<float>() + s * L * D);
    });
    if (!at::isfinite(mean_).all().item<bool>() || !at::isfinite(logvar_).all().item<bool>())
      throw Error(fmt::format("the pre-extracted latents of '{}' hold NaN or infinite values",
                              fmt::join(table.paths(), "', '")));
    return;
  }
  streamed_ = n * bytes > budget_bytes;
  if (!streamed_) {
    images_ = at::empty({n, table.height(), table.width(), table.channels()}, at::kByte);
    Progress progress("loading", n, "images");
    const int64_t chunk = 8192;
    for (int64_t s = 0; s < n; s += chunk) {
      int64_t c = std::min(chunk, n - s);
      h5::LockGuard lock;
      table.read(s, c, images_.data_ptr<uint8_t>() + s * bytes, nullptr);
      progress.advance(c);
    }
    progress.finish();
    return;
  }
  // Two windows (the one served, the one read ahead) fit the budget; blocks of ~4 MiB.
  block_rows_ = std::max<int64_t>(1, (4 << 20) / bytes);
  window_blocks_ = std::max<int64_t>(1, budget_bytes / 2 / (block_rows_ * bytes));
  log("streaming {} images ({:.1f} GiB > --memory-budget): windows of {} blocks of {} rows, shuffled", n,
      n * bytes / double(1 << 30), window_blocks_, block_rows_);
}

TrainingData::~TrainingData() {
  if (next_.valid()) next_.wait();
}

std::vector<int64_t> TrainingData::block_order(int64_t epoch) const {
  const int64_t blocks = (table_.size() + block_rows_ - 1) / block_rows_;
  at::Generator g = generator(seed_, epoch, 0);
  at::Tensor p = at::randperm(blocks, g, at::TensorOptions().dtype(at::kLong));
  return std::vector<int64_t>(p.data_ptr<int64_t>(), p.data_ptr<int64_t>() + blocks);
}

std::vector<int64_t> TrainingData::window_starts(int64_t epoch) const {
  std::vector<int64_t> order = block_order(epoch), starts{0};
  int64_t off = 0;
  for (size_t b = 0; b < order.size(); ++b) {
    off += std::min(block_rows_, table_.size() - order[b] * block_rows_);
    if ((b + 1) % window_blocks_ == 0 || b + 1 == order.size()) starts.push_back(off);
  }
  return starts;
}

TrainingData::Window TrainingData::load_window(int64_t epoch, int64_t index) const {
  std::vector<int64_t> order = block_order(epoch);
  const int64_t first = index * window_blocks_, last = std::min<int64_t>(first + window_blocks_, order.size());
  std::vector<at::Tensor> parts, part_labels;
  for (int64_t b = first; b < last; ++b) {
    const int64_t begin = order[b] * block_rows_, count = std::min(block_rows_, table_.size() - begin);
    at::Tensor block = at::empty({count, table_.height(), table_.width(), table_.channels()}, at::kByte);
    {
      h5::LockGuard lock;  // the HDF5 library is shared with the training thread's checkpoints
      table_.read(begin, count, block.data_ptr<uint8_t>(), nullptr);
    }
    parts.push_back(block);
    part_labels.push_back(labels_.slice(0, begin, begin + count));
  }
  Window w;
  w.epoch = epoch;
  w.index = index;
  at::Tensor images = at::cat(parts), labels = at::cat(part_labels);
  at::Generator g = generator(seed_, epoch, index + 1);
  at::Tensor p = at::randperm(images.size(0), g, at::TensorOptions().dtype(at::kLong));
  w.images = images.index_select(0, p);
  w.labels = labels.index_select(0, p);
  return w;
}

const TrainingData::Window& TrainingData::window(int64_t epoch, int64_t index) {
  if (current_.epoch != epoch || current_.index != index) {
    if (next_.valid() && next_epoch_ == epoch && next_index_ == index) {
      current_ = next_.get();
    } else {
      if (next_.valid()) next_.wait();
      current_ = load_window(epoch, index);
    }
    // Read the following window meanwhile.
    const int64_t windows = static_cast<int64_t>(window_starts(epoch).size()) - 1;
    next_epoch_ = index + 1 < windows ? epoch : epoch + 1;
    next_index_ = index + 1 < windows ? index + 1 : 0;
    next_ = std::async(std::launch::async, [this, e = next_epoch_, i = next_index_] { return load_window(e, i); });
  }
  return current_;
}

void TrainingData::rows(int64_t epoch, int64_t begin, int64_t count, at::Tensor& images, at::Tensor& labels) {
  std::vector<int64_t> starts = window_starts(epoch);
  std::vector<at::Tensor> im, lb;
  while (count > 0) {
    auto it = std::upper_bound(starts.begin(), starts.end(), begin);
    const int64_t index = static_cast<int64_t>(it - starts.begin()) - 1;
    const Window& w = window(epoch, index);
    const int64_t off = begin - starts[index], take = std::min(count, w.images.size(0) - off);
    im.push_back(w.images.slice(0, off, off + take));
    lb.push_back(w.labels.slice(0, off, off + take));
    begin += take;
    count -= take;
  }
  images = im.size() == 1 ? im[0] : at::cat(im);
  labels = lb.size() == 1 ? lb[0] : at::cat(lb);
}

void TrainingData::batch(int64_t step, at::Tensor& images, at::Tensor& labels, at::Tensor* mean,
                         at::Tensor* logvar, at::Tensor* codes) {
  const int64_t epoch = step / spe_, pos = step % spe_, n = table_.size();
  if (streamed_) {
    if (batch_ > n) throw Error(fmt::format("--batch {} exceeds the {} images of the table", batch_, n));
    return rows(epoch, pos * batch_, batch_, images, labels);
  }
  if (epoch != perm_epoch_) {
    at::Generator g = generator(seed_, epoch, 0);
    perm_ = at::randperm(n, g, at::TensorOptions().dtype(at::kLong));
    perm_epoch_ = epoch;
  }
  at::Tensor idx = batch_ <= n ? perm_.slice(0, pos * batch_, pos * batch_ + batch_)
                               : perm_.repeat({(batch_ + n - 1) / n}).slice(0, 0, batch_);
  labels = labels_.index_select(0, idx);
  if (mean_.defined()) {
    if (!mean || !logvar) throw std::logic_error("TrainingData: a latent table's batches are latents");
    *mean = mean_.index_select(0, idx);
    *logvar = logvar_.index_select(0, idx);
    images = at::Tensor();
    return;
  }
  if (codes_.defined()) {
    if (!codes) throw std::logic_error("TrainingData: a code table's batches are codes");
    *codes = codes_.index_select(0, idx);
    images = at::Tensor();
    return;
  }
  images = images_.index_select(0, idx);
}

void TrainingData::head(int64_t n, at::Tensor& images, at::Tensor& labels) {
  n = std::min(n, table_.size());
  labels = labels_.slice(0, 0, n);
  if (images_.defined()) {
    images = images_.slice(0, 0, n);
    return;
  }
  images = at::empty({n, table_.height(), table_.width(), table_.channels()}, at::kByte);
  h5::LockGuard lock;
  table_.read(0, n, images.data_ptr<uint8_t>(), nullptr);
}

}  // namespace mdx
