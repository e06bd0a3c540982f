// MAGE (Li et al. 2022, "MAGE: MAsked Generative Encoder to Unify Representation Learning and Image
// Synthesis"; LTH14/mage's models_mage.py) on the codes of a VQ tokenizer: one mask ratio per batch
// from a normal (mu 0.55, sigma 0.25) truncated to [0.5, 1.0]; ceil(L ratio) codes masked, the
// ceil(0.5 L) of them with the lowest noise dropped from the encoder, the rest given to it as the
// [MASK] id; in the decoder every masked position holds the mask token; an MLM head scores the
// codes; cross-entropy with label smoothing 0.1 on the masked positions only:
//   (1 - s) (-log p_target) + s mean_k (-log p_k), averaged over the masked positions of the batch.
// Generation: MaskGIT's iterative decoding (mdx-sample, eval/maskgit_sampler.h).
//
// Where the model differs from MAGE's ViT (model/autoencoder.h): its blocks are the shared
// adaLN-Zero blocks, whose conditioning (a constant time index, and the class with --class-cond)
// replaces MAGE's fake class-label token; the buffer token is the mean of its CLS outputs.
// MAGE-C's contrastive term is not implemented (its paper gives no training code).
#include <CLI/CLI.hpp>
#include <fmt/format.h>
#include <torch/torch.h>

#include "mdx/corrupt/objectives/objectives.h"
#include "mdx/model/autoencoder.h"
#include "mdx/tokenize/tokenizer.h"
#include "mdx/util/error.h"

namespace mdx {

at::Tensor label_smoothed_cross_entropy(const at::Tensor& logits, const at::Tensor& target, double smoothing) {
  at::Tensor logp = logits.to(at::kFloat).log_softmax(-1);
  at::Tensor nll = -logp.gather(-1, target.to(at::kLong).unsqueeze(-1)).squeeze(-1);
  at::Tensor smooth = -logp.mean(-1);
  return (1.0 - smoothing) * nll + smoothing * smooth;
}

namespace {

struct MageParams : ObjectiveParams {
  double label_smoothing = 0.1;  // MAGE's LabelSmoothingCrossEntropy(smoothing=0.1)

  void add_to(CLI::App& app, bool training) override {
    if (training)
      app.add_option("--label-smoothing", label_smoothing, "MAGE: label smoothing of its cross-entropy")
          ->capture_default_str();
  }
  void validate() const override {
    if (!(label_smoothing >= 0 && label_smoothing < 1)) throw UsageError("--label-smoothing must lie in [0, 1)");
  }
  void save(std::map<std::string, std::string>& c) const override {
    c["label_smoothing"] = fmt::format("{}", label_smoothing);
  }
  void load(const std::map<std::string, std::string>& c) override {
    label_smoothing = config_double(c, "label_smoothing", label_smoothing);
  }
};

class Mage : public Objective {
 public:
  Mage(const ObjectiveSettings& s, const MageParams& p) : Objective(s), p_(p) {}
  std::string name() const override { return "mage"; }
  bool masks() const override { return true; }
  bool noises() const override { return false; }
  bool discrete() const override { return true; }
  std::string generator() const override { return "maskgit"; }
  double default_ema(bool, int64_t) const override { return 0; }  // MAGE keeps no EMA
  // BertEmbeddings' learned positions; dropout 0.1 in the embedding and the blocks.
  bool learned_positions() const override { return true; }
  double default_dropout() const override { return 0.1; }
  // main_pretrain.py: RandomResizedCrop(scale=(0.2, 1.0)) and RandomHorizontalFlip.
  Augment default_augment(bool) const override {
    Augment a;
    a.crop = a.flip = true;
    a.area_min = 0.2;
    return a;
  }

  void bind(std::shared_ptr<const Tokenizer> given, int64_t) override {
    if (!given)
      throw UsageError("--objective mage trains on discrete codes: give a VQ tokenizer (--tokenizer vq.h5, made by "
                       "mdx-vq-fit, or a VQGAN as TorchScript)");
    tokenizer_ = std::move(given);  // its kind is checked against the images' geometry (check_space)
  }

  Corrupted sample(const at::Tensor& x0, int64_t step, int64_t total, at::Generator& gen) const override {
    const int64_t B = x0.size(0), L = x0.size(1);
    Corrupted out = clean(B, L);
    const double ratio = mask_ratio(settings_.mask_policy, settings_.mask_ratio, step, total, gen);
    MaskDraw m = mage_mask(B, L, ratio, gen);
    out.masked = m.masked;
    out.dropped = m.dropped;
    out.mask_ratio.fill_(ratio);
    add_noise(x0, at::full({B}, -1, at::kLong), gen, out);
    return out;
  }

  Loss loss(const Corrupted& batch, const at::Tensor& x0, const ModelOutput& out, RowRange rows) const override {
    if (rows.end < 0) rows.end = batch.masked.size(0);
    if (!out.logits.defined()) throw Error("the mage objective needs a model of codes (logits)");
    at::Tensor per_code = label_smoothed_cross_entropy(out.logits, x0, p_.label_smoothing);  // [b, L]
    at::Tensor term = batch_mean(per_code, batch.masked, rows);
    Loss loss;
    loss.total = term;
    loss.terms = {{"ce_masked", term}};
    return loss;
  }

  // The most likely code at every position.
  at::Tensor predicted_x0(const Corrupted&, const ModelOutput& out) const override {
    return out.logits.argmax(-1).to(at::kCPU);
  }

 private:
  MageParams p_;
};

}  // namespace

ObjectiveEntry mage_objective() {
  return {"mage",
          "MAGE: VQ codes (--tokenizer vq.h5), a truncated-normal ratio in [0.5, 1] masked, half dropped, "
          "label-smoothed cross-entropy on the masked codes",
          ScheduleKind::Cosine,
          [] { return std::make_unique<MageParams>(); },
          [](const ObjectiveSettings& s, const ObjectiveParams& p) -> std::unique_ptr<Objective> {
            return std::make_unique<Mage>(s, dynamic_cast<const MageParams&>(p));
          },
          MaskPolicy::Mage};
}

}  // namespace mdx
