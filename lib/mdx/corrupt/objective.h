// Objectives as policies over shared pieces (noise schedule, mask sampler, the tokenizer's token
// space): what the model sees, what it is scored on, and what generates from its models.
// mdx-corrupt renders exactly what mdx-train trains on. One file per objective under
// lib/mdx/corrupt/objectives/ (umd, mae, ldae, dit, mage) holds its options, corruption, loss terms,
// traits and configuration; objectives/registry.cpp maps names to them.
//
// Adding an objective: a class deriving from Objective (and, when it has options of its own, from
// ObjectiveParams) in objectives/<name>.cpp, exposing an ObjectiveEntry, and one line in
// objective_registry().
#pragma once
#include <torch/types.h>

#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "mdx/corrupt/augment.h"
#include "mdx/corrupt/mask.h"
#include "mdx/corrupt/schedule.h"
#include "mdx/tokenize/geometry.h"

namespace CLI {
class App;
}

namespace mdx {

class Tokenizer;
struct ModelOutput;

struct Corrupted {
  at::Tensor xt;              // [B, L, D] the corrupted tokens (masked ones still hold their values);
                              // int64 codes [B, L] in a discrete space
  at::Tensor eps;             // the noise: [B, L, D], or [B, L, d] in a latent (l-DAE's PCA); undefined for codes
  at::Tensor t;               // int64 [B], -1 where no noise was added
  at::Tensor time_index;      // int64 [B], the model's conditioning: 0 = no noise, else t + 1
  at::Tensor masked;          // bool [B, L]
  at::Tensor dropped;         // bool [B, L], subset of masked: not given to the encoder
  at::Tensor representation;  // bool [B], UMD's representation-step rows
  at::Tensor mask_ratio;      // float64 [B], the ratio each row was masked with
};

struct Loss {
  at::Tensor total;                                        // scalar, for backward
  std::vector<std::pair<std::string, at::Tensor>> terms;   // named parts, for the log
};

// The rows of the global batch this process holds; end = -1: all of them.
struct RowRange {
  int64_t begin = 0, end = -1;
};

// The choices every objective shares.
struct ObjectiveSettings {
  ScheduleKind schedule = ScheduleKind::Cosine;
  int64_t steps = 1000;                  // T
  MaskPolicy mask_policy = MaskPolicy::Fixed;
  double mask_ratio = 0.75;              // masked objectives, under the fixed policy
};

// An objective's own options (UMD's r, MAE's normalized-pixel target). Every objective's are
// registered on a tool's command line (the --objective choice is parsed with them); the chosen
// one's are validated, used, and kept in the checkpoint's configuration.
class ObjectiveParams {
 public:
  virtual ~ObjectiveParams() = default;
  // `training`: mdx-train's options too (mdx-corrupt registers only those that shape a corruption).
  virtual void add_to(CLI::App&, bool /*training*/) {}
  virtual void validate() const {}
  virtual void save(std::map<std::string, std::string>&) const {}
  virtual void load(const std::map<std::string, std::string>&) {}  // absent keys keep the defaults
};

class Objective {
 public:
  explicit Objective(const ObjectiveSettings& settings);
  virtual ~Objective();

  virtual std::string name() const = 0;
  // Traits.
  virtual bool masks() const = 0;   // hides tokens from the encoder
  virtual bool noises() const = 0;  // adds diffusion noise
  virtual bool discrete() const { return false; }  // trains on discrete codes (a VQ tokenizer's)
  // The family of samplers that generate from its models ("diffusion", "maskgit"), "" when none does.
  virtual std::string generator() const { return ""; }
  // The mask ratio of its noisy rows (UMD's 37.5 %), shown by mdx-corrupt beside each timestep.
  virtual double noisy_mask_ratio() const { return 0.0; }
  // The EMA decay mdx-train keeps when --ema is not given (0: none), as the reference runs do:
  // DiT's 0.9999 here; MAE none; UMD one only for its labelled run (an EMA step of 1e-4 B/256).
  virtual double default_ema(bool /*labelled*/, int64_t /*batch*/) const { return 0.9999; }
  // Its reference model's form, where --positions, --condition and --dropout say auto: learned
  // position tables (UMD's, MAGE's) or sin-cos; one conditioning vector for encoder and decoder
  // (UMD's); the dropout (MAGE's 0.1).
  virtual bool learned_positions() const { return false; }
  virtual bool shared_condition() const { return false; }
  virtual double default_dropout() const { return 0.0; }
  // The training augmentation of its reference code (see augment.h): DiT's flip here.
  virtual Augment default_augment(bool /*labelled*/) const {
    Augment a;
    a.flip = true;
    return a;
  }

