#include "mdx/tokenize/fit.h"

#include <CLI/CLI.hpp>
#include <fmt/format.h>

#include <cmath>
#include <iostream>

#include "mdx/tokenize/patches.h"
#include "mdx/train/distributed.h"
#include "mdx/util/error.h"
#include "mdx/util/log.h"
#include "mdx/util/splitmix.h"
#include "mdx/util/torch_compat.h"

namespace mdx {

CoderFitOptions::CoderFitOptions() {
  // A small conv net on small images: Adam's usual 1e-3 at batch 128, no weight decay, no EMA.
  optim.batch = 128;
  optim.blr = 2e-3;
  optim.weight_decay = 0;
  optim.beta2 = 0.999;
  optim.warmup = 0.02;
  optim.ema = 0;
  optim.ema_help = "must stay 0: the tokenizer keeps its raw weights";
  run.save_every = 500;
  augment.augment = "none";
}

void CoderFitOptions::add_to(CLI::App& app) {
  run.add_to(app);
  app.add_option("--form", coder.form, "conv (a convolutional encoder/decoder) or patch (an MLP per patch)")
      ->capture_default_str();
  app.add_option("--stride", coder.stride, "conv: pixels per latent cell along each side (a power of 2)")
      ->capture_default_str();
  app.add_option("--patch", patch, "patch: the patch size (default 4), one token per patch");
  app.add_option("--latent", coder.latent, "values per latent cell (the VQ: the code vector's width)")
      ->capture_default_str();
  app.add_option("--width", coder.width, "conv: channels at full resolution (x2 per halving, at most x4); "
                                         "patch: the MLP's width")
      ->capture_default_str();
  app.add_option("--eval", eval, "a table (the test split) whose reconstruction is reported at the end");
  app.add_option("--eval-rows", eval_rows, "at most this many rows of --eval")->capture_default_str();
  optim.add_to(app);
  augment.add_to(app);
}

void CoderFitOptions::validate() {
  if (coder.form == "patch") coder.stride = patch > 0 ? patch : 4;
  else if (patch > 0) throw UsageError("--patch goes with --form patch; the conv form takes --stride");
  CoderConfig c = coder;
  c.channels = 1;  // known once the table is open
  c.validate();
  if (optim.ema != 0) throw UsageError("--ema: a fitted tokenizer keeps its raw weights; leave it at 0");
  if (eval_rows < 1) throw UsageError("--eval-rows must be at least 1");
}

void VaeFitOptions::add_to(CLI::App& app) {
  CoderFitOptions::add_to(app);
  app.add_option("--beta", beta, "weight of the KL term per image value (0: a plain auto-encoder)")
      ->capture_default_str();
}

void VqFitOptions::add_to(CLI::App& app) {
  CoderFitOptions::add_to(app);
  app.add_option("--codes", codes, "codebook size K")->capture_default_str();
  app.add_option("--commitment", commitment, "weight of the commitment loss ||z - sg(e)||^2")->capture_default_str();
  app.add_option("--decay", decay, "EMA decay of the codebook updates")->capture_default_str();
  app.add_option("--restart-every", restart_every,
                 "steps between restarts of the codes unused since the last one (0: never)")
      ->capture_default_str();
  app.add_option("--kmeans-iterations", kmeans_iterations,
                 "Lloyd iterations of the k-means that initializes the codebook on the first batch")
      ->capture_default_str();
}

std::string ReconstructionReport::to_json() const {
  std::string s = fmt::format(R"({{"rows": {}, "mse": {:.6g}, "psnr_db": {:.4f})", rows, mse, psnr);
  if (usage) s += fmt::format(R"(, "codebook_usage": {:.4f})", *usage);
  if (perplexity) s += fmt::format(R"(, "perplexity": {:.2f})", *perplexity);
  return s + "}";
}

ReconstructionReport reconstruction_report(const Tokenizer& tok, const ImageTable& table, int64_t max_rows) {
  ReconstructionReport r;
  const int64_t n = std::min(table.size(), max_rows), chunk = 1000;
  const TokenGeometry g = tok.geometry(table.height(), table.width(), table.channels());
  at::Tensor counts = g.discrete() ? at::zeros({g.vocabulary}, at::kDouble) : at::Tensor();
  double sum = 0;
  for (int64_t i = 0; i < n; i += chunk) {
    const int64_t m = std::min(chunk, n - i);
    at::Tensor images = at::empty({m, table.height(), table.width(), table.channels()}, at::kByte);
    table.read(i, m, images.data_ptr<uint8_t>(), nullptr);
    at::Tensor tokens = tok.encode(images);
    at::Tensor back = at::clamp(tok.decode(tokens, g), -1, 1);
    sum += (back.to(at::kDouble) - to_unit_range(images, at::kDouble)).pow(2).sum().item<double>();
    if (g.discrete()) counts += at::bincount(tokens.flatten(), {}, g.vocabulary).to(at::kDouble);
  }
  r.rows = n;
  r.mse = n > 0 ? sum / static_cast<double>(n * table.image_bytes()) : 0;
  r.psnr = r.mse > 0 ? 10 * std::log10(4.0 / r.mse) : INFINITY;
  if (g.discrete()) {
    r.usage = (counts > 0).sum().item<double>() / static_cast<double>(g.vocabulary);
    r.perplexity = perplexity(counts);
  }
  return r;
}

namespace {

// What both fits share: the architecture from the options (or the checkpoint continued), the
// configuration, the preview, the images the scale is measured on.
class CoderLearner : public Learner {
 public:
  CoderLearner(const CoderFitOptions& opt, std::string fit) : opt_(opt), fit_(std::move(fit)) {}

