// Learned tokenizers fitted by mdx: a KL auto-encoder (kind `vae`, LMD's and Latent-UMD's token
// space, l-DAE's "conv VAE" and "patch-wise VAE/AE") and a VQ-VAE (kind `vq`, MAGE's discrete
// codes), each in two forms:
//
//   conv   a convolutional encoder/decoder (residual blocks, GroupNorm, SiLU, as the SD VAE and
//          VQGAN are built, much smaller): `stride` pixels per latent cell, a power of 2;
//   patch  an MLP on each p x p patch (l-DAE's patch-wise tokenizers): one token per patch.
//
// Either way a latent cell is one token of `latent` values (the VQ: one code of a `latent`-wide
// codebook vector). The VAE's tokens are the posterior mean times `scale`, the factor that makes
// the training latents unit-variance (how Stable Diffusion's 0.18215 was chosen); decode divides
// it out. The VQ's tokens are codes (int64), decoded through the codebook.
#pragma once
#include <hdf5.h>
#include <torch/script.h>
#include <torch/torch.h>

#include <map>
#include <memory>
#include <string>
#include <utility>

#include "mdx/tokenize/tokenizer.h"

namespace mdx {

// The architecture of a learned tokenizer's encoder and decoder.
struct CoderConfig {
  std::string form = "conv";  // conv | patch
  int64_t stride = 4;         // pixels per latent cell along each side (conv: a power of 2; patch: the patch)
  int64_t latent = 4;         // values per latent cell (the VQ: the code vector's width)
  int64_t width = 32;         // conv: channels at full resolution (x2 per halving, at most 4x); patch: MLP width
  int64_t channels = 1;       // of the images

  void validate() const;  // UsageError naming the option
  std::map<std::string, std::string> to_map() const;   // coder_* keys of a checkpoint's config
  static CoderConfig from_map(const std::map<std::string, std::string>& m, const std::string& where);
  // The latent grid of images of height x width x channels; Error when they do not fit.
  TokenGeometry geometry(int64_t height, int64_t width, int64_t channels) const;
  std::string describe() const;  // "conv, stride 4, 4 values per cell, width 32"
};

// Encoder (images -> `out` values per cell) and decoder (`latent` values per cell -> images), on
// NCHW float32 tensors in [-1, 1]. Latents are [B, k, gh, gw].
class CoderNetImpl : public torch::nn::Module {
 public:
  CoderNetImpl(const CoderConfig& cfg, int64_t out);
  at::Tensor encode(const at::Tensor& x);
  at::Tensor decode(const at::Tensor& z);
  const CoderConfig& config() const { return cfg_; }

 private:
  CoderConfig cfg_;
  int64_t out_;
  torch::nn::Sequential encoder_{nullptr}, decoder_{nullptr};
};
TORCH_MODULE(CoderNet);

// A copy of `net`'s weights in a new network (what a tokenizer keeps while its learner trains on).
CoderNet clone_coder(const CoderNet& net, int64_t out);

// uint8 NHWC images -> float32 NCHW in [-1, 1], and back.
at::Tensor images_to_nchw(const at::Tensor& images);
at::Tensor nchw_to_images(const at::Tensor& x);
// [B, k, gh, gw] <-> tokens [B, gh*gw, k] (row-major cells).
at::Tensor cells_to_tokens(const at::Tensor& z);
at::Tensor tokens_to_cells(const at::Tensor& tokens, int64_t grid_h, int64_t grid_w);

// The diagonal Gaussian posterior of the VAE: the KL divergence from N(0, 1), elementwise,
// 0.5 (mu^2 + exp(logvar) - 1 - logvar); and the reparameterized draw mu + exp(logvar / 2) eps.
at::Tensor gaussian_kl(const at::Tensor& mean, const at::Tensor& logvar);
at::Tensor reparameterize(const at::Tensor& mean, const at::Tensor& logvar, const at::Tensor& eps);
// The encoder's log-variance half, clamped to [-30, 20] as the SD VAE's posterior does.
std::pair<at::Tensor, at::Tensor> split_moments(const at::Tensor& moments);

class VaeTokenizer : public Tokenizer {
 public:
  // `net` encodes to 2 * latent values per cell (mean, log-variance).
  VaeTokenizer(CoderNet net, double scale, double beta);
  const CoderConfig& config() const { return net_->config(); }
  double scale() const { return scale_; }
  double beta() const { return beta_; }

  std::string kind() const override { return "vae"; }
  std::string describe() const override;
  TokenGeometry geometry(int64_t height, int64_t width, int64_t channels) const override;
  at::Tensor encode(const at::Tensor& images) const override;  // scale * posterior mean
  at::Tensor decode(const at::Tensor& tokens, const TokenGeometry& g) const override;
  // The posterior of uint8 images as tokens [B, L, latent], scaled: (scale * mean, logvar + 2 log scale).
  bool has_posterior() const override { return true; }
  std::pair<at::Tensor, at::Tensor> moments(const at::Tensor& images) const override;
  void save(hid_t group) const override;
  static std::shared_ptr<const Tokenizer> load(hid_t group, const std::string& where);

