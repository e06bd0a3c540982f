#include "mdx/eval/diffusion_sampler.h"

#include <CLI/CLI.hpp>
#include <fmt/format.h>
#include <torch/torch.h>

#include <cmath>

#include "mdx/eval/sample.h"
#include "mdx/eval/sampler.h"
#include "mdx/eval/trained_model.h"
#include "mdx/tokenize/tokenizer.h"
#include "mdx/util/error.h"

namespace mdx {

RespacedSchedule respace(const NoiseSchedule& schedule, int64_t steps) {
  const int64_t T = schedule.steps();
  if (steps < 1 || steps > T) throw UsageError(fmt::format("--steps must lie in [1, {}]", T));
  RespacedSchedule r;
  at::Tensor ac = schedule.alphas_cumprod().contiguous();
  const double* a = ac.data_ptr<double>();
  // guided-diffusion's space_timesteps with one section: a fractional stride, rounded.
  const double stride = steps > 1 ? static_cast<double>(T - 1) / static_cast<double>(steps - 1) : 0.0;
  double index = 0;
  for (int64_t i = 0; i < steps; ++i, index += stride) {
    const auto t = static_cast<int64_t>(std::llround(index));
    r.timesteps.push_back(t);
    r.alphas_cumprod.push_back(a[t]);
  }
  return r;
}

RespacedSchedule respace_umd(const NoiseSchedule& schedule, int64_t steps) {
  const int64_t T = schedule.steps();
  if (steps < 1 || steps > T) throw UsageError(fmt::format("--steps must lie in [1, {}]", T));
  at::Tensor ac = schedule.alphas_cumprod().contiguous();
  const double* a = ac.data_ptr<double>();
  std::vector<int64_t> down;  // jnp.arange(T - 1, 0, -(T // steps)), then 0
  for (int64_t t = T - 1; t > 0; t -= T / steps) down.push_back(t);
  down.push_back(0);
  RespacedSchedule r;
  for (auto it = down.rbegin(); it != down.rend(); ++it) {
    r.timesteps.push_back(*it);
    r.alphas_cumprod.push_back(a[*it]);
  }
  return r;
}

at::Tensor reverse_diffusion(const RespacedSchedule& schedule, const SamplerSettings& settings,
                             const Denoiser& denoise, const at::Tensor& x_T,
                             const std::function<at::Tensor(int64_t)>& draw) {
  at::Tensor x = x_T;
  const int64_t B = x.size(0);
  for (auto s = static_cast<int64_t>(schedule.timesteps.size()) - 1; s >= 0; --s) {
    // The respaced process: alpha_bar of this step and the previous kept one (1 before the first).
    const double ac = schedule.alphas_cumprod[static_cast<size_t>(s)];
    const double ac_prev = s > 0 ? schedule.alphas_cumprod[static_cast<size_t>(s - 1)] : 1.0;
    at::Tensor t = at::full({B}, schedule.timesteps[static_cast<size_t>(s)], at::kLong);
    at::Tensor out = denoise(x, t).to(at::kFloat);
    // guided-diffusion's _predict_xstart_from_eps / _predict_eps_from_xstart.
    at::Tensor x0 = settings.predicts_x0 ? out : (x * std::sqrt(1 / ac) - out * std::sqrt(1 / ac - 1));
    if (settings.clip) x0 = x0.clamp(-1, 1);
    at::Tensor eps = (x * std::sqrt(1 / ac) - x0) / std::sqrt(1 / ac - 1);
    double sigma = 0;
    at::Tensor mean;
    if (settings.kind == SamplerKind::Ddim) {
      sigma = settings.eta * std::sqrt((1 - ac_prev) / (1 - ac)) * std::sqrt(1 - ac / ac_prev);
      mean = x0 * std::sqrt(ac_prev) + eps * std::sqrt(std::max(0.0, 1 - ac_prev - sigma * sigma));
    } else {
      // DDPM ancestral step: the posterior q(x_{t-1} | x_t, x0) with its own (fixed, small) variance.
      const double beta = 1 - ac / ac_prev;
      mean = x0 * (beta * std::sqrt(ac_prev) / (1 - ac)) + x * ((1 - ac_prev) * std::sqrt(1 - beta) / (1 - ac));
      sigma = std::sqrt(beta * (1 - ac_prev) / (1 - ac));
    }
    x = s > 0 && sigma > 0 ? mean + sigma * draw(s) : mean;
  }
  return x;
}

void DiffusionOptions::add_to(CLI::App& app) {
  app.add_option("--eta", eta, "DDIM's eta (1: UMD's default; 0: deterministic)")->capture_default_str();
  app.add_option("--predict", predict, "which head drives the sampler: eps | x0 | auto (eps)")->capture_default_str();
  app.add_flag("--no-clip", no_clip, "do not clamp the x0 prediction to [-1, 1] at each step (pixel tokens; a learned latent is never clamped)");
  app.add_option("--spacing", spacing,
                 "timesteps visited: uniform (guided-diffusion's), umd (999, 991, ..., 7, 0 and a final x0 call) "
                 "or auto (umd for UMD's models)")
      ->capture_default_str();
}

void DiffusionOptions::validate() const {
  if (!(eta >= 0) || !std::isfinite(eta)) throw UsageError("--eta must be finite and >= 0");
  if (predict != "eps" && predict != "x0" && predict != "auto") throw UsageError("--predict must be eps, x0 or auto");
  if (spacing != "uniform" && spacing != "umd" && spacing != "auto")
    throw UsageError("--spacing must be uniform, umd or auto");
}

namespace {

class DiffusionSampler : public Sampler {
 public:
  DiffusionSampler(SamplerKind kind, const SampleOptions& opt, const TrainedModel& m)
      : name_(kind == SamplerKind::Ddim ? "ddim" : "ddpm"),
        schedule_(m.objective->schedule()),
        steps_(opt.steps > 0 ? opt.steps : 125) {
    if (!schedule_.variance_preserving())
      throw Error(fmt::format("'{}' was trained under {} ({} schedule) and is not a diffusion model DDIM or "
                              "DDPM samples (its schedule is not variance-preserving); fine-tune it for generation "
                              "(mdx-train --init {} --objective dit --class-cond)",
                              m.path, m.objective->name(), schedule_name(schedule_.kind()), m.path));
    settings_.kind = kind;
    settings_.eta = opt.diffusion.eta;
    settings_.predicts_x0 = opt.diffusion.predict == "x0";
    // x0 is clamped to [-1, 1] in pixel space only: a learned latent (a VAE's) has no such bound,
    // and LDM and DiT sample theirs unclamped.
    settings_.clip = !opt.diffusion.no_clip && m.objective->tokenizer()->kind() == "pixels";
    spacing_ = opt.diffusion.spacing != "auto" ? opt.diffusion.spacing
               : m.objective->name() == "umd"    ? "umd"
                                                 : "uniform";
    respaced_ = spacing_ == "umd" ? respace_umd(schedule_, steps_) : respace(schedule_, steps_);
  }

