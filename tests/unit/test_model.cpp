// The model: sin-cos positions against MAE's formula, adaLN-Zero blocks are the identity at
// initialization, encoder token counts per objective, the UMD batch split through one forward.
#include <doctest/doctest.h>
#include <torch/torch.h>

#include <cmath>

#include "mdx/corrupt/objective.h"
#include "mdx/model/autoencoder.h"
#include "mdx/train/checkpoint.h"
#include "mdx/train/optim.h"
#include "mdx/util/error.h"
#include "mdx/util/torch_compat.h"

using namespace mdx;

namespace {
ModelConfig small_config(int64_t classes = 0) {
  ModelConfig c;
  c.height = 8, c.width = 8, c.channels = 1, c.patch = 2;
  c.dim = 32, c.depth = 2, c.heads = 4, c.decoder_depth = 1;
  c.num_classes = classes;
  c.resolve();
  return c;
}
}  // namespace

TEST_CASE("UMD's form: learned positions N(0, 1/sqrt(hw)) on each side, one conditioning vector") {
  ModelConfig c;
  c.height = 32, c.width = 32, c.channels = 1, c.patch = 2;  // 16 x 16 = 256 tokens: std 1/16
  c.dim = 32, c.depth = 1, c.heads = 4, c.decoder_depth = 1, c.num_classes = 3;
  c.positions = "learned", c.condition = "shared";
  c.resolve();
  torch::manual_seed(0);
  MaskedDiffusionAutoencoder m(c);
  std::map<std::string, at::Tensor> params;
  for (const auto& p : m->named_parameters()) params[p.key()] = p.value();
  REQUIRE(params.count("positions"));
  REQUIRE(params.count("decoder_positions"));
  CHECK(params.at("positions").std().item<double>() == doctest::Approx(1.0 / 16).epsilon(0.05));
  CHECK(params.at("decoder_positions").std().item<double>() == doctest::Approx(1.0 / 16).epsilon(0.05));
  CHECK_FALSE(params.at("positions").equal(params.at("decoder_positions")));  // two tables
  for (const auto& [name, _] : params) {
    CHECK(name.rfind("decoder_time_mlp", 0) != 0);
    CHECK(name.rfind("decoder_label_table", 0) != 0);
  }
  // Gradients reach both position tables and the one time MLP through the decoder.
  ModelInput in;
  in.tokens = torch::randn({2, 256, 4});
  in.time_index = torch::tensor({0, 7}, torch::kLong);
  in.labels = torch::tensor({1, 3}, torch::kLong);
  for (auto& [name, p] : params)
    if (name.find("modulation") != std::string::npos || name.rfind("head", 0) == 0)
      p.data().normal_(0, 0.02);  // off adaLN-Zero's zeros, or nothing flows back
  m->forward(in).x0.pow(2).sum().backward();
  CHECK(params.at("positions").grad().abs().sum().item<double>() > 0);
  CHECK(params.at("decoder_positions").grad().abs().sum().item<double>() > 0);
  CHECK(params.at("time_mlp.0.weight").grad().abs().sum().item<double>() > 0);
  // A shared vector needs equal widths; old checkpoints (no keys) read as sin-cos, separate.
  ModelConfig wide = c;
  wide.decoder_dim = 64, wide.decoder_heads = 4;
  CHECK_THROWS_AS(wide.resolve(), UsageError);
  auto map = c.to_map();
  CHECK(ModelConfig::from_map(map).learned_positions());
  map.erase("positions"), map.erase("condition");
  const ModelConfig old = ModelConfig::from_map(map);
  CHECK(old.positions == "sincos");
  CHECK(old.condition == "separate");
}

