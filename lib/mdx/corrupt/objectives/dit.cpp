// DiT (Peebles & Xie 2022): every token noised, x_t at t ~ U{0..T-1}; eps-MSE on every token.
#include <torch/torch.h>

#include "mdx/corrupt/objectives/objectives.h"
#include "mdx/model/autoencoder.h"

namespace mdx {

namespace {

class Dit : public Objective {
 public:
  explicit Dit(const ObjectiveSettings& s) : Objective(s) {}
  std::string name() const override { return "dit"; }
  bool masks() const override { return false; }
  bool noises() const override { return true; }
  std::string generator() const override { return "diffusion"; }

  Corrupted sample(const at::Tensor& x0, int64_t, int64_t, at::Generator& gen) const override {
    return noise_every_row(x0, gen);
  }

  Loss loss(const Corrupted& batch, const at::Tensor& x0, const ModelOutput& out, RowRange rows) const override {
    const int64_t B = batch.masked.size(0), L = batch.masked.size(1);
    if (rows.end < 0) rows.end = B;
    at::Tensor ee = token_mse(out.eps, batch.eps.slice(0, rows.begin, rows.end).to(x0.device()));
    at::Tensor term = batch_mean(ee, at::ones({B, L}, at::kBool), rows);
    Loss loss;
    loss.total = term;
    loss.terms = {{"eps", term}};
    return loss;
  }

  // DiT predicts eps: x0 = (x_t - noise[t] eps) / signal[t].
  at::Tensor predicted_x0(const Corrupted& batch, const ModelOutput& out) const override {
    at::Tensor t = batch.t.clamp_min(0);
    auto signal = NoiseSchedule::per_row(schedule_.signal(), t, 3, at::kFloat);
    auto noise = NoiseSchedule::per_row(schedule_.noise(), t, 3, at::kFloat);
    return (batch.xt - noise * out.eps.to(at::kCPU).to(at::kFloat)) / signal;
  }
};

}  // namespace

ObjectiveEntry dit_objective() {
  return {"dit", "DiT: every token noised (x_t), eps predicted", ScheduleKind::Linear,
          [] { return std::make_unique<ObjectiveParams>(); },
          [](const ObjectiveSettings& s, const ObjectiveParams&) -> std::unique_ptr<Objective> {
            return std::make_unique<Dit>(s);
          }};
}

}  // namespace mdx
