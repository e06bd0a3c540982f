// UMD (Hansen-Estruch et al. 2024, "Unified Auto-Encoding with Masked Diffusion"): each batch is
// split; a share r takes the representation step (clean x_0, time index 0, 75 % masked: an MAE
// step), the rest the noisy step (t ~ U{0..T-1}, x_t, time index t + 1, 37.5 % masked).
// Loss = (1 - r) 1/2 [eps-MSE on visible tokens + x0-MSE on masked tokens] of the noisy rows
//        + r [x0-MSE on masked tokens] of the representation rows, int(B r) of the B rows, the
//        two weighed by the realised share (small-vision's n_no_noise / B);
// a noisy step without a mask takes the plain mean of its eps- and x0-MSE over all tokens.
#include <CLI/CLI.hpp>
#include <fmt/format.h>
#include <torch/torch.h>

#include "mdx/corrupt/objectives/objectives.h"
#include "mdx/model/autoencoder.h"
#include "mdx/util/error.h"

namespace mdx {

namespace {

struct UmdParams : ObjectiveParams {
  double noisy_mask_ratio = 0.375;   // the noisy step's mask
  double representation_share = 0.5; // r

  void add_to(CLI::App& app, bool training) override {
    app.add_option("--noisy-mask-ratio", noisy_mask_ratio, "UMD's noisy-step mask ratio")->capture_default_str();
    if (training)
      app.add_option("--rep-share", representation_share, "UMD's share r of representation steps (and loss weight)")
          ->capture_default_str();
  }
  void validate() const override {
    if (!(noisy_mask_ratio >= 0 && noisy_mask_ratio <= 1)) throw UsageError("--noisy-mask-ratio must lie in [0, 1]");
    if (!(representation_share >= 0 && representation_share <= 1)) throw UsageError("--rep-share must lie in [0, 1]");
  }
  void save(std::map<std::string, std::string>& c) const override {
    c["noisy_mask_ratio"] = fmt::format("{}", noisy_mask_ratio);
    c["rep_share"] = fmt::format("{}", representation_share);
  }
  void load(const std::map<std::string, std::string>& c) override {
    noisy_mask_ratio = config_double(c, "noisy_mask_ratio", noisy_mask_ratio);
    representation_share = config_double(c, "rep_share", representation_share);
  }
};

class Umd : public Objective {
 public:
  Umd(const ObjectiveSettings& s, const UmdParams& p) : Objective(s), p_(p) {}
  std::string name() const override { return "umd"; }
  bool masks() const override { return true; }
  bool noises() const override { return true; }
  std::string generator() const override { return "diffusion"; }
  double noisy_mask_ratio() const override { return p_.noisy_mask_ratio; }
  // small-vision's ae.py: learned pos_embedding / dec_pos_embedding, one conditioning vector.
  bool learned_positions() const override { return true; }
  bool shared_condition() const override { return true; }
  // small-vision: config.ema_decay = 1e-4 * batch / 256 with use_labels only, an optax step size
  // (new = step * params + (1 - step) * ema).
  double default_ema(bool labelled, int64_t batch) const override {
    return labelled ? std::max(0.0, 1 - 1e-4 * static_cast<double>(batch) / 256) : 0;
  }
  // small-vision: decode_jpeg_and_inception_crop(area_min=80)|flip_lr; its generation fine-tune
  // (labels on) runs with area_min=95.
  Augment default_augment(bool labelled) const override {
    Augment a;
    a.crop = a.flip = true;
    a.area_min = labelled ? 0.95 : 0.8;
    return a;
  }

  Corrupted sample(const at::Tensor& x0, int64_t step, int64_t total, at::Generator& gen) const override {
    const int64_t B = x0.size(0), L = x0.size(1);
    Corrupted out = clean(B, L);
    at::Tensor t = at::randint(0, schedule_.steps(), {B}, gen, at::TensorOptions().dtype(at::kLong));
    const int64_t rep = umd_representation_rows(B, p_.representation_share);
    const double rep_ratio = mask_ratio(settings_.mask_policy, settings_.mask_ratio, step, total, gen);
    MaskDraw a = draw_mask(rep, L, rep_ratio, gen);
    MaskDraw b = mae_mask(B - rep, L, p_.noisy_mask_ratio, gen);
    out.masked = at::cat({a.masked, b.masked});
    out.dropped = at::cat({a.dropped, b.dropped});
    out.representation.slice(0, 0, rep).fill_(true);
    out.mask_ratio.slice(0, 0, rep).fill_(rep_ratio);
    out.mask_ratio.slice(0, rep).fill_(p_.noisy_mask_ratio);
    t.slice(0, 0, rep).fill_(-1);
    add_noise(x0, t, gen, out);
    return out;
  }

  Loss loss(const Corrupted& batch, const at::Tensor& x0, const ModelOutput& out, RowRange rows) const override {
    const int64_t B = batch.masked.size(0), L = batch.masked.size(1);
    if (rows.end < 0) rows.end = B;
    const at::Tensor& masked = batch.masked;  // whole batch, [B, L]
    at::Tensor rep = batch.representation.unsqueeze(1).expand({B, L});
    at::Tensor noisy = ~rep;
    at::Tensor ex = token_mse(out.x0, x0);
    at::Tensor ee = token_mse(out.eps, batch.eps.slice(0, rows.begin, rows.end).to(x0.device()));
    at::Tensor rep_term = batch_mean(ex, masked & rep, rows);
    // With no mask in the noisy rows, both predictions are scored on every token.
    const bool noisy_masked = (masked & noisy).any().item<bool>();
    at::Tensor eps_term = batch_mean(ee, noisy_masked ? (~masked & noisy) : noisy, rows);
    at::Tensor x0_term = batch_mean(ex, noisy_masked ? (masked & noisy) : noisy, rows);
    // small-vision weighs the two steps by the realised share n_rep / B, not the configured r
    // (12 of 256 rows at r = 0.05: 0.046875).
    const double r = static_cast<double>(batch.representation.sum().item<int64_t>()) / static_cast<double>(B);
    Loss loss;
    loss.total = (1 - r) * 0.5 * (eps_term + x0_term) + r * rep_term;
    loss.terms = {{"eps_visible", eps_term}, {"x0_masked", x0_term}, {"x0_representation", rep_term}};
    return loss;
  }

 private:
  UmdParams p_;
};

}  // namespace

ObjectiveEntry umd_objective() {
  return {"umd", "UMD: representation steps (clean, 75 % masked) mixed with noisy steps (x_t, 37.5 % masked)",
          ScheduleKind::Cosine, [] { return std::make_unique<UmdParams>(); },
          [](const ObjectiveSettings& s, const ObjectiveParams& p) -> std::unique_ptr<Objective> {
            return std::make_unique<Umd>(s, dynamic_cast<const UmdParams&>(p));
          },
          MaskPolicy::Fixed,
          ScheduleKind::Linear};  // latent UMD: LDM's linear beta schedule in a VAE's latent
}

}  // namespace mdx