TEST_CASE("2-D sin-cos positions follow MAE's formula") {
  auto pos = sincos_positions(8, 2, 3);  // quarter = 2: omega = 1, 1/100
  CHECK(pos.sizes() == torch::IntArrayRef({6, 8}));
  // Token 4 is row 1, column 1; the first half of the channels encodes the column (MAE's w-first grid).
  int tok = 4;
  double col = 1, row = 1;
  double omega[2] = {1.0, 0.01};
  for (int k = 0; k < 2; ++k) {
    CHECK(pos[tok][k].item<float>() == doctest::Approx(std::sin(col * omega[k])));
    CHECK(pos[tok][2 + k].item<float>() == doctest::Approx(std::cos(col * omega[k])));
    CHECK(pos[tok][4 + k].item<float>() == doctest::Approx(std::sin(row * omega[k])));
    CHECK(pos[tok][6 + k].item<float>() == doctest::Approx(std::cos(row * omega[k])));
  }
  CHECK(pos[5][0].item<float>() == doctest::Approx(std::sin(2.0)));  // row 1, column 2
}

TEST_CASE("adaLN-Zero blocks are the identity at initialization") {
  torch::manual_seed(0);
  AdaLNBlock block(16, 4, 4.0);
  auto x = torch::randn({3, 5, 16}), c = torch::randn({3, 16});
  CHECK(block->forward(x, c).equal(x));
  // Once the modulation is trained away from zero the block is no longer the identity.
  torch::NoGradGuard ng;
  block->modulation->bias.fill_(0.5);
  CHECK_FALSE(block->forward(x, c).allclose(x));
}

TEST_CASE("the model's head is zero at initialization; shapes of both predictions") {
  torch::manual_seed(0);
  MaskedDiffusionAutoencoder m(small_config());
  ModelInput in;
  in.tokens = torch::randn({4, 16, 4});
  in.time_index = torch::tensor({0, 1, 500, 1000}, torch::kLong);
  auto out = m->forward(in);
  CHECK(out.x0.sizes() == torch::IntArrayRef({4, 16, 4}));
  CHECK(out.eps.sizes() == torch::IntArrayRef({4, 16, 4}));
  CHECK(out.representation.sizes() == torch::IntArrayRef({4, 32}));
  CHECK(out.x0.abs().max().item<float>() == 0.0f);
}

TEST_CASE("the encoder sees only the kept tokens; rows of different counts go through one forward") {
  torch::manual_seed(1);
  MaskedDiffusionAutoencoder m(small_config());
  auto gen = compat::cpu_generator(3);
  auto x0 = torch::rand({6, 16, 4}) * 2 - 1;
  auto umd = objective_from_config({{"objective", "umd"}});
  Corrupted c = umd->sample(x0, 0, 10, gen);
  // 3 representation rows keep int(16 * 0.25) = 4 tokens; 3 noisy rows keep int(16 * 0.625) = 10.
  auto kept = (~c.dropped).sum(1);
  CHECK(kept.slice(0, 0, 3).eq(4).all().item<bool>());
  CHECK(kept.slice(0, 3).eq(10).all().item<bool>());
  ModelInput in{c.xt, c.time_index, {}, c.dropped, c.masked};
  auto out = m->forward(in);
  // Each row's representation equals that of the row encoded alone (grouping changes nothing).
  for (int64_t r : {0, 4}) {
    ModelInput one{c.xt.slice(0, r, r + 1), c.time_index.slice(0, r, r + 1), {}, c.dropped.slice(0, r, r + 1),
                   c.masked.slice(0, r, r + 1)};
    auto alone = m->forward(one);
    CHECK(torch::allclose(alone.representation[0], out.representation[r], 1e-5, 1e-5));
  }
  // Changing a dropped token's value does not change the representation.
  auto tokens2 = c.xt.clone();
  tokens2.masked_fill_(c.dropped.unsqueeze(-1), 7.0);
  auto out2 = m->forward(ModelInput{tokens2, c.time_index, {}, c.dropped, c.masked});
  CHECK(torch::allclose(out2.representation, out.representation, 1e-6, 1e-6));
  // FLOPs grow with the kept tokens: the UMD representation row costs less than a DiT row.
  CHECK(m->forward_flops(1, 4) < m->forward_flops(1, 16));
}

