#include "mdx/train/train.h"

#include <CLI/CLI.hpp>
#include <fmt/format.h>
#include <torch/torch.h>

#include "mdx/io/grid.h"
#include "mdx/io/image_table.h"
#include "mdx/model/autoencoder.h"
#include "mdx/tokenize/patches.h"
#include "mdx/tokenize/tokenizer.h"
#include "mdx/util/error.h"
#include "mdx/util/log.h"
#include "mdx/util/torch_compat.h"

namespace mdx {

void LabelOptions::add_to(CLI::App& app) {
  app.add_flag("--class-cond", class_cond, "condition on the table's labels (with a null class for guidance)");
  app.add_option("--class-dropout", class_dropout, "probability that a label is replaced by the null class")
      ->capture_default_str();
}

void LabelOptions::validate() const {
  if (!(class_dropout >= 0 && class_dropout < 1)) throw UsageError("--class-dropout must lie in [0, 1)");
}

void TrainOptions::add_to(CLI::App& app) {
  run.add_to(app);
  objective.add_to(app, true);
  labels.add_to(app);
  model.add_to(app);
  optim.add_to(app);
  augment.add_to(app);
  app.add_option("--posterior", posterior,
                 "with a VAE tokenizer: train on the posterior mean, or on a draw from it at each step "
                 "(auto: a draw for the noising objectives, as LDM and DiT train; the mean for mae)")
      ->capture_default_str()
      ->check(CLI::IsMember({"auto", "mean", "sample"}));
}

namespace {

// A masked-diffusion auto-encoder under one objective, as the frame trains it.
class DiffusionLearner : public Learner {
 public:
  explicit DiffusionLearner(const TrainOptions& opt) : opt_(opt) {
    opt.labels.validate();
    objective_ = opt.objective.make();
  }

  std::string name() const override { return objective_->name(); }
  std::string model_name() const override { return model_cfg_.preset; }
  std::vector<std::pair<std::string, std::string>> reads() const override {
    return {{opt_.objective.tokenizer, "--tokenizer"}};
  }
  // The table's latents (a VAE's posterior) or codes (a VQ's) stand for its images when they are
  // those of --tokenizer (given again on --resume, as a requeue does).
  bool reads_latents(const ImageTable& table) override {
    const bool posterior = !table.posterior_identity().empty();
    const std::string& made_by = posterior ? table.posterior_identity() : table.codes_identity();
    if (opt_.objective.tokenizer.empty() || made_by.empty()) return false;
    given_ = load_tokenizer_file(opt_.objective.tokenizer);
    if (given_->identity() != made_by) return false;
    if (!posterior) check_code_count(table);
    log("reading the table's pre-extracted {} of '{}' (no encoding)", posterior ? "latents" : "codes",
        opt_.objective.tokenizer);
    return true;
  }
  double default_ema(int64_t batch) const override {
    return objective_->default_ema(opt_.labels.class_cond, batch);
  }
  Augment default_augment() const override { return objective_->default_augment(opt_.labels.class_cond); }
  torch::nn::Module& module() override { return *model_; }

