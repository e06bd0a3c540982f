#include "mdx/tokenize/learned.h"

#include <fmt/format.h>

#include <cmath>
#include <fstream>
#include <sstream>

#include "mdx/io/hdf5.h"
#include "mdx/io/tensors.h"
#include "mdx/tokenize/patches.h"
#include "mdx/util/error.h"
#include "mdx/util/script.h"
#include "mdx/util/sha256.h"

namespace mdx {

namespace {

bool power_of_two(int64_t v) { return v >= 1 && (v & (v - 1)) == 0; }

int64_t halvings(int64_t stride) {
  int64_t n = 0;
  while ((int64_t{1} << n) < stride) ++n;
  return n;
}

// Channels at the i-th resolution of the conv form.
int64_t level_width(const CoderConfig& c, int64_t i) { return std::min(c.width << i, 4 * c.width); }

// GroupNorm in float32 whatever its input: LibTorch 1.13's CPU autocast leaves group_norm out of its
// lists and the kernel refuses a bf16 input with float32 weights; CUDA autocast runs it in float32
// too. Same parameters (weight, bias) as torch::nn::GroupNorm.
class GroupNorm32Impl : public torch::nn::GroupNormImpl {
 public:
  explicit GroupNorm32Impl(int64_t channels) : GroupNormImpl(torch::nn::GroupNormOptions(8, channels).eps(1e-6)) {}
  at::Tensor forward(const at::Tensor& x) { return GroupNormImpl::forward(x.to(at::kFloat)); }
};
TORCH_MODULE(GroupNorm32);

// GroupNorm -> SiLU -> 3x3 conv, twice, plus the input (the SD VAE's ResnetBlock, no dropout).
class ResBlockImpl : public torch::nn::Module {
 public:
  explicit ResBlockImpl(int64_t ch) {
    n1_ = register_module("norm1", GroupNorm32(ch));
    c1_ = register_module("conv1", torch::nn::Conv2d(torch::nn::Conv2dOptions(ch, ch, 3).padding(1)));
    n2_ = register_module("norm2", GroupNorm32(ch));
    c2_ = register_module("conv2", torch::nn::Conv2d(torch::nn::Conv2dOptions(ch, ch, 3).padding(1)));
  }
  at::Tensor forward(const at::Tensor& x) {
    at::Tensor h = c1_(torch::silu(n1_(x)));
    return x + c2_(torch::silu(n2_(h)));
  }

