// Noise schedules over T discrete timesteps: x_t = signal[t] * x_0 + noise[t] * eps, with a loss
// weight per timestep. All coefficients are computed once in float64.
//
//   linear      DDPM/DiT: beta from 1e-4 to 0.02, alpha_bar = prod(1 - beta)
//   cosine      improved DDPM (Nichol & Dhariwal 2021) as in guided-diffusion's code:
//               beta_t = min(1 - f(t+1)/f(t), 0.999), f(t) = cos^2(((t/T) + 0.008)/1.008 * pi/2),
//               so alpha_bar[t] = f(t+1)/f(0) where no clipping occurs (index t is time (t+1)/T)
//   ldae-gamma  l-DAE's linear gamma^2: alpha_bar[t] = gamma_t^2 = 1 - t/T (variance preserving)
//   ldae-sigma  l-DAE's "no input scaling": gamma = 1, sigma_t = sqrt(2) t/T, weight 1/(1+sigma^2)
//   single      l-DAE's single noise level: gamma = 1, sigma = sqrt(1/3) at every t
#pragma once
#include <torch/types.h>

#include <string>

namespace mdx {

// The most timesteps a schedule may have: its coefficients are allocated up front, so a T from a
// command line or a checkpoint is checked against this before any schedule is built.
constexpr int64_t kMaxTimesteps = 100000;

enum class ScheduleKind { Linear, Cosine, LdaeGamma, LdaeSigma, Single };
ScheduleKind parse_schedule(const std::string& name);  // throws UsageError
std::string schedule_name(ScheduleKind kind);

class NoiseSchedule {
 public:
  explicit NoiseSchedule(ScheduleKind kind, int64_t steps = 1000);

  ScheduleKind kind() const { return kind_; }
  int64_t steps() const { return steps_; }
  // float64 [T] each.
  const at::Tensor& signal() const { return signal_; }
  const at::Tensor& noise() const { return noise_; }
  const at::Tensor& weight() const { return weight_; }
  // signal^2 / (signal^2 + noise^2): DDPM's alpha_bar for the variance-preserving schedules.
  at::Tensor alphas_cumprod() const;
  bool variance_preserving() const;

  // x_t = signal[t] x0 + noise[t] eps, per row; t is int64 [B], x0 and eps [B, ...].
  at::Tensor add_noise(const at::Tensor& x0, const at::Tensor& t, const at::Tensor& eps) const;
  // Per-row coefficient c[t] shaped [B, 1, ..., 1] to broadcast against a [B, ...] tensor.
  static at::Tensor per_row(const at::Tensor& coef, const at::Tensor& t, int64_t dims, at::ScalarType type);

 private:
  ScheduleKind kind_;
  int64_t steps_;
  at::Tensor signal_, noise_, weight_;
};

}  // namespace mdx
