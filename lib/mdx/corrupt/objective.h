// The four objectives as corruption policies over shared pieces (noise schedule, mask sampler,
// PCA latent): what the model sees. mdx-corrupt renders exactly what mdx-train trains on.
//
//   umd   UMD: a share r of the batch takes the representation step (clean x_0, time index 0,
//         75 % masked); the rest the noisy step (t ~ U{0..T-1}, x_t, time index t+1, 37.5 % masked)
//   mae   MAE: clean input, 75 % masked (or a MAGE / LMD ratio), time index 0
//   ldae  l-DAE: noise added in the d-dim PCA latent of each patch and projected back,
//         Vd^T (gamma Vd (x - mu) + sigma eps) + mu; no mask
//   dit   DiT: every token noised, x_t; no mask
#pragma once
#include <torch/types.h>

#include <memory>
#include <string>

#include "mdx/corrupt/mask.h"
#include "mdx/corrupt/schedule.h"

namespace mdx {

struct PcaTokenizer;

enum class ObjectiveKind { Umd, Mae, Ldae, Dit };
ObjectiveKind parse_objective(const std::string& name);  // throws UsageError
std::string objective_name(ObjectiveKind kind);

struct ObjectiveConfig {
  ObjectiveKind kind = ObjectiveKind::Umd;
  ScheduleKind schedule = ScheduleKind::Cosine;
  int64_t steps = 1000;                  // T
  MaskPolicy mask_policy = MaskPolicy::Fixed;
  double mask_ratio = 0.75;              // MAE; UMD's representation step
  double noisy_mask_ratio = 0.375;       // UMD's noisy step
  double representation_share = 0.5;     // UMD's r

  // The papers' defaults: umd cosine (pixel UMD), dit linear, ldae ldae-gamma; mae needs none.
  static ObjectiveConfig defaults(ObjectiveKind kind);
  bool masks() const { return kind == ObjectiveKind::Umd || kind == ObjectiveKind::Mae; }
  bool noises() const { return kind != ObjectiveKind::Mae; }
};

struct Corrupted {
  at::Tensor xt;              // [B, L, D] the corrupted tokens (masked ones still hold their values)
  at::Tensor eps;             // the noise: [B, L, D], or [B, L, d] in the PCA latent (l-DAE)
  at::Tensor t;               // int64 [B], -1 where no noise was added
  at::Tensor time_index;      // int64 [B], the model's conditioning: 0 = no noise, else t + 1
  at::Tensor masked;          // bool [B, L]
  at::Tensor dropped;         // bool [B, L], subset of masked: not given to the encoder
  at::Tensor representation;  // bool [B], UMD's representation-step rows
  at::Tensor mask_ratio;      // float64 [B], the ratio each row was masked with
};

class Corruptor {
 public:
  // `pca` is required for ldae and must match the token size.
  explicit Corruptor(ObjectiveConfig config, std::shared_ptr<const PcaTokenizer> pca = nullptr);
  const ObjectiveConfig& config() const { return config_; }
  const NoiseSchedule& schedule() const { return schedule_; }

  // The training draw for clean tokens x0 [B, L, D] at step `step` of `total` (LMD schedulers).
  Corrupted sample(const at::Tensor& x0, int64_t step, int64_t total, at::Generator& gen) const;
  // A chosen corruption, for inspection: noise at t (-1: none), `ratio` of the tokens masked
  // (0: none) with this objective's sampler (MAGE's masked/dropped split under --mask-policy mage).
  Corrupted apply(const at::Tensor& x0, int64_t t, double ratio, at::Generator& gen) const;

  // x_t for rows with t >= 0 (the others unchanged), eps drawn from `gen`.
  void add_noise(const at::Tensor& x0, const at::Tensor& t, at::Generator& gen, Corrupted& out) const;

 private:
  MaskDraw draw_mask(int64_t rows, int64_t tokens, double ratio, at::Generator& gen) const;
  ObjectiveConfig config_;
  NoiseSchedule schedule_;
  std::shared_ptr<const PcaTokenizer> pca_;
};

}  // namespace mdx