  at::Tensor generate(const GuidedModel& model, const at::Tensor& labels,
                      std::vector<at::Generator>& gens) const override {
    const int64_t L = model.model().config.tokens(), D = model.model().config.token_dim();
    std::vector<at::Tensor> x_T;
    for (auto& g : gens) x_T.push_back(at::randn({L, D}, g));
    auto draw = [&](int64_t) {
      std::vector<at::Tensor> z;
      for (auto& g : gens) z.push_back(at::randn({L, D}, g));
      return at::stack(z);
    };
    const bool x0 = settings_.predicts_x0;
    auto head = [x0](const ModelOutput& out) { return x0 ? out.x0 : out.eps; };
    Denoiser denoise = [&](const at::Tensor& xt, const at::Tensor& t) {
      return model(xt, t + 1, labels, head);  // time index 0 means "no noise"
    };
    return reverse_diffusion(respaced_, settings_, denoise, at::stack(x_T), draw);
  }

  std::vector<std::pair<std::string, std::string>> parameters() const override {
    return {{"sampler", name_},
            {"eta", fmt::format("{}", settings_.eta)},
            {"steps", std::to_string(steps_)},
            {"spacing", spacing_},
            {"schedule", schedule_name(schedule_.kind())},
            {"predict", settings_.predicts_x0 ? "x0" : "eps"},
            {"clip", settings_.clip ? "1" : "0"}};
  }

  std::string describe() const override {
    return fmt::format("{} {} steps ({} spacing){}, predicting {}", name_, steps_, spacing_,
                       settings_.kind == SamplerKind::Ddim ? fmt::format(" (eta {})", settings_.eta) : "",
                       settings_.predicts_x0 ? "x0" : "eps");
  }

 private:
  std::string name_;
  NoiseSchedule schedule_;
  int64_t steps_;
  std::string spacing_;
  SamplerSettings settings_;
  RespacedSchedule respaced_;
};

}  // namespace

SamplerEntry ddim_sampler() {
  return {"ddim", "diffusion", "DDIM on a respaced schedule (eta 1: UMD's default)",
          [](const SampleOptions& o, const TrainedModel& m) -> std::unique_ptr<Sampler> {
            return std::make_unique<DiffusionSampler>(SamplerKind::Ddim, o, m);
          }};
}

SamplerEntry ddpm_sampler() {
  return {"ddpm", "diffusion", "DDPM ancestral sampling on a respaced schedule",
          [](const SampleOptions& o, const TrainedModel& m) -> std::unique_ptr<Sampler> {
            return std::make_unique<DiffusionSampler>(SamplerKind::Ddpm, o, m);
          }};
}

}  // namespace mdx