  std::string name() const override { return fit_; }
  std::string model_name() const override { return cfg_.form; }
  std::vector<std::pair<std::string, std::string>> reads() const override { return {{opt_.eval, "--eval"}}; }

  void build(const ImageTable& table, int64_t, const CheckpointState* start, bool, at::Device device,
             Provenance&) override {
    device_ = device;
    cfg_ = opt_.coder;
    cfg_.channels = table.channels();
    const std::string from = opt_.run.resume ? opt_.run.output : opt_.run.init;
    if (start) cfg_ = CoderConfig::from_map(start->config, "'" + from + "'");  // the frame checked its tool
    geometry_ = cfg_.geometry(table.height(), table.width(), table.channels());
    table_size_ = table.size();
    // The images the VAE's scale is measured on: the table's first rows, fixed for the run.
    const int64_t n = std::min<int64_t>(table.size(), 2048);
    sample_ = at::empty({n, table.height(), table.width(), table.channels()}, at::kByte);
    table.read(0, n, sample_.data_ptr<uint8_t>(), nullptr);
    make_model();
  }

  std::string describe() const override {
    int64_t n = 0;
    for (const auto& p : const_cast<CoderLearner*>(this)->module().parameters()) n += p.numel();
    return fmt::format("{}: {} images {}x{}x{} -> {}x{} cells of {} values; {} ({:.2f}M parameters){}", fit_,
                       table_size_, geometry_.height, geometry_.width, geometry_.channels, geometry_.grid_h,
                       geometry_.grid_w, geometry_.values, cfg_.describe(), n / 1e6, extra_description());
  }

  std::map<std::string, std::string> config() const override {
    std::map<std::string, std::string> c = cfg_.to_map();
    c["fit"] = fit_;
    c["height"] = std::to_string(geometry_.height);
    c["width"] = std::to_string(geometry_.width);
    c["channels"] = std::to_string(geometry_.channels);
    add_config(c);
    return c;
  }

