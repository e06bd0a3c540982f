// The masked-diffusion auto-encoder (UMD, Hansen-Estruch et al. 2024), which also serves as MAE,
// l-DAE and DiT:
//   encoder  patch embedding of the tokens + fixed 2-D sin-cos positions; the tokens that are not
//            dropped are gathered (never mask tokens, except MAGE's masked-but-kept ones) and
//            prefixed with CLS tokens; ViT blocks with adaLN-Zero conditioning (DiT, Peebles & Xie
//            2022) on the time index and the class; the representation is the mean of the CLS
//            outputs.
//   decoder  the representation as a prefix token, the encoder's outputs at their positions and a
//            learned mask token at the dropped ones, its own sin-cos positions; adaLN-Zero blocks;
//            a final adaLN layer whose head predicts x0 and eps (2D values per token).
//   codes    (a discrete token space, MAGE, Li et al. 2022) the input is a VQ code per token: a
//            learned embedding of the K codes and a [MASK] id, + learned positions, LayerNorm and
//            dropout (MAGE's BertEmbeddings); masked-but-kept tokens reach the encoder as the
//            [MASK] id; in the decoder every masked token holds the buffer token (the decoder's
//            copy of the representation, as MAGE's pad_with_cls_token); an MLM head (Linear to the
//            encoder width, GELU, LayerNorm) scores the codes against the embedding table (not
//            trained through the head, as MAGE's detach) + a bias: logits [B, L, K].
#pragma once
#include <torch/torch.h>

#include "mdx/model/config.h"

namespace mdx {

// 2-D sin-cos position embedding of MAE (get_2d_sincos_pos_embed), float32 [gh*gw, dim].
at::Tensor sincos_positions(int64_t dim, int64_t grid_h, int64_t grid_w);
// DiT's sinusoidal embedding of (possibly fractional) time indices: float32 [B, dim].
at::Tensor timestep_frequencies(const at::Tensor& t, int64_t dim, double max_period = 10000.0);

class AdaLNBlockImpl : public torch::nn::Module {
 public:
  AdaLNBlockImpl(int64_t dim, int64_t heads, double mlp_ratio, double dropout = 0.0);
  // x [B, N, dim], c [B, dim] (the conditioning, before SiLU)
  at::Tensor forward(const at::Tensor& x, const at::Tensor& c);

  torch::nn::LayerNorm norm1{nullptr}, norm2{nullptr};
  torch::nn::Linear qkv{nullptr}, proj{nullptr}, fc1{nullptr}, fc2{nullptr}, modulation{nullptr};
  int64_t heads;
  double dropout;  // on the attention weights, the projection and the MLP (timm's Block), in training
};
TORCH_MODULE(AdaLNBlock);

struct ModelInput {
  at::Tensor tokens;      // [B, L, D] corrupted tokens; int64 codes [B, L] in a discrete space
  at::Tensor time_index;  // int64 [B]: 0 = clean, t + 1 = noised at t
  at::Tensor labels;      // int64 [B], the null class = num_classes; undefined when unconditional
  at::Tensor dropped;     // bool [B, L]: not given to the encoder (undefined: none)
  at::Tensor masked;      // bool [B, L]: replaced by the mask token (undefined: as dropped)
};

struct ModelOutput {
  at::Tensor x0, eps;        // [B, L, D] (continuous spaces)
  at::Tensor logits;         // [B, L, K] (discrete spaces)
  at::Tensor representation; // [B, dim]
  at::Tensor decoder_tokens; // [B, L, decoder dim]: the decoder's token inputs before positions
};

class MaskedDiffusionAutoencoderImpl : public torch::nn::Module {
 public:
  explicit MaskedDiffusionAutoencoderImpl(const ModelConfig& config);
  const ModelConfig& config() const { return config_; }

  ModelOutput forward(const ModelInput& in);
  // The encoder alone on every token (nothing dropped, nothing masked): its normalized outputs [B, C + L, dim], the C
  // CLS tokens first (their mean is the representation), then the L patch tokens in order.
  at::Tensor encode(const at::Tensor& tokens, const at::Tensor& time_index, const at::Tensor& labels = {});
  // The same pass, returning the outputs of the last `last` blocks (1 <= last <= depth), each through
  // the encoder's final norm (DINO's get_intermediate_layers), the deepest last: [B, C + L, dim] each.
  std::vector<at::Tensor> encode_layers(const at::Tensor& tokens, const at::Tensor& time_index,
                                        const at::Tensor& labels, int64_t last);
  // Model FLOPs of one forward pass of B rows with `kept` encoder tokens each (matmuls only, 2 per MAC).
  double forward_flops(int64_t rows, int64_t kept) const;

 private:
  at::Tensor condition(const at::Tensor& time_index, const at::Tensor& labels, bool decoder);
  // Encoder over rows that all keep the same `keep` [G, K] token indices (undefined: every token);
  // returns the normalized outputs of its last `last` blocks, [G, C + K, dim] each, the deepest last.
  std::vector<at::Tensor> run_encoder(const at::Tensor& x, const at::Tensor& keep, const at::Tensor& c,
                                      int64_t last = 1);
  // The encoder's input [B, L, dim] with positions: `masked` tokens (not dropped; undefined when
  // none) as the mask token.
  at::Tensor embed(const at::Tensor& tokens, const at::Tensor& masked);
  // The discrete space's MLM head: decoder outputs [B, L, Wd] -> logits [B, L, K].
  at::Tensor code_logits(const at::Tensor& h);

  ModelConfig config_;
  torch::nn::Linear patch_embed{nullptr}, decoder_embed{nullptr}, prefix_embed{nullptr};
  torch::nn::Sequential time_mlp{nullptr}, decoder_time_mlp{nullptr};
  torch::nn::Embedding label_table{nullptr}, decoder_label_table{nullptr};
  torch::nn::ModuleList encoder{nullptr}, decoder{nullptr};
  torch::nn::LayerNorm encoder_norm{nullptr}, final_norm{nullptr};
  torch::nn::Linear final_modulation{nullptr}, head{nullptr};
  at::Tensor cls, encoder_mask_token, mask_token, positions, decoder_positions;
  // Discrete spaces (config().discrete()).
  torch::nn::Embedding code_table{nullptr};  // K + 1 rows: the codes, then [MASK]
  torch::nn::LayerNorm code_norm{nullptr}, mlm_norm{nullptr};
  torch::nn::Linear mlm_fc{nullptr};
  at::Tensor mlm_bias;
};
TORCH_MODULE(MaskedDiffusionAutoencoder);

}  // namespace mdx
