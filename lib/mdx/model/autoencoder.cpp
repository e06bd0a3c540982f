#include "mdx/model/autoencoder.h"

#include <cmath>
#include <map>

#include <fmt/format.h>

#include "mdx/util/error.h"
#include "mdx/util/torch_compat.h"

namespace mdx {

namespace F = torch::nn::functional;

at::Tensor sincos_positions(int64_t dim, int64_t grid_h, int64_t grid_w) {
  // MAE: half the channels encode the row, half the column; each half is [sin | cos] of
  // position * 1/10000^(k / (dim/4)).
  auto axis = [&](const at::Tensor& pos) {
    const int64_t quarter = dim / 4;
    at::Tensor omega = 1.0 / at::pow(10000.0, at::arange(quarter, at::kDouble) / quarter);
    at::Tensor out = at::outer(pos.to(at::kDouble), omega);
    return at::cat({out.sin(), out.cos()}, 1);
  };
  at::Tensor ys = at::arange(grid_h, at::kDouble).repeat_interleave(grid_w);
  at::Tensor xs = at::arange(grid_w, at::kDouble).repeat({grid_h});
  // MAE's meshgrid puts w first: the first half of the channels encodes the column.
  return at::cat({axis(xs), axis(ys)}, 1).to(at::kFloat);
}

at::Tensor timestep_frequencies(const at::Tensor& t, int64_t dim, double max_period) {
  const int64_t half = dim / 2;
  at::Tensor freqs = at::exp(-std::log(max_period) * at::arange(half, at::kFloat) / half).to(t.device());
  at::Tensor args = t.to(at::kFloat).unsqueeze(1) * freqs.unsqueeze(0);
  return at::cat({args.cos(), args.sin()}, 1);
}

namespace {
at::Tensor modulate(const at::Tensor& x, const at::Tensor& shift, const at::Tensor& scale) {
  return x * (1 + scale.unsqueeze(1)) + shift.unsqueeze(1);
}
torch::nn::Linear linear(int64_t in, int64_t out) {
  torch::nn::Linear l(torch::nn::LinearOptions(in, out));
  torch::nn::init::xavier_uniform_(l->weight);
  torch::nn::init::zeros_(l->bias);
  return l;
}
torch::nn::Linear zero_linear(int64_t in, int64_t out) {
  torch::nn::Linear l(torch::nn::LinearOptions(in, out));
  torch::nn::init::zeros_(l->weight);
  torch::nn::init::zeros_(l->bias);
  return l;
}
torch::nn::LayerNorm plain_norm(int64_t dim) {
  return torch::nn::LayerNorm(torch::nn::LayerNormOptions({dim}).elementwise_affine(false).eps(1e-6));
}
torch::nn::Sequential time_embedder(int64_t dim) {
  torch::nn::Linear a(256, dim), b(dim, dim);
  for (auto* l : {&a, &b}) {
    torch::nn::init::normal_((*l)->weight, 0.0, 0.02);
    torch::nn::init::zeros_((*l)->bias);
  }
  return torch::nn::Sequential(a, torch::nn::SiLU(), b);
}
}  // namespace

AdaLNBlockImpl::AdaLNBlockImpl(int64_t dim, int64_t heads_, double mlp_ratio, double dropout_)
    : heads(heads_), dropout(dropout_) {
  const auto hidden = static_cast<int64_t>(dim * mlp_ratio);
  norm1 = register_module("norm1", plain_norm(dim));
  norm2 = register_module("norm2", plain_norm(dim));
  qkv = register_module("qkv", linear(dim, 3 * dim));
  proj = register_module("proj", linear(dim, dim));
  fc1 = register_module("fc1", linear(dim, hidden));
  fc2 = register_module("fc2", linear(hidden, dim));
  modulation = register_module("modulation", zero_linear(dim, 6 * dim));  // adaLN-Zero
}

at::Tensor AdaLNBlockImpl::forward(const at::Tensor& x, const at::Tensor& c) {
  auto m = modulation(F::silu(c)).chunk(6, 1);
  const int64_t B = x.size(0), N = x.size(1), dim = x.size(2);
  at::Tensor h = modulate(norm1(x), m[0], m[1]);
  auto qkv_ = qkv(h).reshape({B, N, 3, heads, dim / heads}).permute({2, 0, 3, 1, 4});
  // timm's Block (MAGE's): dropout on the attention weights, after the projection, after the
  // MLP's activation and after its output.
  const double p = is_training() ? dropout : 0.0;
  auto drop = [p](const at::Tensor& t) { return p > 0 ? at::dropout(t, p, true) : t; };
  at::Tensor a = compat::attention(qkv_[0], qkv_[1], qkv_[2], p);  // [B, heads, N, dim/heads]
  at::Tensor y = x + m[2].unsqueeze(1) * drop(proj(a.transpose(1, 2).reshape({B, N, dim})));
  h = modulate(norm2(y), m[3], m[4]);
  return y + m[5].unsqueeze(1) * drop(fc2(drop(F::gelu(fc1(h), F::GELUFuncOptions().approximate("tanh")))));
}

MaskedDiffusionAutoencoderImpl::MaskedDiffusionAutoencoderImpl(const ModelConfig& config) : config_(config) {
  const ModelConfig& c = config_;
  const int64_t D = c.token_dim(), W = c.dim, Wd = c.decoder_dim;
  const bool codes = c.discrete();
  if (!codes) patch_embed = register_module("patch_embed", linear(D, W));
  cls = register_parameter("cls", torch::randn({c.cls_tokens, W}) * 0.02);
  if (!codes) encoder_mask_token = register_parameter("encoder_mask_token", torch::randn({W}) * 0.02);
  // small-vision: pos_embedding and dec_pos_embedding, normal(stddev = 1/sqrt(h w)); MAGE's
  // position_embeddings and decoder_pos_embed_learned: normal(0.02).
  const double position_std = codes ? 0.02 : 1.0 / std::sqrt(static_cast<double>(c.grid_h * c.grid_w));
  positions = c.learned_positions()
                  ? register_parameter("positions", torch::randn({c.grid_h * c.grid_w, W}) * position_std)
                  : register_buffer("positions", sincos_positions(W, c.grid_h, c.grid_w));
  time_mlp = register_module("time_mlp", time_embedder(W));
  if (!c.shared_condition()) decoder_time_mlp = register_module("decoder_time_mlp", time_embedder(Wd));
  if (c.num_classes > 0) {
    label_table = register_module("label_table", torch::nn::Embedding(c.num_classes + 1, W));
    torch::nn::init::normal_(label_table->weight, 0.0, 0.02);
    if (!c.shared_condition()) {
      decoder_label_table = register_module("decoder_label_table", torch::nn::Embedding(c.num_classes + 1, Wd));
      torch::nn::init::normal_(decoder_label_table->weight, 0.0, 0.02);
    }
  }
  encoder = register_module("encoder", torch::nn::ModuleList());
  for (int64_t i = 0; i < c.depth; ++i) encoder->push_back(AdaLNBlock(W, c.heads, c.mlp_ratio, c.dropout));
  encoder_norm = register_module("encoder_norm", torch::nn::LayerNorm(torch::nn::LayerNormOptions({W}).eps(1e-6)));
  decoder_embed = register_module("decoder_embed", linear(W, Wd));
  prefix_embed = register_module("prefix_embed", linear(W, Wd));
  if (!codes) mask_token = register_parameter("mask_token", torch::randn({Wd}) * 0.02);
  decoder_positions =
      c.learned_positions()
          ? register_parameter("decoder_positions", torch::randn({c.grid_h * c.grid_w, Wd}) * position_std)
          : register_buffer("decoder_positions", sincos_positions(Wd, c.grid_h, c.grid_w));
  decoder = register_module("decoder", torch::nn::ModuleList());
  for (int64_t i = 0; i < c.decoder_depth; ++i)
    decoder->push_back(AdaLNBlock(Wd, c.decoder_heads, c.mlp_ratio, c.dropout));
  final_norm = register_module("final_norm", plain_norm(Wd));
  final_modulation = register_module("final_modulation", zero_linear(Wd, 2 * Wd));
  if (!codes) {
    head = register_module("head", zero_linear(Wd, 2 * D));  // x0 and eps
    return;
  }
  // MAGE's BertEmbeddings (word embeddings normal(0.02), LayerNorm eps 1e-6) and MlmLayer (its fc
  // initialized as every Linear, xavier_uniform; LayerNorm eps 1e-5; a zero bias per code).
  code_table = register_module("code_table", torch::nn::Embedding(c.vocabulary + 1, W));
  torch::nn::init::normal_(code_table->weight, 0.0, 0.02);
  code_norm = register_module("code_norm", torch::nn::LayerNorm(torch::nn::LayerNormOptions({W}).eps(1e-6)));
  mlm_fc = register_module("mlm_fc", linear(Wd, W));
  mlm_norm = register_module("mlm_norm", torch::nn::LayerNorm(torch::nn::LayerNormOptions({W}).eps(1e-5)));
  mlm_bias = register_parameter("mlm_bias", torch::zeros({c.vocabulary}));
}

at::Tensor MaskedDiffusionAutoencoderImpl::embed(const at::Tensor& tokens, const at::Tensor& masked) {
  const bool any_masked = masked.defined();
  if (!config_.discrete()) {
    at::Tensor x = patch_embed(tokens) + positions;
    // MAGE's mask policy: masked tokens that are not dropped reach the encoder as the mask token.
    return any_masked ? at::where(masked.unsqueeze(-1), encoder_mask_token + positions, x) : x;
  }
  const int64_t K = config_.vocabulary;
  if (tokens.dim() != 2 || tokens.scalar_type() != at::kLong)
    throw Error(fmt::format("a model of {} codes takes int64 codes [B, L], got {} [{}]", K,
                            c10::toString(tokens.scalar_type()), fmt::join(tokens.sizes(), ",")));
  if (((tokens < 0) | (tokens >= K)).any().item<bool>())
    throw Error(fmt::format("codes outside [0, {}) given to a model of {} codes", K, K));
  at::Tensor ids = any_masked ? at::where(masked, at::full_like(tokens, K), tokens) : tokens;
  at::Tensor x = code_norm(code_table(ids) + positions);
  return is_training() && config_.dropout > 0 ? at::dropout(x, config_.dropout, true) : x;
}

at::Tensor MaskedDiffusionAutoencoderImpl::code_logits(const at::Tensor& h) {
  // (LibTorch 1.13's CPU LayerNorm takes its input in its weight's float32, not autocast's bf16.)
  at::Tensor z = mlm_norm(F::gelu(mlm_fc(h)).to(at::kFloat));
  // MAGE scores against word_embeddings.weight.data.detach(): the table learns from the input side only.
  at::Tensor table = code_table->weight.slice(0, 0, config_.vocabulary).detach();
  return at::matmul(z, table.t().to(z.scalar_type())) + mlm_bias;
}

at::Tensor MaskedDiffusionAutoencoderImpl::condition(const at::Tensor& time_index, const at::Tensor& labels,
                                                     bool decoder_side) {
  // Shared (UMD): the encoder's vector serves the decoder and the final modulation too.
  if (config_.shared_condition()) decoder_side = false;
  at::Tensor freqs = timestep_frequencies(time_index, 256);
  at::Tensor c = decoder_side ? decoder_time_mlp->forward(freqs) : time_mlp->forward(freqs);
  if (config_.num_classes > 0 && labels.defined())
    c = c + (decoder_side ? decoder_label_table(labels) : label_table(labels));
  return c;
}

std::vector<at::Tensor> MaskedDiffusionAutoencoderImpl::run_encoder(const at::Tensor& x, const at::Tensor& keep,
                                                                    const at::Tensor& c, int64_t last) {
  const int64_t G = x.size(0), W = x.size(2), depth = static_cast<int64_t>(encoder->size());
  // An undefined `keep`: every token is kept, nothing to gather (DiT, l-DAE, embedding).
  at::Tensor visible = keep.defined() ? x.gather(1, keep.unsqueeze(-1).expand({G, keep.size(1), W})) : x;
  at::Tensor h = at::cat({cls.unsqueeze(0).expand({G, cls.size(0), W}), visible}, 1);
  std::vector<at::Tensor> out;
  for (int64_t i = 0; i < depth; ++i) {
    h = (*encoder)[i]->as<AdaLNBlock>()->forward(h, c);
    if (i >= depth - last) out.push_back(encoder_norm(h));
  }
  return out;
}

ModelOutput MaskedDiffusionAutoencoderImpl::forward(const ModelInput& in) {
  const int64_t B = in.tokens.size(0), L = in.tokens.size(1), W = config_.dim, Wd = config_.decoder_dim;
  const int64_t C = config_.cls_tokens;
  at::Tensor dropped = in.dropped.defined() ? in.dropped : at::zeros({B, L}, in.tokens.options().dtype(at::kBool));
  at::Tensor masked = in.masked.defined() ? in.masked : dropped;
  // Masked tokens the encoder sees (as the mask token): MAGE's masked-but-kept ones; asked once.
  at::Tensor token_only = masked & ~dropped;
  const bool any_token_only = token_only.any().item<bool>();
  at::Tensor x = embed(in.tokens, any_token_only ? token_only : at::Tensor());
  at::Tensor c_enc = condition(in.time_index, in.labels, false);

  // Rows keep different numbers of tokens (UMD's two steps): encode each group of equal count.
  at::Tensor kept = (~dropped).sum(1).to(at::kCPU).to(at::kLong).contiguous();
  std::map<int64_t, std::vector<int64_t>> groups;
  const int64_t* k = kept.data_ptr<int64_t>();
  for (int64_t i = 0; i < B; ++i) groups[k[i]].push_back(i);
  at::Tensor full = config_.discrete() ? at::zeros({B, L, Wd}, x.options().dtype(at::kFloat))
                                       : mask_token.expand({B, L, Wd}).contiguous();
  at::Tensor representation = at::empty({B, W}, x.options());
  for (auto& [K, rows_vec] : groups) {
    const auto G = static_cast<int64_t>(rows_vec.size());
    at::Tensor rows = at::tensor(rows_vec, at::kLong).to(x.device());
    bool all = G == B;
    if (all && K == L) {  // nothing dropped: no gather, no scatter
      at::Tensor h = run_encoder(x, {}, c_enc).back();
      representation = h.slice(1, 0, C).mean(1);
      full = decoder_embed(h.slice(1, C));
      break;
    }
    at::Tensor keep = (~(all ? dropped : dropped.index_select(0, rows))).nonzero().select(1, 1).reshape({G, K});
    at::Tensor h = run_encoder(all ? x : x.index_select(0, rows), keep,
                               all ? c_enc : c_enc.index_select(0, rows)).back();
    // Under bf16 autocast the linear layers return bf16: back to the float32 of the mask tokens
    // they are scattered among.
    at::Tensor rep = h.slice(1, 0, C).mean(1).to(representation.scalar_type());
    at::Tensor dec = decoder_embed(h.slice(1, C)).to(full.scalar_type());  // [G, K, Wd]
    at::Tensor part = (all ? full : full.index_select(0, rows)).scatter(1, keep.unsqueeze(-1).expand({G, K, Wd}), dec);
    if (all) {
      full = part;
      representation = rep;
    } else {
      full = full.index_copy(0, rows, part);
      representation = representation.index_copy(0, rows, rep);
    }
  }
  at::Tensor prefix = prefix_embed(representation);  // [B, Wd], the decoder's buffer token
  // Every masked token, dropped or kept, holds the mask token in the decoder: the learned one, or
  // (codes) the buffer token as MAGE's pad_with_cls_token.
  if (config_.discrete())
    full = at::where(masked.unsqueeze(-1), prefix.unsqueeze(1).to(full.scalar_type()), full);
  else if (any_token_only)
    full = at::where(masked.unsqueeze(-1), mask_token.to(full.scalar_type()), full);
  at::Tensor c_dec = config_.shared_condition() ? c_enc : condition(in.time_index, in.labels, true);
  at::Tensor h = at::cat({prefix.unsqueeze(1).to(full.scalar_type()), full + decoder_positions}, 1);
  for (const auto& block : *decoder) h = block->as<AdaLNBlock>()->forward(h, c_dec);
  auto m = final_modulation(F::silu(c_dec)).chunk(2, 1);
  at::Tensor y = modulate(final_norm(h), m[0], m[1]).slice(1, 1);  // drop the prefix
  ModelOutput out;
  out.representation = representation;
  out.decoder_tokens = full;
  if (config_.discrete()) {
    out.logits = code_logits(y);
  } else {
    auto parts = head(y).chunk(2, 2);
    out.x0 = parts[0], out.eps = parts[1];
  }
  return out;
}

at::Tensor MaskedDiffusionAutoencoderImpl::encode(const at::Tensor& tokens, const at::Tensor& time_index,
                                                  const at::Tensor& labels) {
  return encode_layers(tokens, time_index, labels, 1).back();
}

std::vector<at::Tensor> MaskedDiffusionAutoencoderImpl::encode_layers(const at::Tensor& tokens,
                                                                      const at::Tensor& time_index,
                                                                      const at::Tensor& labels, int64_t last) {
  const int64_t depth = static_cast<int64_t>(encoder->size());
  if (last < 1 || last > depth)
    throw Error(fmt::format("the encoder has {} blocks; asked for the last {}", depth, last));
  return run_encoder(embed(tokens, {}), {}, condition(time_index, labels, false), last);
}

double MaskedDiffusionAutoencoderImpl::forward_flops(int64_t rows, int64_t kept) const {
  const ModelConfig& c = config_;
  const double D = static_cast<double>(c.token_dim()), L = static_cast<double>(c.tokens());
  auto block = [&](double n, double w) {
    const double hidden = w * c.mlp_ratio;
    // qkv + proj + mlp matmuls, attention scores and weighted sum, adaLN modulation
    return 2 * n * (3 * w * w + w * w + 2 * w * hidden) + 2 * 2 * n * n * w + 2 * w * 6 * w;
  };
  const double n_enc = static_cast<double>(c.cls_tokens + kept), n_dec = L + 1, W = c.dim, Wd = c.decoder_dim;
  const double K = static_cast<double>(c.vocabulary);
  double f = c.discrete() ? 0 : 2 * L * D * W;               // patch embedding (codes: a lookup)
  f += c.depth * block(n_enc, W);                            // encoder
  f += 2 * kept * W * Wd + 2 * W * Wd;                       // decoder and prefix embeddings
  f += c.decoder_depth * block(n_dec, Wd);                   // decoder
  f += c.discrete() ? 2 * L * (Wd * W + W * K)               // MLM head (the prefix is dropped)
                    : 2 * n_dec * Wd * 2 * D;                // x0/eps head
  f += 2 * Wd * 2 * Wd;                                      // final modulation
  f += 2 * (2 * 256 * W + 2 * W * W) / 2;                    // time embedding MLPs (roughly)
  return f * static_cast<double>(rows);
}

}  // namespace mdx
