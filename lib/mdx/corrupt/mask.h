// Which tokens are hidden, and how many. Every masked objective draws its masks here.
//
//   MAE (He et al. 2021): per sample, argsort of uniform noise; keep int(L (1 - ratio)) tokens.
//   UMD (Hansen-Estruch et al. 2024): the batch is split; a share r (0.5) takes the representation
//       step (75 % masked, no noise), the rest the noisy step (37.5 % masked).
//   MAGE (Li et al. 2022), the mask-ratio policy only (--mask-policy mage, over any masked
//       objective; not the MAGE objective on VQ codes): one ratio per batch from a normal (mu 0.55, sigma 0.25) truncated to
//       [0.5, 1.0]; ceil(L ratio) tokens masked, of which ceil(L 0.5) are dropped from the encoder
//       (the rest reach it as the mask token).
//   LMD (Ma et al. 2023): the ratio grows over the N training steps, easy to hard:
//       cosine     r(i) = 0.15 + 0.60 (1 - f(i)/f(0)) for i <= S = 2N/3, then 0.75,
//                  f(i) = cos^2(((i/S) + 0.008)/1.008 * pi/2)
//       piecewise  0.15 -> 0.40 over the first sixth, hold, 0.40 -> 0.75 over the second third, hold
//       linear     0.15 -> 0.75 over the N steps
#pragma once
#include <torch/types.h>

#include <string>

namespace mdx {

struct MaskDraw {
  at::Tensor masked;   // bool [B, L]: the decoder predicts these
  at::Tensor dropped;  // bool [B, L], a subset of masked: removed from the encoder's input
  int64_t num_masked = 0, num_dropped = 0;
};

// Masks `num_masked` tokens per row, the `num_dropped` of them (<= num_masked) with the lowest noise
// also dropped; the order of the uniform noise decides, as in MAE and MAGE.
MaskDraw random_mask(int64_t rows, int64_t tokens, int64_t num_masked, int64_t num_dropped, at::Generator& gen);
// MAE's count: L - int(L (1 - ratio)) tokens masked, all of them dropped.
MaskDraw mae_mask(int64_t rows, int64_t tokens, double ratio, at::Generator& gen);
// MAGE's counts: ceil(L ratio) masked, ceil(L min_ratio) dropped.
MaskDraw mage_mask(int64_t rows, int64_t tokens, double ratio, at::Generator& gen, double min_ratio = 0.5);

// UMD's split: the number of rows of a batch of B that take the representation step, int(B r).
int64_t umd_representation_rows(int64_t batch, double share);

enum class MaskPolicy { Fixed, Mage, LmdCosine, LmdPiecewise, LmdLinear };
MaskPolicy parse_mask_policy(const std::string& name);  // throws UsageError
std::string mask_policy_name(MaskPolicy policy);

double lmd_cosine_ratio(int64_t step, int64_t total);
double lmd_piecewise_ratio(int64_t step, int64_t total);
double lmd_linear_ratio(int64_t step, int64_t total);
// One draw of MAGE's truncated normal (mu 0.55, sigma 0.25, [0.5, 1.0]).
double mage_ratio(at::Generator& gen);

// The mask ratio of one batch at training step `step` of `total` under `policy`; `fixed` is the
// ratio of the Fixed policy.
double mask_ratio(MaskPolicy policy, double fixed, int64_t step, int64_t total, at::Generator& gen);

}  // namespace mdx
