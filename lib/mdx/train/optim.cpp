#include "mdx/train/optim.h"

#include <cmath>

namespace mdx {

bool decays(const std::string& name, const at::Tensor& param) { return param.dim() >= 2 && name != "cls"; }

AdamW::AdamW(const std::vector<std::pair<std::string, at::Tensor>>& named, AdamWOptions options)
    : options_(options) {
  for (const auto& [name, p] : named) {
    if (!p.requires_grad()) continue;
    slots_.push_back({name, p, at::zeros_like(p), at::zeros_like(p), 0, decays(name, p)});
  }
}

void AdamW::zero_grad() {
  for (auto& s : slots_)
    if (s.param.grad().defined()) s.param.mutable_grad().zero_();
}

void AdamW::step() {
  at::NoGradGuard no_grad;
  const double lr = options_.lr, b1 = options_.beta1, b2 = options_.beta2;
  for (auto& s : slots_) {
    const at::Tensor& g = s.param.grad();
    if (!g.defined()) continue;
    ++s.step;
    if (s.decay && options_.weight_decay != 0) s.param.mul_(1 - lr * options_.weight_decay);
    s.exp_avg.mul_(b1).add_(g, 1 - b1);
    s.exp_avg_sq.mul_(b2).addcmul_(g, g, 1 - b2);
    const double bias1 = 1 - std::pow(b1, static_cast<double>(s.step));
    const double bias2 = 1 - std::pow(b2, static_cast<double>(s.step));
    at::Tensor denom = (s.exp_avg_sq.sqrt() / std::sqrt(bias2)).add_(options_.eps);
    s.param.addcdiv_(s.exp_avg, denom, -lr / bias1);
  }
}

double warmup_cosine_lr(double base_lr, int64_t step, int64_t warmup, int64_t total) {
  if (step < warmup) return base_lr * static_cast<double>(step) / static_cast<double>(warmup);
  if (total <= warmup) return base_lr;
  const double progress = static_cast<double>(step - warmup) / static_cast<double>(total - warmup);
  return base_lr * 0.5 * (1.0 + std::cos(M_PI * std::min(progress, 1.0)));
}

double clip_grad_norm(const std::vector<at::Tensor>& params, double max_norm) {
  at::NoGradGuard no_grad;
  std::vector<at::Tensor> norms;
  for (const auto& p : params)
    if (p.grad().defined()) norms.push_back(p.grad().norm(2).to(at::kFloat));
  if (norms.empty()) return 0.0;
  double total = at::stack(norms).norm(2).item<double>();
  if (max_norm > 0 && total > max_norm) {
    const double scale = max_norm / (total + 1e-6);
    for (const auto& p : params)
      if (p.grad().defined()) p.grad().mul_(scale);
  }
  return total;
}

}  // namespace mdx