  Grid preview(const at::Tensor& images, const at::Tensor&, int64_t, int64_t, std::string& columns) override {
    auto tok = tokenizer(false);
    std::vector<at::Tensor> cols = {images};
    GridLabels drawn{{"clean"}, {}};
    columns = "clean";
    for (PreviewColumn& c : preview_columns(*tok, images)) {
      cols.push_back(std::move(c.cells));
      drawn.columns.push_back(c.label);
      columns += "; " + c.description;
    }
    return render_grid(at::stack(cols, 1), at::Tensor(), at::Tensor(), geometry_.cell_h(), 0, drawn);
  }

  void save_into(CheckpointState& s) const override { s.tokenizer = tokenizer(true); }

 protected:
  virtual void make_model() = 0;
  virtual std::string extra_description() const { return ""; }
  virtual void add_config(std::map<std::string, std::string>& c) const = 0;
  // The tokenizer of the weights as they are now; `for_file`: as a checkpoint records it (the VAE
  // measures its latent scale, a pass over the sample images the preview does not need).
  virtual std::shared_ptr<const Tokenizer> tokenizer(bool for_file) const = 0;
  // A preview column after the clean images: its cells (uint8 images), the label drawn above it and
  // its description in the PNG's mdx_columns text.
  struct PreviewColumn {
    at::Tensor cells;
    std::string label, description;
  };
  virtual std::vector<PreviewColumn> preview_columns(const Tokenizer& tok, const at::Tensor& images) const = 0;

  // Rows `rows` of the batch as the network's input, on the device.
  at::Tensor input(const at::Tensor& images, RowRange rows) const {
    return images_to_nchw(images.slice(0, rows.begin, rows.end)).to(device_);
  }
  // Sums normalized by the whole batch's count, so that the frame's sum over processes is the
  // whole batch's mean.
  static at::Tensor per_value(const at::Tensor& sum, int64_t batch, int64_t values) {
    return sum / static_cast<double>(batch * values);
  }

  const CoderFitOptions& opt_;
  std::string fit_;
  CoderConfig cfg_;
  TokenGeometry geometry_;
  at::Device device_{at::kCPU};
  at::Tensor sample_;
  int64_t table_size_ = 0;
};

// ---- the KL auto-encoder

class VaeLearner : public CoderLearner {
 public:
  explicit VaeLearner(const VaeFitOptions& opt) : CoderLearner(opt, "vae"), beta_(opt.beta) {
    if (!(opt.beta >= 0) || !std::isfinite(opt.beta)) throw UsageError("--beta must be finite and >= 0");
  }
  torch::nn::Module& module() override { return *net_; }

  Loss loss(const BatchRows& batch, int64_t, int64_t, at::Generator& gen, RowRange rows, bool bf16,
            StepWork*) override {
    const at::Tensor& images = batch.images;
    const int64_t B = images.size(0);
    if (rows.end < 0) rows.end = B;
    // Drawn for the whole batch, so that every process draws alike and one equals many.
    at::Tensor eps = at::randn({B, cfg_.latent, geometry_.grid_h, geometry_.grid_w}, gen)
                         .slice(0, rows.begin, rows.end)
                         .to(device_);
    at::Tensor x = input(images, rows);
    at::Tensor mean, logvar, x_hat;
    {
      compat::Autocast autocast(device_, bf16);
      std::tie(mean, logvar) = split_moments(net_->encode(x).to(at::kFloat));
      at::Tensor z = beta_ > 0 ? reparameterize(mean, logvar, eps) : mean;
      x_hat = net_->decode(z).to(at::kFloat);
    }
    const int64_t values = geometry_.height * geometry_.width * geometry_.channels;
    Loss l;
    at::Tensor rec = per_value((x_hat - x).pow(2).sum(), B, values);
    at::Tensor kl = per_value(gaussian_kl(mean, logvar).sum(), B, values);
    l.total = beta_ > 0 ? rec + beta_ * kl : rec;
    l.terms = {{"mse", rec.detach()}, {"kl", kl.detach()}};
    return l;
  }