TEST_CASE("class conditioning: the null class exists, and labels change the output once trained") {
  torch::manual_seed(2);
  MaskedDiffusionAutoencoder m(small_config(3));
  ModelInput in;
  in.tokens = torch::randn({2, 16, 4});
  in.time_index = torch::tensor({10, 10}, torch::kLong);
  in.labels = torch::tensor({0, 3}, torch::kLong);  // 3 = the null class
  auto out = m->forward(in);
  CHECK(out.x0.size(0) == 2);
}

TEST_CASE("losses: hand-computed cases") {
  const int64_t B = 2, L = 4, D = 2;
  auto x0 = torch::zeros({B, L, D});
  Corrupted c;
  c.masked = torch::tensor({1, 1, 0, 0, 1, 0, 0, 0}, torch::kBool).view({B, L});
  c.dropped = c.masked;
  c.representation = torch::tensor({1, 0}, torch::kBool);
  c.eps = torch::zeros({B, L, D});
  c.t = torch::tensor({-1, 5}, torch::kLong);
  ModelOutput out;
  out.x0 = torch::ones({B, L, D});  // x0-MSE = 1 on every token
  out.eps = torch::full({B, L, D}, 2.0);  // eps-MSE = 4 on every token
  auto umd = objective_from_config({{"objective", "umd"}});
  Loss l = umd->loss(c, x0, out, {});
  // (1 - 0.5) * 1/2 * (4 + 1) + 0.5 * 1 = 1.75
  CHECK(l.total.item<float>() == doctest::Approx(1.75));
  {  // the realised share weighs the steps (small-vision's n_rep / B): 1 row of 4, not --rep-share 0.5
    Corrupted c4;
    c4.masked = torch::tensor({1, 1, 0, 0, 1, 0, 0, 0, 1, 0, 0, 0, 1, 0, 0, 0}, torch::kBool).view({4, L});
    c4.dropped = c4.masked;
    c4.representation = torch::tensor({1, 0, 0, 0}, torch::kBool);
    c4.eps = torch::zeros({4, L, D});
    ModelOutput o4;
    o4.x0 = torch::ones({4, L, D});
    o4.eps = torch::full({4, L, D}, 2.0);
    // (1 - 1/4) * 1/2 * (4 + 1) + 1/4 * 1 = 2.125
    CHECK(umd->loss(c4, torch::zeros({4, L, D}), o4, {}).total.item<float>() == doctest::Approx(2.125));
  }
  // MAE: x0-MSE on the masked tokens only: make unmasked tokens wrong, masked right.
  out.x0 = torch::where(c.masked.unsqueeze(-1), torch::full({B, L, D}, 0.5), torch::full({B, L, D}, 9.0));
  Loss m = objective_from_config({{"objective", "mae"}})->loss(c, x0, out, {});
  CHECK(m.total.item<float>() == doctest::Approx(0.25));
  // DiT: eps-MSE over all tokens.
  Loss d = objective_from_config({{"objective", "dit"}})->loss(c, x0, out, {});
  CHECK(d.total.item<float>() == doctest::Approx(4.0));
  // MAE's normalized-pixel target: (x - mean) / sqrt(var + 1e-6), var unbiased.
  auto x = torch::tensor({1.0f, 3.0f}).view({1, 1, 2});
  Corrupted one;
  one.masked = torch::ones({1, 1}, torch::kBool);
  ModelOutput pred;
  pred.x0 = torch::tensor({-1.0f, 1.0f}).view({1, 1, 2}) / std::sqrt(2.0f + 1e-6f);
  Loss n = objective_from_config({{"objective", "mae"}, {"norm_pix", "1"}})->loss(one, x, pred, {});
  CHECK(n.total.item<float>() == doctest::Approx(0.0).epsilon(1e-5));
}