  // The token spaces. bind() takes the tokenizer the user gave (null: pixel patches of `patch`)
  // and validates it; restore() sets the spaces a checkpoint recorded, without checks.
  virtual void bind(std::shared_ptr<const Tokenizer> given, int64_t patch);
  virtual void restore(std::shared_ptr<const Tokenizer> tokenizer, std::shared_ptr<const Tokenizer> latent);
  // What the model's tokens are.
  const std::shared_ptr<const Tokenizer>& tokenizer() const { return tokenizer_; }
  // Where the noise lives when not in the tokens (l-DAE's PCA latent); null otherwise, or when
  // a checkpoint did not record it (noising then fails, saying what is missing).
  virtual std::shared_ptr<const Tokenizer> latent() const { return nullptr; }
  virtual bool noises_in_latent() const { return false; }
  // Throws Error when the token space of `g` is not the kind it trains on (codes for a discrete
  // objective, continuous tokens for the others); `tokenizer` names it ("'vq.h5'", "pixels").
  void check_space(const TokenGeometry& g, const std::string& tokenizer) const;

  // The training draw for clean tokens x0 [B, L, D] at step `step` of `total` (LMD schedulers).
  virtual Corrupted sample(const at::Tensor& x0, int64_t step, int64_t total, at::Generator& gen) const = 0;
  // A chosen corruption, for inspection: noise at t (-1: none), `ratio` of the tokens masked
  // (0: none) with this objective's mask sampler (MAGE's masked/dropped split under --mask-policy mage).
  Corrupted apply(const at::Tensor& x0, int64_t t, double ratio, at::Generator& gen) const;

  // The loss of the model's output on rows `rows` of `batch` (the whole batch's corruption); x0 and
  // out hold those rows. MSE terms are means over a token's D values, averaged over the selected
  // tokens of the whole batch: with data parallelism each process divides by the global counts,
  // so the processes' losses (and gradients) sum to those of the whole batch.
  virtual Loss loss(const Corrupted& batch, const at::Tensor& x0, const ModelOutput& out, RowRange rows) const = 0;
  // The clean tokens the model's output implies (the preview's prediction column).
  virtual at::Tensor predicted_x0(const Corrupted& batch, const ModelOutput& out) const;

  // Its configuration, for the checkpoint: objective, schedule, T, mask policy and ratio, and its
  // own options; objective_from_config() reads it back.
  std::map<std::string, std::string> config() const;
  const ObjectiveSettings& settings() const { return settings_; }
  const NoiseSchedule& schedule() const { return schedule_; }
  const ObjectiveParams* params() const { return params_.get(); }

 protected:
  // x_t for rows with t >= 0 (the others unchanged), eps drawn from `gen`; in latent() when set.
  void add_noise(const at::Tensor& x0, const at::Tensor& t, at::Generator& gen, Corrupted& out) const;
  MaskDraw draw_mask(int64_t rows, int64_t tokens, double ratio, at::Generator& gen) const;
  // Tokens [B, L, D] to latent() and back (objectives with a latent override both).
  virtual at::Tensor latent_encode(const at::Tensor& tokens) const;
  virtual at::Tensor latent_decode(const at::Tensor& latents) const;
  // A Corrupted with nothing masked and no noise for B rows of L tokens.
  static Corrupted clean(int64_t B, int64_t L);
  // Every row noised at its own t ~ U{0..T-1}, nothing masked (DiT, l-DAE).
  Corrupted noise_every_row(const at::Tensor& x0, at::Generator& gen) const;