 protected:
  void hash_contents(const std::function<void(const void*, size_t)>& add) const override;

 private:
  mutable CoderNet net_;  // evaluation only: encode and decode are const
  double scale_, beta_;
};

// Nearest codebook vector of each row of z [N, d] under the Euclidean distance: int64 [N].
at::Tensor vq_assign(const at::Tensor& z, const at::Tensor& codebook);
// One EMA step of the codebook (van den Oord et al. 2017, appendix; as VQ-VAE-2 and taming's
// EMA quantizer): N <- decay N + (1 - decay) counts, m <- decay m + (1 - decay) sums, with
// Laplace smoothing of N (eps); returns the new codebook m / N. Updates cluster_size and embed_sum.
at::Tensor vq_ema_update(at::Tensor& cluster_size, at::Tensor& embed_sum, const at::Tensor& counts,
                         const at::Tensor& sums, double decay, double eps = 1e-5);
// Replaces the codes never used since the last check (usage == 0) by rows of `candidates` drawn
// with `gen`, resetting their EMA statistics to one assignment; returns how many were restarted.
int64_t restart_dead_codes(at::Tensor& codebook, at::Tensor& cluster_size, at::Tensor& embed_sum,
                           const at::Tensor& usage, const at::Tensor& candidates, at::Generator& gen);
// k-means (Lloyd, `iterations` rounds) on z [N, d] into k centres, seeded with k distinct rows
// drawn by `gen` (with repetition when N < k); empty clusters keep their centre.
at::Tensor kmeans(const at::Tensor& z, int64_t k, int64_t iterations, at::Generator& gen);
// exp(entropy) of the code histogram `counts`: the effective number of codes in use.
double perplexity(const at::Tensor& counts);

class VqTokenizer : public Tokenizer {
 public:
  // `net` encodes to `latent` values per cell; codebook [K, latent].
  VqTokenizer(CoderNet net, at::Tensor codebook, double commitment);
  const CoderConfig& config() const { return net_->config(); }
  const at::Tensor& codebook() const { return codebook_; }
  int64_t codes() const { return codebook_.size(0); }

  std::string kind() const override { return "vq"; }
  std::string describe() const override;
  TokenGeometry geometry(int64_t height, int64_t width, int64_t channels) const override;
  at::Tensor encode(const at::Tensor& images) const override;  // int64 codes [B, L]
  at::Tensor decode(const at::Tensor& ids, const TokenGeometry& g) const override;
  void save(hid_t group) const override;
  static std::shared_ptr<const Tokenizer> load(hid_t group, const std::string& where);

 protected:
  void hash_contents(const std::function<void(const void*, size_t)>& add) const override;

 private:
  mutable CoderNet net_;  // evaluation only: encode and decode are const
  at::Tensor codebook_;
  double commitment_;
};

// A tokenizer brought as a TorchScript module (share/mdx/sd_vae_to_torchscript.py for diffusers'
// AutoencoderKL, share/mdx/vqgan_to_torchscript.py for a taming-transformers VQGAN). The module
// declares its geometry as attributes and has two methods, on NCHW float32 images in [-1, 1]:
//
//   mdx_kind        "vae" or "vq"
//   stride          pixels per latent cell along each side
//   latent_channels k, the latent's channels (the VQ: the code vectors' width)
//   image_channels  C
//   scaling_factor  (vae) the latent scale, SD's 0.18215
//   codes           (vq) the codebook size K
//   encode(x [B,C,H,W]) -> vae: [B, 2k, H/s, W/s] (mean, then log-variance); vq: int64 [B, H/s, W/s]
//   decode(z)           -> [B, C, H, W]; z is the unscaled latent [B, k, h, w], or int64 codes [B, h, w]
//
// All is checked on load, and the output shapes again on the first images of a given size. A
// checkpoint copies the module's bytes in (dataset `module`), so it needs no other file.
class TorchScriptTokenizer : public Tokenizer {
 public:
  TorchScriptTokenizer(std::string bytes, const std::string& where);
  static std::shared_ptr<const Tokenizer> from_file(const std::string& path);
  static std::shared_ptr<const Tokenizer> load(hid_t group, const std::string& where);

  std::string kind() const override { return "torchscript"; }
  std::string describe() const override;
  TokenGeometry geometry(int64_t height, int64_t width, int64_t channels) const override;
  at::Tensor encode(const at::Tensor& images) const override;
  at::Tensor decode(const at::Tensor& tokens, const TokenGeometry& g) const override;
  bool has_posterior() const override { return !discrete_; }
  std::pair<at::Tensor, at::Tensor> moments(const at::Tensor& images) const override;
  void save(hid_t group) const override;

 protected:
  void hash_contents(const std::function<void(const void*, size_t)>& add) const override;

 private:
  at::Tensor call(const char* method, const at::Tensor& input) const;
  at::Tensor encoded(const at::Tensor& images) const;  // the module's encode() of uint8 images

  std::string bytes_, where_, declared_kind_;
  mutable torch::jit::Module module_;
  int64_t stride_ = 0, latent_ = 0, channels_ = 0, codes_ = 0;
  double scale_ = 1;
  bool discrete_ = false;
};

}  // namespace mdx
