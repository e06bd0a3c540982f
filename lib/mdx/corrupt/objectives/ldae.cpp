// l-DAE (Chen, Liu, Xie, He 2024, "Deconstructing Denoising Diffusion Models for Self-Supervised
// Learning"): noise added in the d-dim latent of a patch-wise PCA and projected back,
// V_d^T (gamma V_d (x - mu) + sigma eps) + mu, so the residual outside the latent is removed from
// the input; no mask; the model (on the pixel patches of the PCA's patch size) predicts the clean
// image, scored by lambda_t sum_i w_i r_i^2 with r = V (x0 - x0_hat) in the full PCA basis,
// w_i = 1 for the first d components and 0.1 for the rest.
#include <fmt/format.h>
#include <torch/torch.h>

#include "mdx/corrupt/objectives/objectives.h"
#include "mdx/model/autoencoder.h"
#include "mdx/tokenize/pca.h"
#include "mdx/util/error.h"

namespace mdx {

namespace {

constexpr double kRestWeight = 0.1;  // l-DAE's weight of the components beyond d

class Ldae : public Objective {
 public:
  explicit Ldae(const ObjectiveSettings& s) : Objective(s) {}
  std::string name() const override { return "ldae"; }
  bool masks() const override { return false; }
  bool noises() const override { return true; }
  // l-DAE crops the centre only: nothing on a table of the model's size.
  Augment default_augment(bool) const override { return Augment{}; }

  // The PCA tokenizer is where the noise lives; the model sees pixel patches of its patch size.
  void bind(std::shared_ptr<const Tokenizer> given, int64_t) override {
    auto pca = std::dynamic_pointer_cast<const PcaTokenizer>(given);
    if (!pca) throw UsageError("--objective ldae needs --tokenizer (made by mdx-pca-fit)");
    pca_ = pca;
    tokenizer_ = std::make_shared<PixelTokenizer>(pca_->patch);
  }
  void restore(std::shared_ptr<const Tokenizer> tokenizer, std::shared_ptr<const Tokenizer> latent) override {
    tokenizer_ = std::move(tokenizer);
    pca_ = std::dynamic_pointer_cast<const PcaTokenizer>(latent);
  }
  std::shared_ptr<const Tokenizer> latent() const override { return pca_; }
  bool noises_in_latent() const override { return true; }

  Corrupted sample(const at::Tensor& x0, int64_t, int64_t, at::Generator& gen) const override {
    return noise_every_row(x0, gen);
  }

  Loss loss(const Corrupted& batch, const at::Tensor& x0, const ModelOutput& out, RowRange rows) const override {
    const int64_t B = batch.masked.size(0), L = batch.masked.size(1);
    if (rows.end < 0) rows.end = B;
    const PcaTokenizer& pca = need_pca();
    at::Tensor basis = pca.components.to(at::kFloat).to(x0.device());  // [D, D]
    at::Tensor r = at::matmul(x0.to(at::kFloat) - out.x0.to(at::kFloat), basis.t());
    at::Tensor w = at::full({basis.size(0)}, kRestWeight, r.options());
    w.slice(0, 0, pca.dim).fill_(1.0);
    at::Tensor per_token = (r.pow(2) * w).sum(-1);  // [b, L]
    at::Tensor t = batch.t.slice(0, rows.begin, rows.end).clamp_min(0);
    at::Tensor lambda = NoiseSchedule::per_row(schedule_.weight(), t, 2, at::kFloat).to(x0.device());
    at::Tensor term = batch_mean(per_token * lambda, at::ones({B, L}, at::kBool), rows);
    Loss loss;
    loss.total = term;
    loss.terms = {{"weighted_residual", term}};
    return loss;
  }

 protected:
  at::Tensor latent_encode(const at::Tensor& x0) const override {
    const PcaTokenizer& pca = need_pca();
    if (x0.size(2) != pca.token_dim())
      throw Error(fmt::format("tokens have {} values, the PCA tokenizer expects {} (patch {}, {} channels)",
                              x0.size(2), pca.token_dim(), pca.patch, pca.channels));
    return pca.to_latent(x0);
  }
  at::Tensor latent_decode(const at::Tensor& z) const override { return need_pca().from_latent(z); }

 private:
  const PcaTokenizer& need_pca() const {
    if (!pca_) throw UsageError("the ldae objective noises in a PCA latent: give its tokenizer (--tokenizer pca.h5)");
    return *pca_;
  }
  std::shared_ptr<const PcaTokenizer> pca_;
};

}  // namespace

ObjectiveEntry ldae_objective() {
  return {"ldae", "l-DAE: noise in the latent of a patch-wise PCA (--tokenizer), clean image predicted",
          ScheduleKind::LdaeGamma, [] { return std::make_unique<ObjectiveParams>(); },
          [](const ObjectiveSettings& s, const ObjectiveParams&) -> std::unique_ptr<Objective> {
            return std::make_unique<Ldae>(s);
          }};
}

}  // namespace mdx
