// The objectives' targets and loss weights (SPEC "Algorithms"), over the model's two heads:
//   umd   (1 - r) * 1/2 [eps-MSE on visible tokens + x0-MSE on masked tokens] of the noisy rows
//         + r * [x0-MSE on masked tokens] of the representation rows; a noisy step without a mask
//         takes the plain mean of its eps- and x0-MSE over all tokens
//   mae   x0-MSE on masked tokens; optionally of the normalized-pixel target (x - mean)/sqrt(var + 1e-6)
//   ldae  lambda_t sum_i w_i r_i^2, r = V (x0 - x0_hat) in the full PCA basis, w_i = 1 for the first d
//         components and 0.1 for the rest (l-DAE)
//   dit   eps-MSE on every token
// MSE is the mean over a token's D values, averaged over the selected tokens of the whole batch:
// with data parallelism each process scores its rows [begin, end) of the global batch but divides by
// the global counts, so the processes' losses (and gradients) sum to those of the whole batch.
#pragma once
#include <torch/types.h>

#include <string>
#include <utility>
#include <vector>

#include "mdx/corrupt/objective.h"
#include "mdx/model/autoencoder.h"

namespace mdx {

struct PcaTokenizer;

struct LossOptions {
  bool norm_pix = false;           // MAE's normalized-pixel target
  double ldae_rest_weight = 0.1;   // l-DAE's weight of the components beyond d
};

struct Loss {
  at::Tensor total;                                        // scalar, for backward
  std::vector<std::pair<std::string, at::Tensor>> terms;   // named parts, for the log
};

// The rows of the global batch this process holds; end = -1: all of them.
struct RowRange {
  int64_t begin = 0, end = -1;
};

// `batch` is the corruption of the whole batch; x0 and out hold the rows of `rows`.
Loss objective_loss(const ObjectiveConfig& cfg, const Corrupted& batch, const at::Tensor& x0, const ModelOutput& out,
                    const NoiseSchedule& schedule, const PcaTokenizer* pca, const LossOptions& options,
                    RowRange rows = {});

}  // namespace mdx
