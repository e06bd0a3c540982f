#include "mdx/train/loss.h"

#include <torch/torch.h>

#include "mdx/tokenize/pca.h"
#include "mdx/util/error.h"

namespace mdx {

at::Tensor masked_mean(const at::Tensor& values, const at::Tensor& select) {
  at::Tensor s = select.to(values.scalar_type());
  return (values * s).sum() / s.sum().clamp_min(1.0);
}

namespace {
at::Tensor token_mse(const at::Tensor& pred, const at::Tensor& target) {
  return (pred.to(at::kFloat) - target.to(at::kFloat)).pow(2).mean(-1);
}
}  // namespace

Loss objective_loss(const ObjectiveConfig& cfg, const Corrupted& batch, const at::Tensor& x0, const ModelOutput& out,
                    const NoiseSchedule& schedule, const PcaTokenizer* pca, const LossOptions& options) {
  Loss loss;
  switch (cfg.kind) {
    case ObjectiveKind::Umd: {
      const int64_t L = x0.size(1);
      at::Tensor rep = batch.representation.to(x0.device()).unsqueeze(1).expand({-1, L});
      at::Tensor noisy = ~rep;
      at::Tensor masked = batch.masked;
      at::Tensor ex = token_mse(out.x0, x0), ee = token_mse(out.eps, batch.eps);
      at::Tensor rep_term = masked_mean(ex, masked & rep);
      // With no mask in the noisy rows, both predictions are scored on every token.
      bool noisy_masked = (masked & noisy).any().item<bool>();
      at::Tensor eps_term = masked_mean(ee, noisy_masked ? (~masked & noisy) : noisy);
      at::Tensor x0_term = masked_mean(ex, noisy_masked ? (masked & noisy) : noisy);
      const double r = cfg.representation_share;
      loss.total = (1 - r) * 0.5 * (eps_term + x0_term) + r * rep_term;
      loss.terms = {{"eps_visible", eps_term}, {"x0_masked", x0_term}, {"x0_representation", rep_term}};
      break;
    }
    case ObjectiveKind::Mae: {
      at::Tensor target = x0;
      if (options.norm_pix) {
        at::Tensor mean = x0.mean(-1, true), var = x0.var(-1, true, true);
        target = (x0 - mean) / (var + 1e-6).sqrt();
      }
      at::Tensor term = masked_mean(token_mse(out.x0, target), batch.masked);
      loss.total = term;
      loss.terms = {{"x0_masked", term}};
      break;
    }
    case ObjectiveKind::Ldae: {
      if (!pca) throw Error("the ldae loss needs the PCA tokenizer");
      at::Tensor basis = pca->components.to(at::kFloat).to(x0.device());  // [D, D]
      at::Tensor r = at::matmul(x0.to(at::kFloat) - out.x0.to(at::kFloat), basis.t());
      at::Tensor w = at::full({basis.size(0)}, options.ldae_rest_weight, r.options());
      w.slice(0, 0, pca->dim).fill_(1.0);
      at::Tensor per_token = (r.pow(2) * w).sum(-1);  // [B, L]
      at::Tensor lambda = NoiseSchedule::per_row(schedule.weight(), batch.t.clamp_min(0), 2, at::kFloat);
      at::Tensor term = (per_token * lambda.to(x0.device())).mean();
      loss.total = term;
      loss.terms = {{"weighted_residual", term}};
      break;
    }
    case ObjectiveKind::Dit: {
      at::Tensor term = token_mse(out.eps, batch.eps).mean();
      loss.total = term;
      loss.terms = {{"eps", term}};
      break;
    }
  }
  return loss;
}

}  // namespace mdx