 protected:
  void make_model() override {
    net_ = CoderNet(cfg_, 2 * cfg_.latent);
    net_->to(device_);
  }
  std::string extra_description() const override {
    return beta_ > 0 ? fmt::format(", KL weight {}", beta_) : std::string(", no KL (an auto-encoder)");
  }
  void add_config(std::map<std::string, std::string>& c) const override { c["beta"] = fmt::format("{}", beta_); }

  // The scale that makes the latents of the sample images unit-variance: 1 / std of posterior
  // draws (the means for an auto-encoder), as Stable Diffusion's 0.18215 was measured.
  // (The preview's reconstructions do not depend on it: decode divides out what encode multiplies.)
  std::shared_ptr<const Tokenizer> tokenizer(bool for_file) const override {
    CoderNet net = clone_coder(net_, 2 * cfg_.latent);
    auto unscaled = std::make_shared<VaeTokenizer>(net, 1.0, beta_);
    if (!for_file) return unscaled;
    auto [mean, logvar] = unscaled->moments(sample_);
    at::Generator g = compat::cpu_generator(0x5ca1e);
    at::Tensor z = beta_ > 0 ? reparameterize(mean, logvar, at::randn(mean.sizes(), g)) : mean;
    const double sd = z.to(at::kDouble).std().item<double>();
    const double scale = sd > 1e-12 && std::isfinite(sd) ? 1.0 / sd : 1.0;
    return std::make_shared<VaeTokenizer>(net, scale, beta_);
  }

  std::vector<PreviewColumn> preview_columns(const Tokenizer& tok, const at::Tensor& images) const override {
    const auto& vae = static_cast<const VaeTokenizer&>(tok);
    auto [mean, logvar] = vae.moments(images);
    at::Generator g = compat::cpu_generator(12345);
    at::Tensor draw = reparameterize(mean, logvar, at::randn(mean.sizes(), g));
    return {{to_uint8(vae.decode(mean, geometry_)), "from mean", "reconstruction from the posterior mean"},
            {to_uint8(vae.decode(draw, geometry_)), "from a draw", "reconstruction from a posterior draw"}};
  }

 private:
  double beta_;
  CoderNet net_{nullptr};
};

// ---- the VQ-VAE

// The network and the codebook with its EMA statistics, as buffers: a checkpoint keeps them and
// --resume restores them, but the optimizer does not touch them.
class VqModelImpl : public torch::nn::Module {
 public:
  VqModelImpl(const CoderConfig& cfg, int64_t codes) {
    net = register_module("net", CoderNet(cfg, cfg.latent));
    codebook = register_buffer("codebook", at::zeros({codes, cfg.latent}));
    cluster_size = register_buffer("cluster_size", at::zeros({codes}));
    embed_sum = register_buffer("embed_sum", at::zeros({codes, cfg.latent}));
    usage = register_buffer("usage", at::zeros({codes}));  // assignments since the last restart
    initialized = register_buffer("initialized", at::zeros({1}));
  }
  CoderNet net{nullptr};
  at::Tensor codebook, cluster_size, embed_sum, usage, initialized;
};
TORCH_MODULE(VqModel);

class VqLearner : public CoderLearner {
 public:
  explicit VqLearner(const VqFitOptions& opt) : CoderLearner(opt, "vq"), vq_(opt) {
    if (opt.codes < 2 || opt.codes > (1 << 20)) throw UsageError("--codes must lie in 2..1048576");
    if (!(opt.commitment >= 0) || !std::isfinite(opt.commitment)) throw UsageError("--commitment must be >= 0");
    if (!(opt.decay >= 0 && opt.decay < 1)) throw UsageError("--decay must lie in [0, 1)");
    if (opt.restart_every < 0) throw UsageError("--restart-every must be >= 0");
    if (opt.kmeans_iterations < 0) throw UsageError("--kmeans-iterations must be >= 0");
  }
  torch::nn::Module& module() override { return *model_; }

