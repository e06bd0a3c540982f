#include "mdx/eval/sampler.h"

#include <fmt/format.h>
#include <torch/torch.h>

#include "mdx/eval/diffusion_sampler.h"
#include "mdx/eval/maskgit_sampler.h"
#include "mdx/eval/trained_model.h"
#include "mdx/util/error.h"
#include "mdx/util/torch_compat.h"

namespace mdx {

const std::vector<SamplerEntry>& sampler_registry() {
  static const std::vector<SamplerEntry> entries = {
      ddim_sampler(),
      ddpm_sampler(),
      maskgit_sampler(),
  };
  return entries;
}

std::string sampler_names(const char* separator) {
  std::string s;
  for (const auto& e : sampler_registry()) s += (s.empty() ? "" : separator) + e.name;
  return s;
}

std::unique_ptr<Sampler> make_sampler(const std::string& name, const SampleOptions& opt, const TrainedModel& m) {
  const std::string family = m.objective->generator();
  if (family.empty())
    throw Error(fmt::format("'{}' was trained under {}: not a diffusion model nor a masked generative one, no "
                            "sampler drives it; fine-tune it for generation "
                            "(mdx-train --init {} --objective dit --class-cond)",
                            m.path, m.objective->name(), m.path));
  for (const auto& e : sampler_registry()) {
    if (name == "auto" ? e.family != family : e.name != name) continue;
    if (e.family != family)
      throw Error(fmt::format("--sampler {} drives {} models; '{}' was trained under {} ({})", name, e.family,
                              m.path, m.objective->name(), family));
    return e.make(opt, m);
  }
  if (name == "auto") throw Error(fmt::format("no sampler drives {} models ('{}')", family, m.path));
  throw UsageError(fmt::format("--sampler must be auto or one of {}, got '{}'", sampler_names(", "), name));
}

at::Tensor guide(const at::Tensor& cond, const at::Tensor& uncond, double scale) {
  return (uncond + scale * (cond - uncond)).contiguous();
}

GuidedModel::GuidedModel(TrainedModel& model, double scale, const at::Device& device)
    : m_(model), scale_(scale), guided_(model.config.num_classes > 0 && scale != 1.0), device_(device) {}

bool GuidedModel::conditional() const { return m_.config.num_classes > 0; }

at::Tensor GuidedModel::operator()(const at::Tensor& tokens, const at::Tensor& time_index, const at::Tensor& labels,
                                   const Head& head, const at::Tensor& masked) const {
  at::NoGradGuard ng;
  const int64_t B = tokens.size(0);
  ModelInput in;
  in.tokens = guided_ ? at::cat({tokens, tokens}) : tokens;
  in.time_index = guided_ ? at::cat({time_index, time_index}) : time_index;
  if (conditional())
    in.labels = guided_ ? at::cat({labels, at::full({B}, m_.config.num_classes, at::kLong)}) : labels;
  if (masked.defined()) in.masked = guided_ ? at::cat({masked, masked}) : masked;
  for (at::Tensor* p : {&in.tokens, &in.time_index, &in.labels, &in.masked})
    if (p->defined()) *p = p->to(device_);
  ModelOutput out;
  {
    compat::Autocast autocast(device_, m_.bf16);
    out = m_.model->forward(in);
  }
  at::Tensor pred = head(out).to(at::kFloat).to(at::kCPU);
  if (!guided_) return pred;
  return guide(pred.slice(0, 0, B), pred.slice(0, B), scale_);
}

}  // namespace mdx
