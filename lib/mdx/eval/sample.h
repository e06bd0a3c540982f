// mdx-sample as a library function: checkpoint -> HDF5 image table (+ PNG grid), by DDPM ancestral
// sampling or DDIM on a respaced schedule, with classifier-free guidance (SPEC "UMD": DDIM eta = 1,
// 125 steps, EMA weights, u + s (c - u)).
#pragma once
#include <CLI/CLI.hpp>
#include <torch/types.h>

#include <functional>
#include <string>
#include <vector>

#include "mdx/corrupt/schedule.h"
#include "mdx/util/provenance.h"

namespace mdx {

// A schedule of T steps respaced to `steps` of them, as guided-diffusion's space_timesteps(T, "N")
// with one section: timesteps round(i (T-1)/(N-1)), i = 0..N-1, and the alpha_bar of the kept ones.
struct RespacedSchedule {
  std::vector<int64_t> timesteps;      // increasing, original indices 0..T-1
  std::vector<double> alphas_cumprod;  // alpha_bar at those timesteps
};
RespacedSchedule respace(const NoiseSchedule& schedule, int64_t steps);

enum class SamplerKind { Ddpm, Ddim };
SamplerKind parse_sampler(const std::string& name);  // throws UsageError

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

struct SampleOptions {
  std::string checkpoint;
  std::string output, grid;
  std::string sampler = "ddim";
  double eta = 1.0;
  int64_t steps = 125;
  double cfg = 1.0;                  // guidance scale s; 1 = plain conditional sampling
  std::vector<int64_t> classes;      // empty: all
  int64_t per_class = 10;
  int64_t count = 0;                 // unconditional models: how many
  std::string predict = "auto";      // eps | x0 | auto
  bool raw_weights = false;
  bool no_clip = false;
  int64_t batch = 64;
  int64_t grid_columns = 10;
  std::string shard = "0/1";

  void add_to(CLI::App& app);
  void validate() const;
};

void sample(const SampleOptions& opt, Provenance& prov);

}  // namespace mdx