  void build(const ImageTable& table, int64_t num_classes, const CheckpointState* start, bool fine_tune,
             at::Device device, Provenance& prov) override {
    device_ = device;
    table_size_ = table.size();
    if (opt_.labels.class_cond && !table.has_labels())
      throw Error("--class-cond needs labels, and '" + opt_.run.inputs[0] + "' has none");
    model_cfg_ = opt_.model;
    if (start) adopt_architecture(*start);
    std::shared_ptr<const Tokenizer> tokenizer = given_tokenizer(start, fine_tune, prov);
    // In a learned latent (a VAE's) an objective may have another default schedule (UMD: linear).
    if (tokenizer && tokenizer->has_posterior()) objective_ = opt_.objective.make(true);
    objective_->bind(tokenizer, model_cfg_.patch);
    const TokenGeometry g = objective_->tokenizer()->geometry(table.height(), table.width(), table.channels());
    objective_->check_space(g, opt_.objective.tokenizer.empty() ? objective_->tokenizer()->kind()
                                                                : "'" + opt_.objective.tokenizer + "'");
    model_cfg_.set_geometry(g);
    if (auto latent = objective_->latent()) latent->geometry(table.height(), table.width(), table.channels());
    model_cfg_.num_classes = opt_.labels.class_cond ? num_classes : 0;
    // The objective's own model form (UMD's learned positions and one conditioning vector, shared
    // when the decoder is as wide as the encoder, as UMD's is; MAGE's learned positions and dropout).
    if (model_cfg_.positions == "auto") model_cfg_.positions = objective_->learned_positions() ? "learned" : "sincos";
    if (model_cfg_.dropout < 0) model_cfg_.dropout = objective_->default_dropout();
    if (model_cfg_.condition == "auto")
      model_cfg_.condition = objective_->shared_condition() &&
                                     (model_cfg_.decoder_dim == 0 || model_cfg_.decoder_dim == model_cfg_.dim)
                                 ? "shared"
                                 : "separate";
    model_cfg_.timesteps = objective_->settings().steps;
    model_cfg_.resolve();
    sample_posterior_ = objective_->tokenizer()->has_posterior() &&
                        (opt_.posterior == "sample" || (opt_.posterior == "auto" && objective_->noises()));
    model_ = MaskedDiffusionAutoencoder(model_cfg_);
    model_->to(device_);
  }

  std::string describe() const override {
    int64_t n = 0;
    for (const auto& p : model_->parameters()) n += p.numel();
    return fmt::format("{}: {} images {}x{}x{}, {} tokens of {} values ({}); model {} ({:.1f}M parameters: {} wide, "
                       "{}+{} blocks)",
                       objective_->name(), table_size_, model_cfg_.height, model_cfg_.width, model_cfg_.channels,
                       model_cfg_.tokens(), model_cfg_.token_dim(), objective_->tokenizer()->describe(),
                       model_cfg_.preset, n / 1e6, model_cfg_.dim, model_cfg_.depth, model_cfg_.decoder_depth);
  }

  Loss loss(const BatchRows& batch, int64_t step, int64_t total, at::Generator& gen, RowRange rows, bool bf16,
            StepWork* work) override {
    Batch b = make_batch(batch, step, total, gen);
    if (work) count_work(b, *work);
    // Dropout draws from the global generators: seeded from the run's, so that a resumed run and
    // every process drop as an uninterrupted one does.
    if (model_cfg_.dropout > 0)
      compat::seed_global(at::randint(0, int64_t{1} << 62, {1}, gen, at::TensorOptions().dtype(at::kLong)).item<int64_t>());
    // Every process corrupts the whole batch alike (same generator) and runs the model on its rows.
    ModelOutput out;
    {
      compat::Autocast autocast(device_, bf16);
      out = forward(b, rows);
    }
    return objective_->loss(b.corrupted, b.x0.slice(0, rows.begin, rows.end).to(device_), out, rows);
  }

