// l-DAE's patch-wise PCA tokenizer (Chen et al. 2024, "Deconstructing Denoising Diffusion Models
// for Self-Supervised Learning", sec. 4): a basis of p x p x C patches fitted by eigen-decomposition
// of their covariance, in float64. The latent of a patch x is V_d (x - mu); V_d holds the first
// d rows of the full basis V (rows sorted by decreasing variance).
#pragma once
#include <hdf5.h>
#include <torch/types.h>

#include <memory>
#include <string>

#include "mdx/tokenize/tokenizer.h"
#include "mdx/util/statistics.h"

namespace mdx {

class PcaTokenizer : public Tokenizer {
 public:
  int64_t patch = 0, channels = 0, dim = 0;
  at::Tensor mean;                // float64 [D]
  at::Tensor components;          // float64 [D, D], row k = k-th principal direction
  at::Tensor explained_variance;  // float64 [D], decreasing

  int64_t token_dim() const { return patch * patch * channels; }
  double explained_ratio(int64_t d) const;  // share of total variance in the first d components

  // Patches [..., D] -> latents [..., dim] float32: V_d (x - mu).
  at::Tensor to_latent(const at::Tensor& patches) const;
  // Latents [..., dim] -> patches [..., D] float32: V_d^T z + mu.
  at::Tensor from_latent(const at::Tensor& latents) const;

  // As a token space: one token per p x p x C patch, its dim-d latent.
  std::string kind() const override { return "pca"; }
  std::string describe() const override;
  TokenGeometry geometry(int64_t height, int64_t width, int64_t channels) const override;
  at::Tensor encode(const at::Tensor& images) const override;
  at::Tensor decode(const at::Tensor& tokens, const TokenGeometry& g) const override;
  void save(hid_t group) const override;  // datasets and attributes of SPEC "Files"
  // The one PCA loader: the datasets and attributes of `group`, checked; `where` names it in errors.
  static std::shared_ptr<const PcaTokenizer> load(hid_t group, const std::string& where);

 protected:
  void hash_contents(const std::function<void(const void*, size_t)>& add) const override;
};

// Eigen-decomposition of the accumulated covariance: components sorted by decreasing variance,
// each with its largest-magnitude entry positive (a deterministic sign). dim = 0 chooses the
// smallest d whose explained-variance ratio reaches `variance`.
PcaTokenizer fit_pca(const CovarianceAccumulator& acc, bool center, int64_t patch, int64_t channels, int64_t dim,
                     double variance);

}  // namespace mdx
