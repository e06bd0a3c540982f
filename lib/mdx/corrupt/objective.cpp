#include "mdx/corrupt/objective.h"

#include <fmt/format.h>
#include <torch/torch.h>

#include "mdx/model/autoencoder.h"
#include "mdx/tokenize/tokenizer.h"
#include "mdx/util/error.h"

namespace mdx {

Objective::Objective(const ObjectiveSettings& settings)
    : settings_(settings), schedule_(settings.schedule, settings.steps) {
  if (!(settings_.mask_ratio >= 0.0 && settings_.mask_ratio <= 1.0))
    throw UsageError(fmt::format("mask ratios and shares must lie in [0, 1], got {}", settings_.mask_ratio));
}

Objective::~Objective() = default;

void Objective::bind(std::shared_ptr<const Tokenizer> given, int64_t patch) {
  tokenizer_ = given ? std::move(given) : std::make_shared<PixelTokenizer>(patch);
}

void Objective::restore(std::shared_ptr<const Tokenizer> tokenizer, std::shared_ptr<const Tokenizer>) {
  tokenizer_ = std::move(tokenizer);
}

at::Tensor Objective::predicted_x0(const Corrupted&, const ModelOutput& out) const { return out.x0; }

std::map<std::string, std::string> Objective::config() const {
  std::map<std::string, std::string> c;
  c["objective"] = name();
  c["schedule"] = noises() ? schedule_name(settings_.schedule) : "none";
  c["timesteps"] = std::to_string(settings_.steps);
  c["mask_policy"] = mask_policy_name(settings_.mask_policy);
  c["mask_ratio"] = fmt::format("{}", settings_.mask_ratio);
  if (params_) params_->save(c);
  return c;
}

MaskDraw Objective::draw_mask(int64_t rows, int64_t tokens, double ratio, at::Generator& gen) const {
  // MAGE's counts under its policy, and always for the MAGE objective.
  return settings_.mask_policy == MaskPolicy::Mage || discrete() ? mage_mask(rows, tokens, ratio, gen)
                                                                 : mae_mask(rows, tokens, ratio, gen);
}

Corrupted Objective::clean(int64_t B, int64_t L) {
  Corrupted out;
  out.masked = at::zeros({B, L}, at::kBool);
  out.dropped = out.masked.clone();
  out.representation = at::zeros({B}, at::kBool);
  out.mask_ratio = at::zeros({B}, at::kDouble);
  return out;
}

Corrupted Objective::noise_every_row(const at::Tensor& x0, at::Generator& gen) const {
  Corrupted out = clean(x0.size(0), x0.size(1));
  at::Tensor t = at::randint(0, schedule_.steps(), {x0.size(0)}, gen, at::TensorOptions().dtype(at::kLong));
  add_noise(x0, t, gen, out);
  return out;
}

void Objective::check_space(const TokenGeometry& g, const std::string& tokenizer) const {
  if (g.discrete() == discrete()) return;
  if (discrete())
    throw Error(fmt::format("the {} objective trains on discrete codes and the tokenizer {} gives continuous tokens: "
                            "give a VQ tokenizer (--tokenizer vq.h5, made by mdx-vq-fit)",
                            name(), tokenizer));
  throw Error(fmt::format("the tokenizer {} gives discrete codes; the {} objective trains on continuous tokens "
                          "(a VAE's, PCA's or pixels; mage trains on codes)",
                          tokenizer, name()));
}

void Objective::add_noise(const at::Tensor& x0, const at::Tensor& t, at::Generator& gen, Corrupted& out) const {
  const int64_t B = x0.size(0);
  if (!x0.is_floating_point()) {  // codes: nothing to noise
    if ((t >= 0).any().item<bool>()) throw Error(fmt::format("the {} objective does not noise its codes", name()));
    out.xt = x0;
    out.t = t.clone();
    out.time_index = at::zeros_like(t);
    return;
  }
  at::Tensor noisy = t >= 0;
  at::Tensor tc = t.clamp_min(0);
  if (noises_in_latent()) {
    // l-DAE: noise lives in the latent; the residual outside it is removed from the input.
    at::Tensor z = latent_encode(x0);
    out.eps = at::randn(z.sizes(), gen, z.options());
    at::Tensor zt = schedule_.add_noise(z, tc, out.eps);
    out.xt = at::where(noisy.view({B, 1, 1}), latent_decode(zt), x0);
  } else {
    out.eps = at::randn(x0.sizes(), gen, x0.options());
    out.xt = at::where(noisy.view({B, 1, 1}), schedule_.add_noise(x0, tc, out.eps), x0);
  }
  out.eps = out.eps * noisy.view({B, 1, 1}).to(out.eps.scalar_type());
  out.t = t.clone();
  out.time_index = at::where(noisy, t + 1, at::zeros_like(t));
}

at::Tensor Objective::latent_encode(const at::Tensor&) const {
  throw Error(fmt::format("the {} objective has no latent", name()));
}

at::Tensor Objective::latent_decode(const at::Tensor&) const {
  throw Error(fmt::format("the {} objective has no latent", name()));
}

Corrupted Objective::apply(const at::Tensor& x0, int64_t t, double ratio, at::Generator& gen) const {
  const int64_t B = x0.size(0), L = x0.size(1);
  if (t >= schedule_.steps()) throw UsageError(fmt::format("timestep {} is outside [0, {}]", t, schedule_.steps() - 1));
  if (!(ratio >= 0.0 && ratio <= 1.0)) throw UsageError(fmt::format("mask ratio {} is outside [0, 1]", ratio));
  Corrupted out = clean(B, L);
  if (ratio > 0) {
    MaskDraw m = draw_mask(B, L, ratio, gen);
    out.masked = m.masked;
    out.dropped = m.dropped;
  }
  out.representation = at::full({B}, t < 0 && ratio > 0, at::kBool);
  out.mask_ratio = at::full({B}, ratio, at::kDouble);
  add_noise(x0, at::full({B}, t, at::kLong), gen, out);
  return out;
}

at::Tensor token_mse(const at::Tensor& pred, const at::Tensor& target) {
  return (pred.to(at::kFloat) - target.to(at::kFloat)).pow(2).mean(-1);
}

at::Tensor batch_mean(const at::Tensor& values, const at::Tensor& select_all, const RowRange& r) {
  at::Tensor local = select_all.slice(0, r.begin, r.end).to(values.device()).to(values.scalar_type());
  return (values * local).sum() / select_all.sum().clamp_min(1).to(values.device()).to(values.scalar_type());
}

}  // namespace mdx