  // Reconstructions of the fixed images: clean, corrupted input (masks marked), x0 prediction.
  Grid preview(const at::Tensor& images, const at::Tensor& labels, int64_t step, int64_t total,
               std::string& columns) override {
    at::NoGradGuard ng;
    model_->eval();
    at::Generator g = compat::cpu_generator(12345);
    Batch b;
    b.x0 = objective_->tokenizer()->encode(images);
    b.corrupted = objective_->sample(b.x0, step, total, g);
    if (model_cfg_.num_classes > 0) b.labels = labels;
    ModelOutput out = forward(b);
    model_->train();
    const TokenGeometry geometry = model_cfg_.geometry();
    at::Tensor x0_hat = objective_->predicted_x0(b.corrupted, out).to(at::kCPU);
    if (x0_hat.is_floating_point()) x0_hat = x0_hat.to(at::kFloat);
    // Visible tokens shown as given, masked ones as predicted (codes: [B, L], no value axis).
    at::Tensor where_masked = b.corrupted.xt.dim() == 3 ? b.corrupted.masked.unsqueeze(-1) : b.corrupted.masked;
    at::Tensor pasted = at::where(where_masked, x0_hat, b.corrupted.xt);
    std::vector<at::Tensor> cols = {b.x0, b.corrupted.xt, x0_hat, pasted};
    std::vector<at::Tensor> cells, marks;
    at::Tensor none = at::zeros_like(b.corrupted.masked);
    for (size_t k = 0; k < cols.size(); ++k) {
      cells.push_back(to_uint8(objective_->tokenizer()->decode(cols[k], geometry)));
      marks.push_back(k == 1 ? b.corrupted.masked : none);
    }
    at::Tensor drops = at::stack({none, b.corrupted.dropped, none, none}, 1);
    // Each column's label drawn above it and its description in the PNG's mdx_columns text.
    const std::pair<const char*, const char*> described[] = {
        {"clean", "clean"},
        {"input", "corrupted input (masked patches coloured)"},
        {"x0 predicted", "x0 prediction"},
        {"pasted", "prediction pasted into the masked patches"}};
    GridLabels drawn;
    columns.clear();
    for (const auto& [label, description] : described) {
      drawn.columns.push_back(label);
      columns += (columns.empty() ? "" : "; ") + std::string(description);
    }
    return render_grid(at::stack(cells, 1), at::stack(marks, 1), drops, geometry.cell_h(), 0, drawn);
  }

  // The model's and the objective's configuration (the frame adds the optimizer's).
  std::map<std::string, std::string> config() const override {
    std::map<std::string, std::string> c = model_cfg_.to_map();
    for (const auto& [k, v] : objective_->config()) c[k] = v;
    c["class_dropout"] = fmt::format("{}", opt_.labels.class_dropout);
    if (objective_->tokenizer()->has_posterior()) c["posterior"] = sample_posterior_ ? "sample" : "mean";
    c["tokenizer_identity"] = objective_->tokenizer()->identity();
    if (auto latent = objective_->latent()) c["latent_identity"] = latent->identity();
    return c;
  }

  void save_into(CheckpointState& s) const override {
    if (!opt_.objective.tokenizer.empty()) s.config["tokenizer_file"] = opt_.objective.tokenizer;
    s.tokenizer = objective_->tokenizer();
    s.latent = objective_->latent();
  }

 private:
  struct Batch {
    at::Tensor x0, labels;
    Corrupted corrupted;
  };

  // A run continued (--resume) or fine-tuned (--init) keeps the architecture it started with.
  void adopt_architecture(const CheckpointState& s) {
    ModelConfig prev = ModelConfig::from_map(s.config);
    model_cfg_.preset = prev.preset, model_cfg_.patch = prev.patch, model_cfg_.dim = prev.dim;
    model_cfg_.depth = prev.depth, model_cfg_.heads = prev.heads, model_cfg_.decoder_dim = prev.decoder_dim;
    model_cfg_.decoder_depth = prev.decoder_depth, model_cfg_.decoder_heads = prev.decoder_heads;
    model_cfg_.mlp_ratio = prev.mlp_ratio, model_cfg_.cls_tokens = prev.cls_tokens;
    if (model_cfg_.dropout < 0) model_cfg_.dropout = prev.dropout;
    model_cfg_.positions = prev.positions, model_cfg_.condition = prev.condition;
  }

  // The tokenizer the objective binds to: --tokenizer; else, continuing a run, the one it
  // recorded (the latent where it noises in one); else, fine-tuning, the token space the model
  // worked in; else none (pixel patches of --patch). Checkpoints that carry none are read as pixels.
  std::shared_ptr<const Tokenizer> given_tokenizer(const CheckpointState* start, bool fine_tune, Provenance& prov) {
    const std::string& path = opt_.objective.tokenizer;
    if (!path.empty()) {
      prov.add_input(path);
      return given_ ? given_ : load_tokenizer_file(path);
    }
    if (start && !fine_tune) return start->latent ? start->latent : start->tokenizer;
    if (start) return start->tokenizer;
    return nullptr;
  }

