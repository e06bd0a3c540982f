#include "mdx/eval/maskgit_sampler.h"

#include <CLI/CLI.hpp>
#include <fmt/format.h>
#include <torch/torch.h>

#include <cmath>
#include <limits>

#include "mdx/eval/sample.h"
#include "mdx/eval/sampler.h"
#include "mdx/eval/trained_model.h"
#include "mdx/util/error.h"

namespace mdx {

int64_t maskgit_unknown_after(int64_t L, int64_t step, int64_t steps, int64_t unknown) {
  const double ratio = static_cast<double>(step + 1) / static_cast<double>(steps);
  const auto n = static_cast<int64_t>(std::floor(static_cast<double>(L) * std::cos(M_PI / 2 * ratio)));
  // At least one new code per step, and at least one left for the next (MaskGIT's bounds).
  return std::max<int64_t>(1, std::min(unknown - 1, n));
}

namespace {

// Standard Gumbel noise -log(-log U) of `sizes` for each row, U from the row's generator.
at::Tensor gumbel(std::vector<at::Generator>& gens, at::IntArrayRef sizes) {
  std::vector<at::Tensor> rows;
  for (auto& g : gens) rows.push_back(at::rand(sizes, g));
  at::Tensor u = at::stack(rows).clamp(1e-20, 1.0 - 1e-7);
  return -at::log(-at::log(u));
}

}  // namespace

at::Tensor maskgit_decode(const CodeLogits& logits_of, int64_t L, int64_t steps, double tau,
                          std::vector<at::Generator>& gens, const MaskGitTrace& trace) {
  const auto B = static_cast<int64_t>(gens.size());
  if (steps < 1) throw UsageError("--steps must be at least 1");
  at::Tensor codes = at::zeros({B, L}, at::kLong);
  at::Tensor unknown = at::ones({B, L}, at::kBool);
  at::Tensor sampled;
  for (int64_t s = 0; s < steps; ++s) {
    at::Tensor logits = logits_of(codes, unknown).to(at::kFloat);  // [B, L, K]
    const int64_t K = logits.size(2);
    // A categorical draw at every position (Gumbel-max), the known codes kept.
    sampled = (logits + gumbel(gens, {L, K})).argmax(-1);
    sampled = at::where(unknown, sampled, codes);
    at::Tensor logp = logits.log_softmax(-1).gather(-1, sampled.unsqueeze(-1)).squeeze(-1);
    const double ratio = static_cast<double>(s + 1) / static_cast<double>(steps);
    at::Tensor confidence = logp + tau * (1.0 - ratio) * gumbel(gens, {L});
    confidence = at::where(unknown, confidence, at::full_like(confidence, std::numeric_limits<float>::infinity()));
    // Every row has as many unknown codes: the schedule is by count.
    const int64_t n = maskgit_unknown_after(L, s, steps, unknown[0].sum().item<int64_t>());
    at::Tensor rank = confidence.argsort(int64_t{1}).argsort(int64_t{1});  // 0: the least confident
    at::Tensor next = rank < n;
    if (trace) trace(s, sampled, next);
    codes = sampled;
    unknown = next;
  }
  return sampled;
}

void MaskGitOptions::add_to(CLI::App& app) {
  app.add_option("--choice-temperature", choice_temperature,
                 "MaskGIT: temperature of the Gumbel noise on the confidence that chooses the codes to keep, "
                 "annealed to 0 over the steps")
      ->capture_default_str();
}

void MaskGitOptions::validate() const {
  if (!(choice_temperature >= 0) || !std::isfinite(choice_temperature))
    throw UsageError("--choice-temperature must be finite and >= 0");
}

namespace {

class MaskGitSampler : public Sampler {
 public:
  MaskGitSampler(const SampleOptions& opt, const TrainedModel& m)
      : steps_(opt.steps > 0 ? opt.steps : 12), tau_(opt.maskgit.choice_temperature) {
    if (!m.config.discrete())
      throw Error(fmt::format("--sampler maskgit decodes codes; '{}' is a model of continuous tokens", m.path));
  }

  at::Tensor generate(const GuidedModel& model, const at::Tensor& labels,
                      std::vector<at::Generator>& gens) const override {
    const int64_t L = model.model().config.tokens();
    CodeLogits logits = [&](const at::Tensor& codes, const at::Tensor& unknown) {
      at::Tensor clean = at::zeros({codes.size(0)}, at::kLong);  // time index 0: no noise
      return model(codes, clean, labels, [](const ModelOutput& out) { return out.logits; }, unknown);
    };
    return maskgit_decode(logits, L, steps_, tau_, gens);
  }

  std::vector<std::pair<std::string, std::string>> parameters() const override {
    return {{"sampler", "maskgit"}, {"steps", std::to_string(steps_)},
            {"choice_temperature", fmt::format("{}", tau_)}};
  }

  std::string describe() const override {
    return fmt::format("MaskGIT {} steps (choice temperature {})", steps_, tau_);
  }

 private:
  int64_t steps_;
  double tau_;
};

}  // namespace

SamplerEntry maskgit_sampler() {
  return {"maskgit", "maskgit", "MaskGIT's iterative decoding of codes (cosine schedule, 12 steps)",
          [](const SampleOptions& o, const TrainedModel& m) -> std::unique_ptr<Sampler> {
            return std::make_unique<MaskGitSampler>(o, m);
          }};
}

}  // namespace mdx
