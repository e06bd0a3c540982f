#include "mdx/corrupt/mask.h"

#include <torch/torch.h>

#include <cmath>

#include "mdx/util/error.h"

namespace mdx {

MaskDraw random_mask(int64_t rows, int64_t tokens, int64_t num_masked, int64_t num_dropped, at::Generator& gen) {
  if (num_masked < 0 || num_masked > tokens || num_dropped < 0 || num_dropped > num_masked)
    throw Error("invalid mask counts: " + std::to_string(num_masked) + " masked, " + std::to_string(num_dropped) +
                " dropped of " + std::to_string(tokens));
  at::Tensor noise = at::rand({rows, tokens}, gen, at::TensorOptions().dtype(at::kFloat));
  at::Tensor rank = noise.argsort(int64_t{1}).argsort(int64_t{1});  // rank of each token's noise within its row
  MaskDraw d;
  d.masked = rank < num_masked;
  d.dropped = rank < num_dropped;
  d.num_masked = num_masked;
  d.num_dropped = num_dropped;
  return d;
}

MaskDraw mae_mask(int64_t rows, int64_t tokens, double ratio, at::Generator& gen) {
  int64_t keep = static_cast<int64_t>(tokens * (1.0 - ratio));
  return random_mask(rows, tokens, tokens - keep, tokens - keep, gen);
}

MaskDraw mage_mask(int64_t rows, int64_t tokens, double ratio, at::Generator& gen, double min_ratio) {
  int64_t masked = static_cast<int64_t>(std::ceil(tokens * ratio));
  int64_t dropped = static_cast<int64_t>(std::ceil(tokens * min_ratio));
  return random_mask(rows, tokens, std::min(masked, tokens), std::min(dropped, masked), gen);
}

int64_t umd_representation_rows(int64_t batch, double share) {
  // small-vision: n_no_noise = int(B * no_noise_prob), truncated.
  return static_cast<int64_t>(static_cast<double>(batch) * share);
}

MaskPolicy parse_mask_policy(const std::string& name) {
  if (name == "fixed") return MaskPolicy::Fixed;
  if (name == "mage") return MaskPolicy::Mage;
  if (name == "lmd-cosine") return MaskPolicy::LmdCosine;
  if (name == "lmd-piecewise") return MaskPolicy::LmdPiecewise;
  if (name == "lmd-linear") return MaskPolicy::LmdLinear;
  throw UsageError("unknown mask policy '" + name + "' (fixed, mage, lmd-cosine, lmd-piecewise, lmd-linear)");
}

std::string mask_policy_name(MaskPolicy policy) {
  switch (policy) {
    case MaskPolicy::Fixed: return "fixed";
    case MaskPolicy::Mage: return "mage";
    case MaskPolicy::LmdCosine: return "lmd-cosine";
    case MaskPolicy::LmdPiecewise: return "lmd-piecewise";
    case MaskPolicy::LmdLinear: return "lmd-linear";
  }
  return "?";
}

double lmd_cosine_ratio(int64_t step, int64_t total) {
  const double S = 2.0 * total / 3.0;
  if (step > S || S <= 0) return 0.75;
  auto f = [&](double i) {
    double c = std::cos((i / S + 0.008) / 1.008 * M_PI / 2);
    return c * c;
  };
  return 0.15 + 0.60 * (1.0 - f(static_cast<double>(step)) / f(0.0));
}

double lmd_piecewise_ratio(int64_t step, int64_t total) {
  const double i = static_cast<double>(step), n = static_cast<double>(std::max<int64_t>(total, 1));
  if (i <= n / 6) return 0.15 + 0.25 * i / (n / 6);
  if (i <= n / 3) return 0.40;
  if (i <= 2 * n / 3) return 0.40 + 0.35 * (i - n / 3) / (n / 3);
  return 0.75;
}

double lmd_linear_ratio(int64_t step, int64_t total) {
  const double frac = std::clamp(static_cast<double>(step) / std::max<int64_t>(total, 1), 0.0, 1.0);
  return 0.15 + 0.60 * frac;
}

double mage_ratio(at::Generator& gen) {
  // Rejection sampling of N(0.55, 0.25^2) on [0.5, 1.0]: the interval holds ~42 % of the mass.
  auto opts = at::TensorOptions().dtype(at::kDouble);
  for (;;) {
    double r = 0.55 + 0.25 * at::randn({1}, gen, opts).item<double>();
    if (r >= 0.5 && r <= 1.0) return r;
  }
}

double mask_ratio(MaskPolicy policy, double fixed, int64_t step, int64_t total, at::Generator& gen) {
  switch (policy) {
    case MaskPolicy::Fixed: return fixed;
    case MaskPolicy::Mage: return mage_ratio(gen);
    case MaskPolicy::LmdCosine: return lmd_cosine_ratio(step, total);
    case MaskPolicy::LmdPiecewise: return lmd_piecewise_ratio(step, total);
    case MaskPolicy::LmdLinear: return lmd_linear_ratio(step, total);
  }
  return fixed;
}

}  // namespace mdx