  Loss loss(const BatchRows& batch, int64_t step, int64_t, at::Generator& gen, RowRange rows, bool bf16,
            StepWork*) override {
    const at::Tensor& images = batch.images;
    step_ = step;
    const int64_t B = images.size(0), d = cfg_.latent;
    if (rows.end < 0) rows.end = B;
    if (model_->initialized.item<float>() == 0) initialize(images, gen);
    at::Tensor x = input(images, rows);
    at::Tensor z;
    {
      compat::Autocast autocast(device_, bf16);
      z = cells_to_tokens(model_->net->encode(x)).to(at::kFloat);  // [b, L, d]
    }
    const int64_t b = z.size(0), L = z.size(1);
    at::Tensor flat = z.reshape({b * L, d});
    at::Tensor idx = vq_assign(flat.detach(), model_->codebook);
    at::Tensor zq = model_->codebook.index_select(0, idx);
    at::Tensor st = flat + (zq - flat).detach();  // straight-through: the decoder's gradient reaches z
    at::Tensor x_hat;
    {
      compat::Autocast autocast(device_, bf16);
      x_hat = model_->net->decode(tokens_to_cells(st.reshape({b, L, d}), geometry_.grid_h, geometry_.grid_w))
                  .to(at::kFloat);
    }
    const int64_t values = geometry_.height * geometry_.width * geometry_.channels;
    at::Tensor rec = per_value((x_hat - x).pow(2).sum(), B, values);
    at::Tensor commit = per_value((flat - zq.detach()).pow(2).sum(), B, L * d);
    // What the EMA update after the step takes: this process's assignments.
    {
      at::NoGradGuard ng;
      counts_ = at::bincount(idx.cpu(), {}, vq_.codes).to(at::kFloat);
      sums_ = at::zeros({vq_.codes, d}).index_add_(0, idx.cpu(), flat.detach().cpu());
      candidates_ = flat.detach().cpu();
    }
    Loss l;
    l.total = rec + vq_.commitment * commit;
    l.terms = {{"mse", rec.detach()}, {"commitment", commit.detach()}};
    return l;
  }

  void after_step(Communicator* comm) override {
    at::NoGradGuard ng;
    if (comm) comm->all_reduce_sum({counts_, sums_});
    at::Tensor cs = model_->cluster_size.cpu(), es = model_->embed_sum.cpu();
    at::Tensor codebook = vq_ema_update(cs, es, counts_, sums_, vq_.decay);
    model_->usage.add_(counts_.to(device_));
    last_perplexity_ = perplexity(counts_);
    last_usage_ = (counts_ > 0).sum().item<double>() / static_cast<double>(vq_.codes);
    if (vq_.restart_every > 0 && (step_ + 1) % vq_.restart_every == 0) {
      // Drawn from (seed, step): a resumed run restarts the same codes with the same vectors.
      at::Generator g = compat::cpu_generator(splitmix64(seed_ ^ splitmix64(static_cast<uint64_t>(step_))));
      at::Tensor usage = model_->usage.cpu();
      restarted_ += restart_dead_codes(codebook, cs, es, usage, candidates_, g);
      if (comm) comm->broadcast({codebook, cs, es});  // rank 0's candidates
      model_->usage.zero_();
    }
    model_->codebook.copy_(codebook);
    model_->cluster_size.copy_(cs);
    model_->embed_sum.copy_(es);
  }

  std::vector<std::pair<std::string, double>> metrics() const override {
    return {{"perplexity", last_perplexity_}, {"batch_usage", last_usage_}, {"restarted", static_cast<double>(restarted_)}};
  }

