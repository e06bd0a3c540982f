#include "mdx/eval/trained_model.h"

#include <fmt/format.h>
#include <torch/torch.h>

#include <fstream>

#include "mdx/tokenize/tokenizer.h"
#include "mdx/train/checkpoint.h"
#include "mdx/util/error.h"
#include "mdx/util/log.h"
#include "mdx/util/torch_compat.h"

namespace mdx {

std::string TrainedModel::setting(const std::string& key, const std::string& fallback) const {
  auto it = settings.find(key);
  return it == settings.end() ? fallback : it->second;
}

void add_weights_option(CLI::App& app, Weights& weights, const std::string& help) {
  app.add_option_function<std::string>(
         "--weights",
         [&weights](const std::string& v) {
           if (v != "raw" && v != "ema") throw CLI::ValidationError("--weights", "must be raw or ema, got '" + v + "'");
           weights = v == "ema" ? Weights::Ema : Weights::Raw;
         },
         help)
      ->type_name("raw|ema")
      ->default_str(weights_name(weights));
}

const char* weights_name(Weights w) { return w == Weights::Ema ? "ema" : "raw"; }

TrainedModel load_trained_model(const std::string& path, Weights weights, const at::Device& device,
                                const std::string& latent_file) {
  CheckpointState s = load_checkpoint(path, true);
  if (auto fit = s.config.find("fit"); fit != s.config.end())
    throw Error(fmt::format("'{}' is a tokenizer fitted by mdx-{}-fit, not a trained model; give it as --tokenizer",
                            path, fit->second));
  TrainedModel m;
  m.path = path;
  m.settings = s.config;
  m.history = s.history;
  m.step = s.step;
  m.config = ModelConfig::from_map(s.config);
  m.objective = objective_from_config(s.config);
  std::shared_ptr<const Tokenizer> tokenizer = s.tokenizer, latent = s.latent;
  if (!tokenizer) tokenizer = std::make_shared<PixelTokenizer>(m.config.patch);
  const std::string recorded = m.setting("tokenizer");
  if (!latent_file.empty()) latent = load_tokenizer_file(latent_file);
  else if (!latent && !recorded.empty() && std::ifstream(recorded)) latent = load_tokenizer_file(recorded);
  m.objective->restore(tokenizer, latent);
  const TokenGeometry g = tokenizer->geometry(m.config.height, m.config.width, m.config.channels);
  if (g.tokens() != m.config.tokens() || g.values != m.config.token_dim() || g.vocabulary != m.config.vocabulary)
    throw Error(fmt::format("'{}': its tokenizer gives {} tokens of {} values ({} codes), its model takes {} of {} "
                            "({} codes)",
                            path, g.tokens(), g.values, g.vocabulary, m.config.tokens(), m.config.token_dim(),
                            m.config.vocabulary));
  m.ema = weights == Weights::Ema && !s.ema.empty();
  if (weights == Weights::Ema && s.ema.empty())
    log("'{}' has no EMA weights (trained with --ema 0): using its raw weights", path);
  m.model = MaskedDiffusionAutoencoder(m.config);
  copy_weights(*m.model, m.ema ? s.ema : s.model, path, true);
  m.model->to(device);
  m.model->eval();
  return m;
}

Pool parse_pool(const std::string& name) {
  if (name == "cls") return Pool::Cls;
  if (name == "mean") return Pool::Mean;
  if (name == "cls+mean") return Pool::ClsMean;
  throw UsageError("--pool must be cls, mean or cls+mean, got '" + name + "'");
}

std::string pool_name(Pool pool) {
  switch (pool) {
    case Pool::Cls: return "cls";
    case Pool::Mean: return "mean";
    case Pool::ClsMean: return "cls+mean";
  }
  return "?";
}

FeatureEncoder::FeatureEncoder(TrainedModel& model, Pool pool, int64_t t, uint64_t seed, int64_t blocks)
    : m_(model), pool_(pool), t_(t), blocks_(blocks), gen_(compat::cpu_generator(seed)) {
  if (blocks_ < 1 || blocks_ > m_.config.depth)
    throw UsageError(fmt::format("--blocks must be in 1..{} (the encoder of '{}' has {} blocks), got {}",
                                 m_.config.depth, m_.path, m_.config.depth, blocks_));
  if (t_ < 0) return;
  if (!m_.objective->noises())
    throw UsageError(fmt::format("--t {}: '{}' was trained under {} without noise", t_, m_.path, m_.objective->name()));
  if (t_ >= m_.objective->settings().steps)
    throw UsageError(fmt::format("--t must lie in [0, {}) for '{}'", m_.objective->settings().steps, m_.path));
  // One row through the corruption now, so that a missing piece (l-DAE's latent) is reported
  // before any output is begun.
  at::Generator probe = compat::cpu_generator(0);
  m_.objective->apply(at::zeros({1, m_.config.tokens(), m_.config.token_dim()}), t_, 0.0, probe);
}

FeatureEncoder::~FeatureEncoder() = default;

int64_t FeatureEncoder::dim() const { return blocks_ * (pool_ == Pool::ClsMean ? 2 : 1) * m_.config.dim; }

at::Tensor FeatureEncoder::operator()(const at::Tensor& images) {
  const ModelConfig& c = m_.config;
  if (images.dim() != 4 || images.size(1) != c.height || images.size(2) != c.width || images.size(3) != c.channels)
    throw Error(fmt::format("images of shape [{}]; the model of '{}' takes {}x{}x{}", fmt::join(images.sizes(), ","),
                            m_.path, c.height, c.width, c.channels));
  at::NoGradGuard ng;
  const int64_t B = images.size(0);
  at::Tensor x = m_.objective->tokenizer()->encode(images);
  at::Tensor time_index = at::zeros({B}, at::kLong);
  if (t_ >= 0) {
    Corrupted k = m_.objective->apply(x, t_, 0.0, gen_);
    x = k.xt;
    time_index = k.time_index;
  }
  const at::Device device = m_.model->parameters().front().device();
  std::vector<at::Tensor> layers;
  {
    compat::Autocast autocast(device, m_.bf16);
    // The null class where the model is class-conditional: the representation owes nothing to a label.
    at::Tensor labels;
    if (c.num_classes > 0) labels = at::full({B}, c.num_classes, at::kLong).to(device);
    layers = m_.model->encode_layers(x.to(device), time_index.to(device), labels, blocks_);
  }
  std::vector<at::Tensor> parts;
  for (at::Tensor h : layers) {
    h = h.to(at::kFloat);
    if (pool_ != Pool::Mean) parts.push_back(h.slice(1, 0, c.cls_tokens).mean(1));
    if (pool_ != Pool::Cls) parts.push_back(h.slice(1, c.cls_tokens).mean(1));
  }
  return at::cat(parts, 1).to(at::kCPU).contiguous();
}

}  // namespace mdx
