#include "mdx/train/loss.h"

#include <torch/torch.h>

#include "mdx/tokenize/pca.h"
#include "mdx/util/error.h"

namespace mdx {

namespace {
at::Tensor token_mse(const at::Tensor& pred, const at::Tensor& target) {
  return (pred.to(at::kFloat) - target.to(at::kFloat)).pow(2).mean(-1);
}
// Sum of `values` over the local rows of `select_all` (the whole batch's selection), divided by the
// whole batch's count.
at::Tensor global_mean(const at::Tensor& values, const at::Tensor& select_all, const RowRange& r) {
  at::Tensor local = select_all.slice(0, r.begin, r.end).to(values.device()).to(values.scalar_type());
  return (values * local).sum() / select_all.sum().clamp_min(1).to(values.device()).to(values.scalar_type());
}
}  // namespace

Loss objective_loss(const ObjectiveConfig& cfg, const Corrupted& batch, const at::Tensor& x0, const ModelOutput& out,
                    const NoiseSchedule& schedule, const PcaTokenizer* pca, const LossOptions& options,
                    RowRange rows) {
  const int64_t B = batch.masked.size(0), L = batch.masked.size(1);
  if (rows.end < 0) rows.end = B;
  const at::Tensor& masked = batch.masked;  // whole batch, [B, L]
  at::Tensor all = at::ones({B, L}, at::kBool);
  Loss loss;
  switch (cfg.kind) {
    case ObjectiveKind::Umd: {
      at::Tensor rep = batch.representation.unsqueeze(1).expand({B, L});
      at::Tensor noisy = ~rep;
      at::Tensor ex = token_mse(out.x0, x0);
      at::Tensor ee = token_mse(out.eps, batch.eps.slice(0, rows.begin, rows.end).to(x0.device()));
      at::Tensor rep_term = global_mean(ex, masked & rep, rows);
      // With no mask in the noisy rows, both predictions are scored on every token.
      bool noisy_masked = (masked & noisy).any().item<bool>();
      at::Tensor eps_term = global_mean(ee, noisy_masked ? (~masked & noisy) : noisy, rows);
      at::Tensor x0_term = global_mean(ex, noisy_masked ? (masked & noisy) : noisy, rows);
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
      at::Tensor term = global_mean(token_mse(out.x0, target), masked, rows);
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
      at::Tensor per_token = (r.pow(2) * w).sum(-1);  // [b, L]
      at::Tensor t = batch.t.slice(0, rows.begin, rows.end).clamp_min(0);
      at::Tensor lambda = NoiseSchedule::per_row(schedule.weight(), t, 2, at::kFloat).to(x0.device());
      at::Tensor term = global_mean(per_token * lambda, all, rows);
      loss.total = term;
      loss.terms = {{"weighted_residual", term}};
      break;
    }
    case ObjectiveKind::Dit: {
      at::Tensor ee = token_mse(out.eps, batch.eps.slice(0, rows.begin, rows.end).to(x0.device()));
      at::Tensor term = global_mean(ee, all, rows);
      loss.total = term;
      loss.terms = {{"eps", term}};
      break;
    }
  }
  return loss;
}

}  // namespace mdx
