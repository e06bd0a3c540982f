#include "mdx/corrupt/objective.h"

#include <fmt/format.h>
#include <torch/torch.h>

#include "mdx/tokenize/pca.h"
#include "mdx/util/error.h"

namespace mdx {

ObjectiveKind parse_objective(const std::string& name) {
  if (name == "umd") return ObjectiveKind::Umd;
  if (name == "mae") return ObjectiveKind::Mae;
  if (name == "ldae") return ObjectiveKind::Ldae;
  if (name == "dit") return ObjectiveKind::Dit;
  throw UsageError("unknown objective '" + name + "' (umd, mae, ldae, dit)");
}

std::string objective_name(ObjectiveKind kind) {
  switch (kind) {
    case ObjectiveKind::Umd: return "umd";
    case ObjectiveKind::Mae: return "mae";
    case ObjectiveKind::Ldae: return "ldae";
    case ObjectiveKind::Dit: return "dit";
  }
  return "?";
}

ObjectiveConfig ObjectiveConfig::defaults(ObjectiveKind kind) {
  ObjectiveConfig c;
  c.kind = kind;
  c.schedule = kind == ObjectiveKind::Dit    ? ScheduleKind::Linear
               : kind == ObjectiveKind::Ldae ? ScheduleKind::LdaeGamma
                                             : ScheduleKind::Cosine;
  return c;
}

Corruptor::Corruptor(ObjectiveConfig config, std::shared_ptr<const PcaTokenizer> pca)
    : config_(config), schedule_(config.schedule, config.steps), pca_(std::move(pca)) {
  if (config_.kind == ObjectiveKind::Ldae && !pca_)
    throw UsageError("the ldae objective needs a PCA tokenizer (--tokenizer, made by mdx-pca-fit)");
  for (double r : {config_.mask_ratio, config_.noisy_mask_ratio, config_.representation_share})
    if (!(r >= 0.0 && r <= 1.0)) throw UsageError(fmt::format("mask ratios and shares must lie in [0, 1], got {}", r));
}

MaskDraw Corruptor::draw_mask(int64_t rows, int64_t tokens, double ratio, at::Generator& gen) const {
  return config_.mask_policy == MaskPolicy::Mage ? mage_mask(rows, tokens, ratio, gen)
                                                 : mae_mask(rows, tokens, ratio, gen);
}

void Corruptor::add_noise(const at::Tensor& x0, const at::Tensor& t, at::Generator& gen, Corrupted& out) const {
  const int64_t B = x0.size(0), L = x0.size(1), D = x0.size(2);
  at::Tensor noisy = t >= 0;
  at::Tensor tc = t.clamp_min(0);
  if (pca_) {
    if (D != pca_->token_dim())
      throw Error(fmt::format("tokens have {} values, the PCA tokenizer expects {} (patch {}, {} channels)", D,
                              pca_->token_dim(), pca_->patch, pca_->channels));
    // l-DAE: noise lives in the d-dim latent; the residual outside it is removed from the input.
    at::Tensor z = pca_->encode(x0);
    out.eps = at::randn({B, L, pca_->dim}, gen, z.options());
    at::Tensor zt = schedule_.add_noise(z, tc, out.eps);
    out.xt = at::where(noisy.view({B, 1, 1}), pca_->decode(zt), x0);
  } else {
    out.eps = at::randn(x0.sizes(), gen, x0.options());
    out.xt = at::where(noisy.view({B, 1, 1}), schedule_.add_noise(x0, tc, out.eps), x0);
  }
  out.eps = out.eps * noisy.view({B, 1, 1}).to(out.eps.scalar_type());
  out.t = t.clone();
  out.time_index = at::where(noisy, t + 1, at::zeros_like(t));
}

Corrupted Corruptor::sample(const at::Tensor& x0, int64_t step, int64_t total, at::Generator& gen) const {
  const int64_t B = x0.size(0), L = x0.size(1);
  const auto i64 = at::TensorOptions().dtype(at::kLong);
  Corrupted out;
  out.representation = at::zeros({B}, at::kBool);
  out.mask_ratio = at::zeros({B}, at::kDouble);
  at::Tensor t = at::randint(0, schedule_.steps(), {B}, gen, i64);
  switch (config_.kind) {
    case ObjectiveKind::Umd: {
      const int64_t rep = umd_representation_rows(B, config_.representation_share);
      double rep_ratio = mask_ratio(config_.mask_policy, config_.mask_ratio, step, total, gen);
      MaskDraw a = draw_mask(rep, L, rep_ratio, gen);
      MaskDraw b = mae_mask(B - rep, L, config_.noisy_mask_ratio, gen);
      out.masked = at::cat({a.masked, b.masked});
      out.dropped = at::cat({a.dropped, b.dropped});
      out.representation.slice(0, 0, rep).fill_(true);
      out.mask_ratio.slice(0, 0, rep).fill_(rep_ratio);
      out.mask_ratio.slice(0, rep).fill_(config_.noisy_mask_ratio);
      t.slice(0, 0, rep).fill_(-1);
      break;
    }
    case ObjectiveKind::Mae: {
      double ratio = mask_ratio(config_.mask_policy, config_.mask_ratio, step, total, gen);
      MaskDraw m = draw_mask(B, L, ratio, gen);
      out.masked = m.masked;
      out.dropped = m.dropped;
      out.mask_ratio.fill_(ratio);
      t.fill_(-1);
      break;
    }
    case ObjectiveKind::Ldae:
    case ObjectiveKind::Dit:
      out.masked = at::zeros({B, L}, at::kBool);
      out.dropped = out.masked.clone();
      break;
  }
  add_noise(x0, t, gen, out);
  return out;
}

Corrupted Corruptor::apply(const at::Tensor& x0, int64_t t, double ratio, at::Generator& gen) const {
  const int64_t B = x0.size(0), L = x0.size(1);
  if (t >= schedule_.steps()) throw UsageError(fmt::format("timestep {} is outside [0, {}]", t, schedule_.steps() - 1));
  if (!(ratio >= 0.0 && ratio <= 1.0)) throw UsageError(fmt::format("mask ratio {} is outside [0, 1]", ratio));
  Corrupted out;
  MaskDraw m = ratio > 0 ? draw_mask(B, L, ratio, gen) : MaskDraw{at::zeros({B, L}, at::kBool), at::zeros({B, L}, at::kBool)};
  out.masked = m.masked;
  out.dropped = m.dropped;
  out.representation = at::full({B}, t < 0 && ratio > 0, at::kBool);
  out.mask_ratio = at::full({B}, ratio, at::kDouble);
  add_noise(x0, at::full({B}, t, at::kLong), gen, out);
  return out;
}

}  // namespace mdx