 private:
  GroupNorm32 n1_{nullptr}, n2_{nullptr};
  torch::nn::Conv2d c1_{nullptr}, c2_{nullptr};
};
TORCH_MODULE(ResBlock);

torch::nn::Conv2d conv3(int64_t in, int64_t out, int64_t stride = 1) {
  return torch::nn::Conv2d(torch::nn::Conv2dOptions(in, out, 3).stride(stride).padding(1));
}

// The attributes every learned tokenizer saves and checks on load.
void save_coder(hid_t group, const CoderConfig& c) {
  h5::write_attr(group, "form", c.form);
  h5::write_attr(group, "stride", c.stride);
  h5::write_attr(group, "latent", c.latent);
  h5::write_attr(group, "width", c.width);
  h5::write_attr(group, "channels", c.channels);
  h5::write_attr(group, "pixel_scale", std::string("[-1, 1]: x / 127.5 - 1"));
  h5::write_attr(group, "token_layout", std::string("row-major latent cells, one token of `latent` values each"));
}

CoderConfig load_coder(hid_t group, const std::string& where) {
  std::map<std::string, std::string> m;
  for (const char* a : {"form", "stride", "latent", "width", "channels"}) {
    if (!h5::has_attr(group, a)) throw Error(fmt::format("{}: a learned tokenizer without the attribute '{}'", where, a));
    m[std::string("coder_") + a] =
        std::string(a) == "form" ? h5::read_attr_string(group, a) : std::to_string(h5::read_attr_int(group, a));
  }
  return CoderConfig::from_map(m, where);
}

std::map<std::string, at::Tensor> weights_of(torch::nn::Module& m) {
  std::map<std::string, at::Tensor> w;
  for (const auto& p : m.named_parameters()) w[p.key()] = p.value();
  return w;
}

// The saved weights into `net`, every one present and of its shape.
void load_weights(hid_t group, CoderNet& net, const std::string& where) {
  if (!h5::has(group, "weights")) throw Error(where + ": a learned tokenizer without its 'weights' group");
  auto saved = read_tensors(group, "weights", where);
  at::NoGradGuard ng;
  for (auto& p : net->named_parameters()) {
    auto it = saved.find(p.key());
    if (it == saved.end()) throw Error(fmt::format("{}: weights/{} is missing", where, p.key()));
    if (it->second.sizes() != p.value().sizes())
      throw Error(fmt::format("{}: weights/{} has shape [{}], its attributes imply [{}]", where, p.key(),
                              fmt::join(it->second.sizes(), ","), fmt::join(p.value().sizes(), ",")));
    p.value().copy_(it->second);
  }
  if (saved.size() != net->named_parameters().size())
    throw Error(fmt::format("{}: weights holds {} tensors, its attributes imply {}", where, saved.size(),
                            net->named_parameters().size()));
}

void hash_net(const std::function<void(const void*, size_t)>& add, const CoderConfig& c, CoderNet& net) {
  add(c.form.data(), c.form.size());
  for (int64_t v : {c.stride, c.latent, c.width, c.channels}) add(&v, sizeof v);
  for (const auto& p : net->named_parameters()) {
    add(p.key().data(), p.key().size());
    at::Tensor t = p.value().detach().to(at::kFloat).contiguous();
    add(t.data_ptr<float>(), static_cast<size_t>(t.numel()) * sizeof(float));
  }
}

// Runs `f` on chunks of at most 256 images, so that a whole table's encoding stays in memory bounds.
template <typename F>
at::Tensor by_chunks(const at::Tensor& x, F f) {
  const int64_t n = x.size(0), chunk = 256;
  if (n <= chunk) return f(x);
  std::vector<at::Tensor> parts;
  for (int64_t i = 0; i < n; i += chunk) parts.push_back(f(x.slice(0, i, std::min(n, i + chunk))));
  return at::cat(parts, 0);
}

}  // namespace

void CoderConfig::validate() const {
  if (form != "conv" && form != "patch") throw UsageError("--form must be conv or patch, not '" + form + "'");
  if (form == "conv" && (!power_of_two(stride) || stride > 64))
    throw UsageError(fmt::format("--stride must be a power of 2 up to 64, got {}", stride));
  if (form == "patch" && (stride < 1 || stride > 64))
    throw UsageError(fmt::format("--patch must lie in 1..64, got {}", stride));
  if (latent < 1 || latent > 4096) throw UsageError(fmt::format("--latent must lie in 1..4096, got {}", latent));
  if (width < 8 || width > 4096 || (form == "conv" && width % 8 != 0))
    throw UsageError(fmt::format("--width must lie in 8..4096{}, got {}", form == "conv" ? " and be a multiple of 8" : "",
                                 width));
  if (channels != 1 && channels != 3) throw UsageError(fmt::format("images of {} channels: 1 or 3 are read", channels));
}

std::map<std::string, std::string> CoderConfig::to_map() const {
  return {{"coder_form", form},
          {"coder_stride", std::to_string(stride)},
          {"coder_latent", std::to_string(latent)},
          {"coder_width", std::to_string(width)},
          {"coder_channels", std::to_string(channels)}};
}

CoderConfig CoderConfig::from_map(const std::map<std::string, std::string>& m, const std::string& where) {
  CoderConfig c;
  auto get = [&](const char* key) -> const std::string& {
    auto it = m.find(key);
    if (it == m.end()) throw Error(fmt::format("{}: its configuration lacks '{}'", where, key));
    return it->second;
  };
  auto number = [&](const char* key) {
    const std::string& s = get(key);
    try {
      size_t used = 0;
      const long long v = std::stoll(s, &used);
      if (used == s.size()) return static_cast<int64_t>(v);
    } catch (const std::exception&) {
    }
    throw Error(fmt::format("{}: '{}' is '{}', not an integer", where, key, s));
  };
  c.form = get("coder_form");
  c.stride = number("coder_stride");
  c.latent = number("coder_latent");
  c.width = number("coder_width");
  c.channels = number("coder_channels");
  try {
    c.validate();
  } catch (const UsageError& e) {
    throw Error(fmt::format("{}: its configuration is damaged ({})", where, e.what()));
  }
  return c;
}

TokenGeometry CoderConfig::geometry(int64_t height, int64_t w, int64_t c) const {
  if (c != channels)
    throw Error(fmt::format("the tokenizer is for images of {} channels, these have {}", channels, c));
  if (height % stride != 0 || w % stride != 0)
    throw Error(fmt::format("the tokenizer's {} {} does not divide the images' {}x{}",
                            form == "conv" ? "stride" : "patch", stride, height, w));
  TokenGeometry g;
  g.height = height, g.width = w, g.channels = c;
  g.grid_h = height / stride, g.grid_w = w / stride;
  g.values = latent;
  return g;
}

std::string CoderConfig::describe() const {
  return fmt::format("{}, {} {}, {} values per cell, width {}", form, form == "conv" ? "stride" : "patch", stride,
                     latent, width);
}

CoderNetImpl::CoderNetImpl(const CoderConfig& cfg, int64_t out) : cfg_(cfg), out_(out) {
  cfg.validate();
  const int64_t C = cfg.channels;
  encoder_ = torch::nn::Sequential();
  decoder_ = torch::nn::Sequential();
  if (cfg.form == "patch") {
    const int64_t D = cfg.stride * cfg.stride * C, w = cfg.width;
    encoder_->push_back(torch::nn::Linear(D, w));
    encoder_->push_back(torch::nn::GELU());
    encoder_->push_back(torch::nn::Linear(w, w));
    encoder_->push_back(torch::nn::GELU());
    encoder_->push_back(torch::nn::Linear(w, out));
    decoder_->push_back(torch::nn::Linear(cfg.latent, w));
    decoder_->push_back(torch::nn::GELU());
    decoder_->push_back(torch::nn::Linear(w, w));
    decoder_->push_back(torch::nn::GELU());
    decoder_->push_back(torch::nn::Linear(w, D));
  } else {
    const int64_t levels = halvings(cfg.stride), top = level_width(cfg, levels);
    encoder_->push_back(conv3(C, cfg.width));
    for (int64_t i = 0; i < levels; ++i) {
      encoder_->push_back(ResBlock(level_width(cfg, i)));
      encoder_->push_back(conv3(level_width(cfg, i), level_width(cfg, i + 1), 2));
    }
    encoder_->push_back(ResBlock(top));
    encoder_->push_back(GroupNorm32(top));
    encoder_->push_back(torch::nn::SiLU());
    encoder_->push_back(conv3(top, out));
    decoder_->push_back(conv3(cfg.latent, top));
    decoder_->push_back(ResBlock(top));
    for (int64_t i = levels - 1; i >= 0; --i) {
      decoder_->push_back(torch::nn::Upsample(
          torch::nn::UpsampleOptions().scale_factor(std::vector<double>{2, 2}).mode(torch::kNearest)));
      decoder_->push_back(conv3(level_width(cfg, i + 1), level_width(cfg, i)));
      decoder_->push_back(ResBlock(level_width(cfg, i)));
    }
    decoder_->push_back(GroupNorm32(cfg.width));
    decoder_->push_back(torch::nn::SiLU());
    decoder_->push_back(conv3(cfg.width, C));
  }
  register_module("encoder", encoder_);
  register_module("decoder", decoder_);
}

at::Tensor CoderNetImpl::encode(const at::Tensor& x) {
  if (cfg_.form == "conv") return encoder_->forward(x);
  const int64_t B = x.size(0), gh = x.size(2) / cfg_.stride, gw = x.size(3) / cfg_.stride;
  at::Tensor t = encoder_->forward(patchify(x.permute({0, 2, 3, 1}), cfg_.stride));
  return t.reshape({B, gh, gw, out_}).permute({0, 3, 1, 2});
}

at::Tensor CoderNetImpl::decode(const at::Tensor& z) {
  if (cfg_.form == "conv") return decoder_->forward(z);
  const int64_t B = z.size(0), gh = z.size(2), gw = z.size(3), p = cfg_.stride;
  at::Tensor t = decoder_->forward(z.permute({0, 2, 3, 1}).reshape({B, gh * gw, z.size(1)}));
  return unpatchify(t, p, gh * p, gw * p, cfg_.channels).permute({0, 3, 1, 2});
}

CoderNet clone_coder(const CoderNet& net, int64_t out) {
  CoderNet copy(net->config(), out);
  at::NoGradGuard ng;
  auto from = net->named_parameters();
  for (auto& p : copy->named_parameters()) p.value().copy_(from[p.key()].detach().to(at::kCPU));
  copy->eval();
  return copy;
}

at::Tensor images_to_nchw(const at::Tensor& images) {
  return to_unit_range(images).permute({0, 3, 1, 2}).contiguous();
}

at::Tensor nchw_to_images(const at::Tensor& x) { return x.permute({0, 2, 3, 1}).contiguous(); }

at::Tensor cells_to_tokens(const at::Tensor& z) {
  return z.flatten(2).transpose(1, 2).contiguous();  // [B, k, gh*gw] -> [B, L, k]
}

at::Tensor tokens_to_cells(const at::Tensor& tokens, int64_t grid_h, int64_t grid_w) {
  return tokens.transpose(1, 2).reshape({tokens.size(0), tokens.size(2), grid_h, grid_w});
}

at::Tensor gaussian_kl(const at::Tensor& mean, const at::Tensor& logvar) {
  return 0.5 * (mean * mean + at::exp(logvar) - 1.0 - logvar);
}

at::Tensor reparameterize(const at::Tensor& mean, const at::Tensor& logvar, const at::Tensor& eps) {
  return mean + at::exp(0.5 * logvar) * eps;
}

std::pair<at::Tensor, at::Tensor> split_moments(const at::Tensor& moments) {
  auto parts = moments.chunk(2, 1);
  return {parts[0], at::clamp(parts[1], -30.0, 20.0)};
}

// ---- VAE

VaeTokenizer::VaeTokenizer(CoderNet net, double scale, double beta) : net_(std::move(net)), scale_(scale), beta_(beta) {
  if (!(scale > 0) || !std::isfinite(scale)) throw Error(fmt::format("a VAE tokenizer's scale must be > 0, got {}", scale));
  net_->eval();
}

std::string VaeTokenizer::describe() const {
  return fmt::format("vae ({}; scale {:.5g}{})", config().describe(), scale_, beta_ == 0 ? ", an auto-encoder" : "");
}

TokenGeometry VaeTokenizer::geometry(int64_t height, int64_t width, int64_t channels) const {
  return config().geometry(height, width, channels);
}

std::pair<at::Tensor, at::Tensor> VaeTokenizer::moments(const at::Tensor& images) const {
  at::NoGradGuard ng;
  at::Tensor both = by_chunks(images, [&](const at::Tensor& x) { return net_->encode(images_to_nchw(x)); });
  auto [mean, logvar] = split_moments(both);
  return {cells_to_tokens(mean) * scale_, cells_to_tokens(logvar) + 2 * std::log(scale_)};
}

at::Tensor VaeTokenizer::encode(const at::Tensor& images) const { return moments(images).first; }

at::Tensor VaeTokenizer::decode(const at::Tensor& tokens, const TokenGeometry& g) const {
  at::NoGradGuard ng;
  at::Tensor z = tokens_to_cells(tokens.to(at::kFloat), g.grid_h, g.grid_w) / scale_;
  return by_chunks(z, [&](const at::Tensor& c) { return nchw_to_images(net_->decode(c)); });
}

void VaeTokenizer::save(hid_t group) const {
  h5::write_attr(group, "kind", kind());
  save_coder(group, config());
  h5::write_attr(group, "scale", scale_);
  h5::write_attr(group, "beta", beta_);
  h5::write_attr(group, "posterior", std::string("encoder output = (mean, log-variance) per cell; tokens = scale * mean"));
  write_tensors(group, "weights", weights_of(*net_));
}

std::shared_ptr<const Tokenizer> VaeTokenizer::load(hid_t group, const std::string& where) {
  CoderConfig c = load_coder(group, where);
  if (!h5::has_attr(group, "scale")) throw Error(where + ": a VAE tokenizer without the attribute 'scale'");
  const double scale = h5::read_attr_double(group, "scale");
  const double beta = h5::has_attr(group, "beta") ? h5::read_attr_double(group, "beta") : 0;
  if (!(scale > 0) || !std::isfinite(scale)) throw Error(fmt::format("{}: its scale {} is not > 0", where, scale));
  CoderNet net(c, 2 * c.latent);
  load_weights(group, net, where);
  return std::make_shared<VaeTokenizer>(net, scale, beta);
}

void VaeTokenizer::hash_contents(const std::function<void(const void*, size_t)>& add) const {
  hash_net(add, config(), net_);
  add(&scale_, sizeof scale_);
}

// ---- VQ

at::Tensor vq_assign(const at::Tensor& z, const at::Tensor& codebook) {
  // ||z - e||^2 = ||z||^2 - 2 z.e + ||e||^2; the first term does not change the argmin.
  at::Tensor d = codebook.pow(2).sum(1).unsqueeze(0) - 2 * at::matmul(z, codebook.t());
  return d.argmin(1);
}

at::Tensor vq_ema_update(at::Tensor& cluster_size, at::Tensor& embed_sum, const at::Tensor& counts,
                         const at::Tensor& sums, double decay, double eps) {
  cluster_size.mul_(decay).add_(counts, 1 - decay);
  embed_sum.mul_(decay).add_(sums, 1 - decay);
  const at::Tensor n = cluster_size.sum();
  const int64_t K = cluster_size.size(0);
  at::Tensor smoothed = (cluster_size + eps) / (n + K * eps) * n;
  return embed_sum / smoothed.unsqueeze(1);
}

int64_t restart_dead_codes(at::Tensor& codebook, at::Tensor& cluster_size, at::Tensor& embed_sum,
                           const at::Tensor& usage, const at::Tensor& candidates, at::Generator& gen) {
  at::Tensor dead = (usage <= 0).nonzero().flatten();
  const int64_t n = dead.size(0);
  if (n == 0 || candidates.size(0) == 0) return 0;
  at::Tensor pick = candidates.size(0) >= n ? at::randperm(candidates.size(0), gen).slice(0, 0, n)
                                            : at::randint(candidates.size(0), {n}, gen);
  at::Tensor fresh = candidates.index_select(0, pick.to(candidates.device())).to(codebook.dtype());
  codebook.index_copy_(0, dead, fresh);
  embed_sum.index_copy_(0, dead, fresh);
  cluster_size.index_fill_(0, dead, 1.0);
  return n;
}

at::Tensor kmeans(const at::Tensor& z, int64_t k, int64_t iterations, at::Generator& gen) {
  const int64_t N = z.size(0);
  at::Tensor pick = N >= k ? at::randperm(N, gen).slice(0, 0, k) : at::randint(N, {k}, gen);
  at::Tensor centres = z.index_select(0, pick).clone();
  for (int64_t it = 0; it < iterations; ++it) {
    at::Tensor idx = vq_assign(z, centres);
    at::Tensor sums = at::zeros_like(centres).index_add_(0, idx, z);
    at::Tensor counts = at::zeros({k}, z.options()).index_add_(0, idx, at::ones({N}, z.options()));
    at::Tensor used = counts > 0;
    centres = at::where(used.unsqueeze(1), sums / counts.clamp_min(1).unsqueeze(1), centres);
  }
  return centres;
}

double perplexity(const at::Tensor& counts) {
  at::Tensor c = counts.to(at::kDouble);
  const double total = c.sum().item<double>();
  if (total <= 0) return 0;
  at::Tensor p = c / total;
  return std::exp(-(p * at::log(p.clamp_min(1e-300))).sum().item<double>());
}

VqTokenizer::VqTokenizer(CoderNet net, at::Tensor codebook, double commitment)
    : net_(std::move(net)), codebook_(codebook.to(at::kCPU).to(at::kFloat).contiguous()), commitment_(commitment) {
  if (codebook_.dim() != 2 || codebook_.size(1) != config().latent || codebook_.size(0) < 2)
    throw Error(fmt::format("a VQ codebook must be [K >= 2, {}], got [{}]", config().latent,
                            fmt::join(codebook_.sizes(), ",")));
  net_->eval();
}

std::string VqTokenizer::describe() const {
  return fmt::format("vq ({}; {} codes)", config().describe(), codes());
}

TokenGeometry VqTokenizer::geometry(int64_t height, int64_t width, int64_t channels) const {
  TokenGeometry g = config().geometry(height, width, channels);
  g.vocabulary = codes();
  return g;
}

at::Tensor VqTokenizer::encode(const at::Tensor& images) const {
  at::NoGradGuard ng;
  return by_chunks(images, [&](const at::Tensor& x) {
    at::Tensor z = cells_to_tokens(net_->encode(images_to_nchw(x)));  // [B, L, d]
    return vq_assign(z.reshape({-1, z.size(2)}), codebook_).reshape({z.size(0), z.size(1)});
  });
}

at::Tensor VqTokenizer::decode(const at::Tensor& ids, const TokenGeometry& g) const {
  at::NoGradGuard ng;
  if (ids.scalar_type() != at::kLong) throw Error("a VQ tokenizer decodes int64 codes");
  if (ids.numel() > 0 && (ids.min().item<int64_t>() < 0 || ids.max().item<int64_t>() >= codes()))
    throw Error(fmt::format("codes outside 0..{}", codes() - 1));
  at::Tensor z = codebook_.index_select(0, ids.flatten()).reshape({ids.size(0), ids.size(1), -1});
  return by_chunks(tokens_to_cells(z, g.grid_h, g.grid_w),
                   [&](const at::Tensor& c) { return nchw_to_images(net_->decode(c)); });
}

void VqTokenizer::save(hid_t group) const {
  h5::write_attr(group, "kind", kind());
  save_coder(group, config());
  h5::write_attr(group, "codes", codes());
  h5::write_attr(group, "commitment", commitment_);
  write_tensors(group, "weights", weights_of(*net_));
  write_tensors(group, "quantizer", {{"codebook", codebook_}});
}

std::shared_ptr<const Tokenizer> VqTokenizer::load(hid_t group, const std::string& where) {
  CoderConfig c = load_coder(group, where);
  CoderNet net(c, c.latent);
  load_weights(group, net, where);
  auto q = read_tensors(group, "quantizer", where);
  auto it = q.find("codebook");
  if (it == q.end()) throw Error(where + ": a VQ tokenizer without quantizer/codebook");
  const at::Tensor& cb = it->second;
  if (cb.dim() != 2 || cb.size(1) != c.latent || cb.size(0) < 2 || cb.size(0) > (int64_t{1} << 20))
    throw Error(fmt::format("{}: quantizer/codebook has shape [{}], its attributes imply [K, {}]", where,
                            fmt::join(cb.sizes(), ","), c.latent));
  const double commitment = h5::has_attr(group, "commitment") ? h5::read_attr_double(group, "commitment") : 0.25;
  return std::make_shared<VqTokenizer>(net, cb, commitment);
}

void VqTokenizer::hash_contents(const std::function<void(const void*, size_t)>& add) const {
  hash_net(add, config(), net_);
  add(codebook_.data_ptr<float>(), static_cast<size_t>(codebook_.numel()) * sizeof(float));
}

// ---- TorchScript

namespace {

int64_t int_attr(const torch::jit::Module& m, const char* name, const std::string& where) {
  if (!m.hasattr(name)) throw Error(fmt::format("{} declares no attribute '{}' (see mdx(7), TorchScript tokenizers)", where, name));
  c10::IValue v = m.attr(name);
  if (!v.isInt()) throw Error(fmt::format("{}: its attribute '{}' is a {}, not an int", where, name, v.tagKind()));
  return v.toInt();
}

}  // namespace

TorchScriptTokenizer::TorchScriptTokenizer(std::string bytes, const std::string& where)
    : bytes_(std::move(bytes)), where_(where) {
  std::istringstream in(bytes_);
  module_ = load_script(in, where);
  module_.eval();
  for (const char* method : {"encode", "decode"})
    if (!module_.find_method(method))
      throw Error(fmt::format("{} has no method '{}' (a tokenizer module needs encode and decode; export them with "
                              "@torch.jit.export)",
                              where, method));
  if (!module_.hasattr("mdx_kind") || !module_.attr("mdx_kind").isString())
    throw Error(where + " declares no string attribute 'mdx_kind' (\"vae\" or \"vq\")");
  declared_kind_ = module_.attr("mdx_kind").toStringRef();
  if (declared_kind_ != "vae" && declared_kind_ != "vq")
    throw Error(fmt::format("{}: mdx_kind is '{}', not vae or vq", where, declared_kind_));
  discrete_ = declared_kind_ == "vq";
  stride_ = int_attr(module_, "stride", where);
  latent_ = int_attr(module_, "latent_channels", where);
  channels_ = int_attr(module_, "image_channels", where);
  if (stride_ < 1 || stride_ > 1024 || latent_ < 1 || latent_ > 65536 || (channels_ != 1 && channels_ != 3))
    throw Error(fmt::format("{}: inconsistent geometry stride={} latent_channels={} image_channels={}", where, stride_,
                            latent_, channels_));
  if (discrete_) {
    codes_ = int_attr(module_, "codes", where);
    if (codes_ < 2 || codes_ > (int64_t{1} << 24)) throw Error(fmt::format("{}: codes is {}", where, codes_));
  } else {
    if (!module_.hasattr("scaling_factor")) throw Error(where + " declares no attribute 'scaling_factor'");
    c10::IValue v = module_.attr("scaling_factor");
    scale_ = v.isDouble() ? v.toDouble() : v.isInt() ? static_cast<double>(v.toInt()) : -1;
    if (!(scale_ > 0) || !std::isfinite(scale_))
      throw Error(fmt::format("{}: scaling_factor must be a number > 0", where));
  }
  geometry(2 * stride_, 2 * stride_, channels_);  // the methods run, and give the declared shapes
}

std::shared_ptr<const Tokenizer> TorchScriptTokenizer::from_file(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) throw Error("cannot read '" + path + "'");
  std::string bytes((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  return std::make_shared<TorchScriptTokenizer>(std::move(bytes), "'" + path + "'");
}

std::shared_ptr<const Tokenizer> TorchScriptTokenizer::load(hid_t group, const std::string& where) {
  h5::Handle ds = h5::open_dataset(group, "module", where);
  h5::DatasetInfo i = h5::info(ds);
  if (i.dims.size() != 1 || i.type_class != H5T_INTEGER)
    throw Error(where + ": its 'module' is not a uint8 vector (the TorchScript file's bytes)");
  std::string bytes(static_cast<size_t>(i.dims[0]), '\0');
  h5::read_all(ds, H5T_NATIVE_UINT8, bytes.data(), where + " 'module'");
  return std::make_shared<TorchScriptTokenizer>(std::move(bytes), where);
}

std::string TorchScriptTokenizer::describe() const {
  return discrete_ ? fmt::format("torchscript vq (stride {}, {} codes of {} values)", stride_, codes_, latent_)
                   : fmt::format("torchscript vae (stride {}, {} channels, scale {:.5g})", stride_, latent_, scale_);
}

at::Tensor TorchScriptTokenizer::call(const char* method, const at::Tensor& input) const {
  c10::IValue out;
  try {
    out = module_.get_method(method)({input});
  } catch (const c10::Error& e) {
    throw Error(fmt::format("{}: {}() failed on input [{}]: {}", where_, method, fmt::join(input.sizes(), ","),
                            raised_message(e.what_without_backtrace())));
  } catch (const std::exception& e) {
    throw Error(fmt::format("{}: {}() failed on input [{}]: {}", where_, method, fmt::join(input.sizes(), ","),
                            raised_message(e.what())));
  }
  if (!out.isTensor()) throw Error(fmt::format("{}: {}() returned a {}, not a tensor", where_, method, out.tagKind()));
  return out.toTensor();
}

TokenGeometry TorchScriptTokenizer::geometry(int64_t height, int64_t width, int64_t channels) const {
  if (channels != channels_)
    throw Error(fmt::format("{} is for images of {} channels, these have {}", where_, channels_, channels));
  if (height % stride_ != 0 || width % stride_ != 0)
    throw Error(fmt::format("{}: its stride {} does not divide the images' {}x{}", where_, stride_, height, width));
  const int64_t gh = height / stride_, gw = width / stride_;
  // One black image through both methods: the shapes the attributes declare.
  at::NoGradGuard ng;
  at::Tensor e = call("encode", at::full({1, channels, height, width}, -1.0f));
  const std::vector<int64_t> want = discrete_ ? std::vector<int64_t>{1, gh, gw} : std::vector<int64_t>{1, 2 * latent_, gh, gw};
  if (e.sizes().vec() != want || (discrete_ && e.scalar_type() != at::kLong))
    throw Error(fmt::format("{}: encode() of [1,{},{},{}] gave {} [{}], its attributes declare {} [{}]", where_, channels,
                            height, width, c10::toString(e.scalar_type()), fmt::join(e.sizes(), ","),
                            discrete_ ? "int64" : "float", fmt::join(want, ",")));
  at::Tensor d = call("decode", discrete_ ? e : e.slice(1, 0, latent_));
  if (d.sizes().vec() != std::vector<int64_t>{1, channels, height, width})
    throw Error(fmt::format("{}: decode() gave [{}] for images of [1,{},{},{}]", where_, fmt::join(d.sizes(), ","),
                            channels, height, width));
  TokenGeometry g;
  g.height = height, g.width = width, g.channels = channels;
  g.grid_h = gh, g.grid_w = gw;
  g.values = latent_;
  g.vocabulary = discrete_ ? codes_ : 0;
  return g;
}

at::Tensor TorchScriptTokenizer::encoded(const at::Tensor& images) const {
  at::NoGradGuard ng;
  return by_chunks(images, [&](const at::Tensor& x) { return call("encode", images_to_nchw(x)); });
}

std::pair<at::Tensor, at::Tensor> TorchScriptTokenizer::moments(const at::Tensor& images) const {
  if (discrete_) return Tokenizer::moments(images);
  at::Tensor both = encoded(images).to(at::kFloat);
  auto parts = both.chunk(2, 1);
  at::Tensor logvar = at::clamp(parts[1], -30.0, 20.0);
  return {cells_to_tokens(parts[0]) * scale_, cells_to_tokens(logvar) + 2 * std::log(scale_)};
}

at::Tensor TorchScriptTokenizer::encode(const at::Tensor& images) const {
  if (!discrete_) return moments(images).first;
  at::Tensor codes = encoded(images);
  return codes.reshape({codes.size(0), -1}).to(at::kLong);
}

at::Tensor TorchScriptTokenizer::decode(const at::Tensor& tokens, const TokenGeometry& g) const {
  at::NoGradGuard ng;
  at::Tensor in = discrete_ ? tokens.reshape({tokens.size(0), g.grid_h, g.grid_w})
                            : tokens_to_cells(tokens.to(at::kFloat), g.grid_h, g.grid_w) / scale_;
  return by_chunks(in, [&](const at::Tensor& z) { return nchw_to_images(call("decode", z).to(at::kFloat)); });
}

void TorchScriptTokenizer::save(hid_t group) const {
  h5::write_attr(group, "kind", kind());
  h5::write_attr(group, "mdx_kind", declared_kind_);
  h5::write_attr(group, "stride", stride_);
  h5::write_attr(group, "latent_channels", latent_);
  h5::write_attr(group, "image_channels", channels_);
  if (discrete_) h5::write_attr(group, "codes", codes_);
  else h5::write_attr(group, "scaling_factor", scale_);
  h5::write_attr(group, "module_sha256", sha256_bytes(bytes_.data(), bytes_.size()));
  h5::write(group, "module", H5T_NATIVE_UINT8, {static_cast<hsize_t>(bytes_.size())}, bytes_.data());
}

void TorchScriptTokenizer::hash_contents(const std::function<void(const void*, size_t)>& add) const {
  add(bytes_.data(), bytes_.size());
}

}  // namespace mdx