  ObjectiveSettings settings_;
  NoiseSchedule schedule_;
  std::shared_ptr<const Tokenizer> tokenizer_;
  std::unique_ptr<ObjectiveParams> params_;  // set by the registry
  friend std::unique_ptr<Objective> make_objective(const std::string&, const ObjectiveSettings&,
                                                   std::unique_ptr<ObjectiveParams>);
};

// Shared loss pieces: the mean over the last axis of (pred - target)^2 in float32, and the sum of
// `values` over the local rows of `select_all` (the whole batch's selection [B, L]) divided by the
// whole batch's count.
at::Tensor token_mse(const at::Tensor& pred, const at::Tensor& target);
at::Tensor batch_mean(const at::Tensor& values, const at::Tensor& select_all, const RowRange& rows);
// Cross-entropy with label smoothing s per position, logits [..., K] and int64 targets [...]:
// (1 - s) (-log p_target) + s mean_k (-log p_k), float32 (MAGE's LabelSmoothingCrossEntropy).
at::Tensor label_smoothed_cross_entropy(const at::Tensor& logits, const at::Tensor& target, double smoothing);

// --- The registry (objectives/registry.cpp) ------------------------------------------------------

struct ObjectiveEntry {
  std::string name;
  std::string summary;                                       // one line for --help and errors
  ScheduleKind schedule;                                     // its default noise schedule
  std::function<std::unique_ptr<ObjectiveParams>()> params;  // its own options, at their defaults
  std::function<std::unique_ptr<Objective>(const ObjectiveSettings&, const ObjectiveParams&)> make;
  MaskPolicy mask_policy = MaskPolicy::Fixed;                // its default mask policy (mage: MAGE's)
  // Its default schedule in a learned latent (a VAE's), where that differs: UMD's linear, as LDM's.
  std::optional<ScheduleKind> latent_schedule = std::nullopt;
};

const std::vector<ObjectiveEntry>& objective_registry();
const ObjectiveEntry& find_objective(const std::string& name);  // throws UsageError listing the names
std::string objective_names(const char* separator = " | ");     // "umd | mae | ldae | dit"
// `name` with these settings and options (null: its defaults), unbound.
std::unique_ptr<Objective> make_objective(const std::string& name, const ObjectiveSettings& settings,
                                          std::unique_ptr<ObjectiveParams> params = nullptr);
// The objective a checkpoint's configuration describes (absent keys: the defaults; no
// `objective`: umd), unbound.
std::unique_ptr<Objective> objective_from_config(const std::map<std::string, std::string>& config);

// The options that choose an objective and shape its corruption, shared by mdx-corrupt and
// mdx-train: --objective, --schedule, --timesteps, --mask-policy, --tokenizer and every
// objective's own.
struct ObjectiveOptions {
  std::string objective = "umd";
  std::string schedule;              // empty: the objective's default
  int64_t timesteps = 1000;          // T
  std::string mask_policy = "auto";   // auto: the objective's (mage for mage, else fixed)
  double mask_ratio = 0.75;          // mdx-train's --mask-ratio (mdx-corrupt has its own list)
  std::string tokenizer;             // a tokenizer file (PCA for ldae)
  std::vector<std::pair<std::string, std::unique_ptr<ObjectiveParams>>> params;  // one per objective

  ObjectiveOptions();
  void add_to(CLI::App& app, bool training);
  // Validated (throws UsageError); `learned_latent`: the tokens are a learned latent (a VAE's), where
  // the objective's latent schedule is the default.
  ObjectiveSettings settings(bool learned_latent = false) const;
  std::unique_ptr<Objective> make(bool learned_latent = false) const;  // the chosen objective, unbound
};

}  // namespace mdx