TEST_CASE("AdamW matches its closed form on the first step; warm-up and cosine schedule") {
  auto p = torch::tensor({1.0, -2.0}, torch::kDouble).requires_grad_(true);
  auto w = torch::ones({2, 2}, torch::kDouble).requires_grad_(true);
  AdamWOptions o;
  o.lr = 0.1, o.weight_decay = 0.5;
  AdamW opt({{"bias", p}, {"weight", w}}, o);
  p.mutable_grad() = torch::tensor({0.5, -0.25}, torch::kDouble);
  w.mutable_grad() = torch::full({2, 2}, 3.0, torch::kDouble);
  opt.step();
  // Step 1: m_hat = g, v_hat = g^2, update = lr * g / (|g| + eps) = lr * sign(g); decay only on w.
  CHECK(p[0].item<double>() == doctest::Approx(1.0 - 0.1));
  CHECK(p[1].item<double>() == doctest::Approx(-2.0 + 0.1));
  CHECK(w[0][0].item<double>() == doctest::Approx(1.0 * (1 - 0.1 * 0.5) - 0.1));
  CHECK(warmup_cosine_lr(1.0, 0, 10, 110) == 0.0);
  CHECK(warmup_cosine_lr(1.0, 5, 10, 110) == doctest::Approx(0.5));
  CHECK(warmup_cosine_lr(1.0, 10, 10, 110) == doctest::Approx(1.0));
  CHECK(warmup_cosine_lr(1.0, 60, 10, 110) == doctest::Approx(0.5));
  CHECK(warmup_cosine_lr(1.0, 110, 10, 110) == doctest::Approx(0.0));
  CHECK(decays("encoder.0.qkv.weight", torch::zeros({2, 2})));
  CHECK_FALSE(decays("encoder.0.qkv.bias", torch::zeros({2})));
  CHECK_FALSE(decays("cls", torch::zeros({4, 2})));
}

TEST_CASE("gradient clipping scales to the maximum norm") {
  auto a = torch::zeros({2}).requires_grad_(true);
  a.mutable_grad() = torch::tensor({3.0f, 4.0f});
  CHECK(clip_grad_norm({a}, 1.0) == doctest::Approx(5.0));
  CHECK(a.grad().norm().item<float>() == doctest::Approx(1.0).epsilon(1e-5));
}

TEST_CASE("copy_weights: exact copy; strict refuses a missing or reshaped tensor, loose keeps it fresh") {
  torch::manual_seed(1);
  MaskedDiffusionAutoencoder a(small_config()), b(small_config());
  std::map<std::string, at::Tensor> weights;
  for (const auto& p : a->named_parameters()) weights[p.key()] = p.value().detach().clone();
  CHECK(copy_weights(*b, weights, "a.h5", true).empty());
  for (const auto& p : b->named_parameters()) CHECK(torch::equal(p.value(), weights.at(p.key())));

  auto missing = weights;
  missing.erase("head.weight");
  CHECK_THROWS_WITH_AS(copy_weights(*b, missing, "a.h5", true), "'a.h5' lacks the weights 'head.weight'", Error);
  auto reshaped = weights;
  reshaped["mask_token"] = torch::zeros({3});
  const std::string expected = "'a.h5': 'mask_token' has shape [3], the configuration implies [" +
                               std::to_string(b->named_parameters()["mask_token"].size(0)) + "]";
  CHECK_THROWS_WITH_AS(copy_weights(*b, reshaped, "a.h5", true), expected.c_str(), Error);
  // A class-conditional model initialized from an unconditional one: only the label tables are new.
  MaskedDiffusionAutoencoder c(small_config(10));
  auto fresh = copy_weights(*c, weights, "a.h5", false);
  CHECK(fresh == std::vector<std::string>{"label_table.weight", "decoder_label_table.weight"});
  CHECK(torch::equal(c->named_parameters()["head.weight"], weights.at("head.weight")));
}
