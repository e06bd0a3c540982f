// MAE (He et al. 2021): clean input, per sample int(L (1 - ratio)) tokens kept (75 % masked, or a
// MAGE or LMD ratio under --mask-policy), time index 0; x0-MSE on the masked tokens, optionally of
// the normalized-pixel target (x - mean)/sqrt(var + 1e-6) per token.
#include <CLI/CLI.hpp>
#include <torch/torch.h>

#include "mdx/corrupt/objectives/objectives.h"
#include "mdx/model/autoencoder.h"

namespace mdx {

namespace {

struct MaeParams : ObjectiveParams {
  bool norm_pix = false;

  void add_to(CLI::App& app, bool training) override {
    if (training) app.add_flag("--norm-pix", norm_pix, "MAE: predict per-patch normalized pixels");
  }
  void save(std::map<std::string, std::string>& c) const override { c["norm_pix"] = norm_pix ? "1" : "0"; }
  void load(const std::map<std::string, std::string>& c) override { norm_pix = config_flag(c, "norm_pix", norm_pix); }
};

class Mae : public Objective {
 public:
  Mae(const ObjectiveSettings& s, const MaeParams& p) : Objective(s), p_(p) {}
  std::string name() const override { return "mae"; }
  bool masks() const override { return true; }
  bool noises() const override { return false; }
  double default_ema(bool, int64_t) const override { return 0; }  // MAE keeps no EMA
  // main_pretrain.py: RandomResizedCrop(scale=(0.2, 1.0)) and RandomHorizontalFlip.
  Augment default_augment(bool) const override {
    Augment a;
    a.crop = a.flip = true;
    a.area_min = 0.2;
    return a;
  }

  Corrupted sample(const at::Tensor& x0, int64_t step, int64_t total, at::Generator& gen) const override {
    const int64_t B = x0.size(0), L = x0.size(1);
    Corrupted out = clean(B, L);
    // Drawn as by the noising objectives, so that one seed gives every objective the same masks.
    at::Tensor t = at::randint(0, schedule_.steps(), {B}, gen, at::TensorOptions().dtype(at::kLong));
    const double ratio = mask_ratio(settings_.mask_policy, settings_.mask_ratio, step, total, gen);
    MaskDraw m = draw_mask(B, L, ratio, gen);
    out.masked = m.masked;
    out.dropped = m.dropped;
    out.mask_ratio.fill_(ratio);
    t.fill_(-1);
    add_noise(x0, t, gen, out);
    return out;
  }

  Loss loss(const Corrupted& batch, const at::Tensor& x0, const ModelOutput& out, RowRange rows) const override {
    if (rows.end < 0) rows.end = batch.masked.size(0);
    at::Tensor target = x0;
    if (p_.norm_pix) {
      at::Tensor mean = x0.mean(-1, true), var = x0.var(-1, true, true);
      target = (x0 - mean) / (var + 1e-6).sqrt();
    }
    at::Tensor term = batch_mean(token_mse(out.x0, target), batch.masked, rows);
    Loss loss;
    loss.total = term;
    loss.terms = {{"x0_masked", term}};
    return loss;
  }

 private:
  MaeParams p_;
};

}  // namespace

ObjectiveEntry mae_objective() {
  return {"mae", "MAE: clean input, 75 % of the tokens masked (or a MAGE / LMD ratio), x0 of the masked ones",
          ScheduleKind::Cosine, [] { return std::make_unique<MaeParams>(); },
          [](const ObjectiveSettings& s, const ObjectiveParams& p) -> std::unique_ptr<Objective> {
            return std::make_unique<Mae>(s, dynamic_cast<const MaeParams&>(p));
          }};
}

}  // namespace mdx
