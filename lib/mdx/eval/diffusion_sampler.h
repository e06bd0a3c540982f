// The diffusion samplers: DDPM ancestral sampling and DDIM (Song et al. 2021) on a respaced
// schedule, driving the models of the noising objectives (umd, dit) from pure noise to x_0.
#pragma once
#include <torch/types.h>

#include <functional>
#include <string>
#include <vector>

#include "mdx/corrupt/schedule.h"

namespace CLI {
class App;
}

namespace mdx {

struct SamplerEntry;

// A schedule of T steps respaced to `steps` of them, as guided-diffusion's space_timesteps(T, "N")
// with one section: timesteps round(i (T-1)/(N-1)), i = 0..N-1, and the alpha_bar of the kept ones.
struct RespacedSchedule {
  std::vector<int64_t> timesteps;      // increasing, original indices 0..T-1
  std::vector<double> alphas_cumprod;  // alpha_bar at those timesteps
};
RespacedSchedule respace(const NoiseSchedule& schedule, int64_t steps);
// small-vision's own DDIM grid: T-1, T-1-k, ... down to (not including) 0 with k = T / steps
// (integer), then 0 (999, 991, ..., 7, 0 for 125 of 1000): `steps` transitions and a final call at
// t = 0 whose alpha_bar_prev of 1 returns its x0 prediction, steps + 1 model calls in all.
RespacedSchedule respace_umd(const NoiseSchedule& schedule, int64_t steps);

enum class SamplerKind { Ddpm, Ddim };

// What the network predicts at x_t (float32 [B, L, D]) and original timestep index t (int64 [B]):
// the noise eps (or x0 when the sampler is told so).
using Denoiser = std::function<at::Tensor(const at::Tensor& xt, const at::Tensor& t)>;

struct SamplerSettings {
  SamplerKind kind = SamplerKind::Ddim;
  double eta = 1.0;         // DDIM's stochasticity (0: deterministic; 1: UMD's default)
  bool predicts_x0 = false; // the denoiser returns x0 instead of eps
  bool clip = true;         // x0 clamped to [-1, 1] at every step
};

// Runs the reverse process from x_T = `noise[0]` (float32 [B, L, D]); each step s (from the last)
// that adds noise takes it from `draw(s)`, a [B, L, D] tensor. Returns x_0.
at::Tensor reverse_diffusion(const RespacedSchedule& schedule, const SamplerSettings& settings,
                             const Denoiser& denoise, const at::Tensor& x_T,
                             const std::function<at::Tensor(int64_t)>& draw);

// The diffusion samplers' own options.
struct DiffusionOptions {
  double eta = 1.0;               // DDIM's stochasticity
  std::string predict = "auto";   // eps | x0 | auto (eps)
  std::string spacing = "auto";   // uniform | umd | auto (umd for UMD's checkpoints, else uniform)
  bool no_clip = false;

  void add_to(CLI::App& app);
  void validate() const;
};

SamplerEntry ddim_sampler();
SamplerEntry ddpm_sampler();

}  // namespace mdx
