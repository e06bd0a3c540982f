// Token spaces: how images become the tokens a model sees, and back. One interface for every
// space — pixel patches (the default), l-DAE's patch-wise PCA, and the learned tokenizers to come —
// so that the model's geometry, the corruptions, the previews and the samplers never patchify
// images themselves.
//
// A tokenizer is saved into an HDF5 group (a tokenizer file's root, or a checkpoint's
// `tokenizer/` group) with a `kind` attribute that chooses its loader. Its identity is the kind
// and the SHA-256 of what it saves, so two files with the same contents are the same tokenizer
// wherever they were moved.
//
// Adding a tokenizer: a class implementing Tokenizer in lib/mdx/tokenize/, and one line in
// tokenizer_registry() (tokenizer.cpp) naming its kind and its loader.
#pragma once
#include <hdf5.h>
#include <torch/types.h>

#include <functional>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "mdx/tokenize/geometry.h"

namespace mdx {

class Tokenizer {
 public:
  virtual ~Tokenizer() = default;

  virtual std::string kind() const = 0;
  // One line for logs: kind and sizes.
  virtual std::string describe() const = 0;
  // The geometry on images of height x width x channels; throws Error when they do not fit (a
  // patch that does not divide the size, another channel count).
  virtual TokenGeometry geometry(int64_t height, int64_t width, int64_t channels) const = 0;
  // uint8 images [B,H,W,C] -> float32 tokens [B,L,D] (int64 codes [B,L] when discrete).
  virtual at::Tensor encode(const at::Tensor& images) const = 0;
  // Tokens of `g` -> float32 images [B,H,W,C] on the [-1, 1] scale (not clamped).
  virtual at::Tensor decode(const at::Tensor& tokens, const TokenGeometry& g) const = 0;
  // Its datasets and attributes into `group`, the `kind` attribute among them.
  virtual void save(hid_t group) const = 0;
  // A VAE's posterior: whether there is one, and (mean, log-variance) of uint8 images as tokens
  // [B, L, D], scaled as encode() scales (encode() is the mean).
  virtual bool has_posterior() const { return false; }
  virtual std::pair<at::Tensor, at::Tensor> moments(const at::Tensor& images) const;

  // kind:SHA-256 of its contents as save() writes them (attributes and datasets in order).
  std::string identity() const;

 protected:
  // What identity() hashes: each implementation feeds its contents to `add`.
  virtual void hash_contents(const std::function<void(const void*, size_t)>& add) const = 0;
};

// Pixel patches: a p x p x C patch of pixels scaled to [-1, 1] is one token of p*p*C values (MAE's
// patchify order, see patches.h).
class PixelTokenizer : public Tokenizer {
 public:
  explicit PixelTokenizer(int64_t patch);
  int64_t patch() const { return patch_; }

  std::string kind() const override { return "pixels"; }
  std::string describe() const override;
  TokenGeometry geometry(int64_t height, int64_t width, int64_t channels) const override;
  at::Tensor encode(const at::Tensor& images) const override;
  at::Tensor decode(const at::Tensor& tokens, const TokenGeometry& g) const override;
  void save(hid_t group) const override;
  static std::shared_ptr<const Tokenizer> load(hid_t group, const std::string& where);
  // encode() in another floating type (PCA fits in float64).
  at::Tensor encode_as(const at::Tensor& images, at::ScalarType type) const;

 protected:
  void hash_contents(const std::function<void(const void*, size_t)>& add) const override;

 private:
  int64_t patch_;
};

// The tokenizer saved in `group` (a file's root or a checkpoint's group), chosen by its `kind`
// attribute; `where` names it in errors. A PCA file written before tokenizers had kinds is read
// as kind `pca`.
std::shared_ptr<const Tokenizer> load_tokenizer(hid_t group, const std::string& where);
// The tokenizer file at `path`: an HDF5 file (its root group, or a checkpoint's `tokenizer/`), or a
// TorchScript module (a ZIP archive, torch.jit.save's format; see TorchScriptTokenizer).
std::shared_ptr<const Tokenizer> load_tokenizer_file(const std::string& path);
// Saves `tok` into a new group `name` of `file`.
void save_tokenizer(hid_t file, const std::string& name, const Tokenizer& tok);
// The registered kinds, for messages ("pixels, pca").
std::string tokenizer_kinds();

}  // namespace mdx