  // The table's codes are as many per image as --tokenizer's grid has cells; their ids are checked
  // against its codebook (code_vocabulary) as TrainingData loads them.
  void check_code_count(const ImageTable& table) {
    const TokenGeometry g = given_->geometry(table.height(), table.width(), table.channels());
    if (table.code_tokens() != g.tokens())
      throw Error(fmt::format("the table's pre-extracted codes are {} per image; '{}' makes {}", table.code_tokens(),
                              opt_.objective.tokenizer, g.tokens()));
    code_vocabulary_ = g.vocabulary;
  }
  int64_t code_vocabulary() const override { return code_vocabulary_; }

  // The clean tokens of a batch: the tokenizer's (the posterior mean), a draw from a VAE's
  // posterior (z = mean + exp(logvar / 2) eps, drawn for the whole batch), or the same from the
  // table's pre-extracted latents; or the table's pre-extracted codes.
  at::Tensor clean_tokens(const BatchRows& batch, at::Generator& gen) const {
    if (batch.codes.defined()) return batch.codes;
    at::Tensor mean = batch.mean, logvar = batch.logvar;
    if (!mean.defined()) {
      if (!sample_posterior_) return objective_->tokenizer()->encode(batch.images);
      std::tie(mean, logvar) = objective_->tokenizer()->moments(batch.images);
    }
    if (!sample_posterior_) return mean;
    return mean + at::exp(0.5 * logvar) * at::randn(mean.sizes(), gen);
  }

  Batch make_batch(const BatchRows& batch, int64_t step, int64_t total, at::Generator& gen) {
    const at::Tensor& labels = batch.labels;
    Batch b;
    b.x0 = clean_tokens(batch, gen);
    b.corrupted = objective_->sample(b.x0, step, total, gen);
    if (model_cfg_.num_classes > 0) {
      b.labels = labels;
      at::Tensor drop = at::rand({labels.size(0)}, gen) < opt_.labels.class_dropout;
      // Representation-step rows (UMD's clean, masked rows) are label-free: small-vision's
      // no-noise call passes no label, which its model turns into the null class.
      drop |= b.corrupted.representation;
      b.labels = at::where(drop, at::full_like(b.labels, model_cfg_.num_classes), b.labels);
    }
    return b;
  }

  // The model on rows [r.begin, r.end) of the batch (all rows by default).
  ModelOutput forward(const Batch& b, RowRange r = {}) {
    if (r.end < 0) r.end = b.corrupted.xt.size(0);
    auto rows = [&](const at::Tensor& t) { return t.slice(0, r.begin, r.end).to(device_); };
    ModelInput in;
    in.tokens = rows(b.corrupted.xt);
    in.time_index = rows(b.corrupted.time_index);
    if (b.labels.defined()) in.labels = rows(b.labels);
    in.dropped = rows(b.corrupted.dropped);
    in.masked = rows(b.corrupted.masked);
    return model_->forward(in);
  }

  // Encoder tokens and model FLOPs (forward + backward = 3 forward) of a batch, for --benchmark.
  void count_work(const Batch& b, StepWork& work) const {
    at::Tensor kept = (~b.corrupted.dropped).sum(1).cpu();
    auto k = kept.accessor<int64_t, 1>();
    for (int64_t i = 0; i < kept.size(0); ++i) {
      work.encoder_tokens += k[i];
      work.flops += 3 * model_->forward_flops(1, k[i]);
    }
  }

  const TrainOptions& opt_;
  std::unique_ptr<Objective> objective_;
  ModelConfig model_cfg_;
  at::Device device_{at::kCPU};
  MaskedDiffusionAutoencoder model_{nullptr};
  std::shared_ptr<const Tokenizer> given_;  // --tokenizer, once read
  bool sample_posterior_ = false;           // --posterior, resolved
  int64_t code_vocabulary_ = 0;             // reading the table's codes: --tokenizer's codebook size
  int64_t table_size_ = 0;
};

}  // namespace

std::optional<TrainBenchmark> train(const TrainOptions& opt, Provenance& prov) {
  DiffusionLearner learner(opt);
  return run_training(learner, opt.run, opt.optim, opt.augment, prov);
}

}  // namespace mdx