  void build(const ImageTable& table, int64_t classes, const CheckpointState* start, bool fine_tune,
             at::Device device, Provenance& prov) override {
    seed_ = prov.seed;
    if (start) {
      auto it = start->config.find("codes");
      if (it != start->config.end() && it->second != std::to_string(vq_.codes) && !opt_.run.resume)
        throw Error(fmt::format("--init: '{}' has {} codes, --codes says {}", opt_.run.init, it->second, vq_.codes));
    }
    CoderLearner::build(table, classes, start, fine_tune, device, prov);
  }

 protected:
  void make_model() override {
    model_ = VqModel(cfg_, vq_.codes);
    model_->to(device_);
  }
  std::string extra_description() const override {
    return fmt::format(", {} codes, commitment {}, EMA decay {}", vq_.codes, vq_.commitment, vq_.decay);
  }
  void add_config(std::map<std::string, std::string>& c) const override {
    c["codes"] = std::to_string(vq_.codes);
    c["commitment"] = fmt::format("{}", vq_.commitment);
    c["decay"] = fmt::format("{}", vq_.decay);
    c["restart_every"] = std::to_string(vq_.restart_every);
    c["kmeans_iterations"] = std::to_string(vq_.kmeans_iterations);
  }
  std::shared_ptr<const Tokenizer> tokenizer(bool) const override {
    CoderNet net = clone_coder(model_->net, cfg_.latent);
    return std::make_shared<VqTokenizer>(net, model_->codebook.cpu(), vq_.commitment);
  }
  std::vector<PreviewColumn> preview_columns(const Tokenizer& tok, const at::Tensor& images) const override {
    return {{to_uint8(tok.decode(tok.encode(images), geometry_)), "from codes", "reconstruction from the codes"}};
  }

 private:
  // k-means on the first batch's encoder outputs (every row: every process computes the same).
  void initialize(const at::Tensor& images, at::Generator& gen) {
    at::NoGradGuard ng;
    at::Tensor z = cells_to_tokens(model_->net->encode(input(images, {}))).to(at::kFloat).cpu();
    z = z.reshape({-1, cfg_.latent});
    at::Tensor centres = kmeans(z, vq_.codes, vq_.kmeans_iterations, gen);
    model_->codebook.copy_(centres);
    model_->embed_sum.copy_(centres);
    model_->cluster_size.fill_(1);
    model_->initialized.fill_(1);
    log("codebook initialized by k-means ({} iterations) on {} encoder outputs", vq_.kmeans_iterations, z.size(0));
  }

  const VqFitOptions& vq_;
  VqModel model_{nullptr};
  at::Tensor counts_, sums_, candidates_;
  int64_t step_ = 0, restarted_ = 0;
  uint64_t seed_ = 0;
  double last_perplexity_ = 0, last_usage_ = 0;
};

void report_eval(const CoderFitOptions& opt) {
  if (opt.eval.empty()) return;
  auto tok = load_tokenizer_file(opt.run.output);
  ImageTable table({opt.eval});
  ReconstructionReport r = reconstruction_report(*tok, table, opt.eval_rows);
  log("reconstruction of {} rows of '{}': {}", r.rows, opt.eval, r.to_json());
  std::cout << r.to_json() << std::endl;
}

}  // namespace

void fit_precision(const std::string& asked, Provenance& prov) {
  if (asked == "auto" && prov.device.rfind("cuda", 0) != 0) prov.precision = "fp32";
}

namespace {

template <typename FitLearner, typename Options>
std::optional<TrainBenchmark> fit(Options& opt, Provenance& prov) {
  opt.validate();
  FitLearner learner(opt);
  auto r = run_training(learner, opt.run, opt.optim, opt.augment, prov);
  if (!r) report_eval(opt);
  return r;
}

}  // namespace

std::optional<TrainBenchmark> vae_fit(VaeFitOptions& opt, Provenance& prov) { return fit<VaeLearner>(opt, prov); }

std::optional<TrainBenchmark> vq_fit(VqFitOptions& opt, Provenance& prov) { return fit<VqLearner>(opt, prov); }

}  // namespace mdx
