// MAGE on codes and MaskGIT's decoding against hand-computed references: the mask and drop counts
// per ratio, the label-smoothed cross-entropy over the masked codes only, what the encoder and the
// decoder see at masked-but-kept positions, MaskGIT's cosine count of unknown codes, known codes
// never put back, determinism, and choosing the least confident at temperature 0.
#include <doctest/doctest.h>
#include <torch/torch.h>

#include <cmath>
#include <limits>
#include <map>

#include "mdx/corrupt/objective.h"
#include "mdx/eval/maskgit_sampler.h"
#include "mdx/eval/sampler.h"
#include "mdx/model/autoencoder.h"
#include "mdx/util/error.h"
#include "mdx/util/torch_compat.h"

using namespace mdx;

namespace {

std::unique_ptr<Objective> mage() {
  ObjectiveSettings s;
  s.mask_policy = find_objective("mage").mask_policy;
  return make_objective("mage", s);
}

// A code model of 4 x 4 tokens over K codes, every weight random (the blocks no longer the
// identity, so that attention mixes the tokens).
MaskedDiffusionAutoencoder code_model(int64_t K, int64_t classes = 0) {
  ModelConfig c;
  c.height = 8, c.width = 8, c.channels = 1, c.patch = 2;
  c.grid_h = 4, c.grid_w = 4, c.values = 8, c.vocabulary = K;
  c.dim = 32, c.depth = 2, c.heads = 4, c.decoder_depth = 2, c.num_classes = classes;
  c.positions = "learned";
  c.resolve();
  torch::manual_seed(7);
  MaskedDiffusionAutoencoder m(c);
  torch::NoGradGuard ng;
  for (auto& p : m->parameters()) p.normal_(0.0, 0.2);
  m->eval();
  return m;
}

}  // namespace

TEST_CASE("MAGE objective: one truncated-normal ratio per batch, ceil(L r) masked, ceil(L/2) of them dropped") {
  auto o = mage();
  CHECK(o->discrete());
  CHECK(o->generator() == "maskgit");
  CHECK(o->settings().mask_policy == MaskPolicy::Mage);
  auto g = compat::cpu_generator(11);
  at::Tensor codes = at::randint(0, 512, {8, 49}, g, at::TensorOptions().dtype(at::kLong));
  for (int trial = 0; trial < 20; ++trial) {
    Corrupted c = o->sample(codes, trial, 100, g);
    const double r = c.mask_ratio[0].item<double>();
    CHECK(r >= 0.5);
    CHECK(r <= 1.0);
    CHECK(c.mask_ratio.eq(r).all().item<bool>());
    CHECK(c.masked.sum(1).eq(static_cast<int64_t>(std::ceil(49 * r))).all().item<bool>());
    CHECK(c.dropped.sum(1).eq(25).all().item<bool>());  // ceil(49 * 0.5)
    CHECK((c.dropped & ~c.masked).sum().item<int64_t>() == 0);
    CHECK(c.xt.equal(codes));  // masked codes keep their values; the model puts [MASK] in
    CHECK(c.time_index.eq(0).all().item<bool>());
    CHECK_FALSE(c.eps.defined());
  }
  // Of 16 codes at r = 0.6: ceil(9.6) = 10 masked, 8 dropped.
  Corrupted k = o->apply(codes.slice(1, 0, 16), -1, 0.6, g);
  CHECK(k.masked.sum(1).eq(10).all().item<bool>());
  CHECK(k.dropped.sum(1).eq(8).all().item<bool>());
  CHECK_THROWS_AS(o->apply(codes, 10, 0.6, g), Error);  // codes are not noised
}

TEST_CASE("MAGE loss: label-smoothed cross-entropy by hand, over the masked codes only") {
  // One position, K = 3, logits (1, 2, 0), target 1, s = 0.1.
  at::Tensor logits = at::tensor({1.0, 2.0, 0.0}, at::kFloat).view({1, 1, 3});
  const double lse = std::log(std::exp(1.0) + std::exp(2.0) + 1.0);
  const double nll = lse - 2.0, smooth = lse - 1.0;  // mean of (lse - l_k) = lse - (1 + 2 + 0) / 3
  at::Tensor ce = label_smoothed_cross_entropy(logits, at::tensor({1}, at::kLong).view({1, 1}), 0.1);
  CHECK(ce.item<double>() == doctest::Approx(0.9 * nll + 0.1 * smooth).epsilon(1e-6));

  auto o = mage();
  auto g = compat::cpu_generator(3);
  const int64_t B = 4, L = 16, K = 5;
  at::Tensor codes = at::randint(0, K, {B, L}, g, at::TensorOptions().dtype(at::kLong));
  Corrupted c = o->sample(codes, 0, 10, g);
  ModelOutput out;
  out.logits = at::randn({B, L, K}, g);
  Loss loss = o->loss(c, codes, out, {});
  // Independently: log-softmax by hand, summed over the masked positions, divided by their count.
  at::Tensor p = out.logits.exp() / out.logits.exp().sum(-1, true);
  at::Tensor logp = p.log();
  at::Tensor per = -0.9 * logp.gather(-1, codes.unsqueeze(-1)).squeeze(-1) - 0.1 * logp.mean(-1);
  const double expect = (per * c.masked).sum().item<double>() / c.masked.sum().item<double>();
  CHECK(loss.total.item<double>() == doctest::Approx(expect).epsilon(1e-5));
  // Logits at visible positions do not enter it.
  ModelOutput other = out;
  other.logits = at::where(c.masked.unsqueeze(-1), out.logits, at::full_like(out.logits, 9.0));
  CHECK(o->loss(c, codes, other, {}).total.item<double>() == doctest::Approx(loss.total.item<double>()));
  // Two halves of the batch sum to the whole (data parallelism divides by the global count).
  auto part = [&](int64_t begin, int64_t end) {
    ModelOutput rows;
    rows.logits = out.logits.slice(0, begin, end);
    return o->loss(c, codes.slice(0, begin, end), rows, {begin, end}).total.item<double>();
  };
  double halves = part(0, 2) + part(2, 4);
  CHECK(halves == doctest::Approx(loss.total.item<double>()).epsilon(1e-5));
}

TEST_CASE("code model: logits over K codes; a masked-but-kept code reaches neither side, the decoder holds the "
          "mask token there") {
  const int64_t K = 6;
  auto m = code_model(K);
  auto g = compat::cpu_generator(5);
  at::Tensor codes = at::randint(0, K, {2, 16}, g, at::TensorOptions().dtype(at::kLong));
  MaskDraw d = random_mask(2, 16, 9, 4, g);  // 9 masked, 4 of them dropped: 5 masked but kept
  ModelInput in;
  in.tokens = codes;
  in.time_index = at::zeros({2}, at::kLong);
  in.dropped = d.dropped;
  in.masked = d.masked;
  torch::NoGradGuard ng;
  ModelOutput out = m->forward(in);
  CHECK(out.logits.sizes() == at::IntArrayRef({2, 16, K}));
  CHECK_FALSE(out.x0.defined());
  // Another code at every masked position (kept or dropped): nothing changes.
  ModelInput changed = in;
  changed.tokens = at::where(d.masked, (codes + 1) % K, codes);
  CHECK(m->forward(changed).logits.equal(out.logits));
  // Another code at a visible position changes the logits of the masked ones.
  at::Tensor visible = (~d.masked).to(at::kLong).argmax(1);
  ModelInput moved = in;
  moved.tokens = codes.clone();
  moved.tokens[0][visible[0].item<int64_t>()] = (codes[0][visible[0].item<int64_t>()].item<int64_t>() + 1) % K;
  CHECK_FALSE(m->forward(moved).logits[0].allclose(out.logits[0]));
  // In the decoder every masked position, kept or dropped, holds one vector (MAGE's buffer token).
  for (int64_t r = 0; r < 2; ++r) {
    at::Tensor rows = out.decoder_tokens[r].index({d.masked[r]});
    CHECK(rows.sub(rows[0]).abs().max().item<float>() == 0.0f);
    CHECK_FALSE(out.decoder_tokens[r].index({~d.masked[r]})[0].allclose(rows[0]));
  }
  ModelInput outside = in;
  outside.tokens = codes + K;
  CHECK_THROWS_AS(m->forward(outside), Error);  // a code outside [0, K)
  // The encoder's representation of clean codes.
  CHECK(m->encode(codes, in.time_index).sizes() == at::IntArrayRef({2, 4 + 16, 32}));
}

TEST_CASE("continuous model under MAGE's mask policy: masked-but-kept tokens hold the mask token in the decoder") {
  ModelConfig c;
  c.height = 8, c.width = 8, c.channels = 1, c.patch = 2;
  c.dim = 32, c.depth = 1, c.heads = 4, c.decoder_depth = 1;
  c.resolve();
  torch::manual_seed(3);
  MaskedDiffusionAutoencoder m(c);
  at::Tensor mask_token;
  for (const auto& p : m->named_parameters())
    if (p.key() == "mask_token") mask_token = p.value();
  REQUIRE(mask_token.defined());
  auto g = compat::cpu_generator(2);
  MaskDraw d = random_mask(3, 16, 10, 8, g);
  torch::NoGradGuard ng;
  ModelOutput out = m->forward(ModelInput{at::randn({3, 16, 4}), at::zeros({3}, at::kLong), {}, d.dropped, d.masked});
  at::Tensor kept_masked = d.masked & ~d.dropped;
  REQUIRE(kept_masked.sum().item<int64_t>() == 6);
  at::Tensor at_masked = out.decoder_tokens.index({d.masked});  // [n, Wd]
  CHECK(at_masked.sub(mask_token).abs().max().item<float>() == 0.0f);
}

TEST_CASE("MaskGIT: unknown codes follow max(1, min(u - 1, floor(L cos(pi/2 (s+1)/T)))); known ones are kept") {
  // floor(16 cos(pi/2 k/12)) for k = 1..12 is 15, 15, 14, 13, 12, 11, 9, 8, 6, 4, 2, 0; each step
  // also fixes at least one code, and leaves one for the next.
  const std::vector<int64_t> expect = {15, 14, 13, 12, 11, 10, 9, 8, 6, 4, 2, 1};
  int64_t u = 16;
  for (int64_t s = 0; s < 12; ++s) {
    u = maskgit_unknown_after(16, s, 12, u);
    CHECK(u == expect[static_cast<size_t>(s)]);
  }
  CHECK(maskgit_unknown_after(256, 0, 12, 256) == 253);  // floor(256 cos(pi/24)) = floor(253.8)

  // A model that prefers code (position + known codes) % K with random-looking logits.
  const int64_t L = 16, K = 7;
  auto fake = [&](const at::Tensor& codes, const at::Tensor& unknown) {
    at::Tensor base = at::arange(L * K, at::kFloat).view({1, L, K}).sin() * 3;
    at::Tensor known_sum = (codes * (~unknown)).sum(1, true).to(at::kFloat).unsqueeze(-1);  // [B, 1, 1]
    return base + 0.1 * known_sum;
  };
  auto run = [&](double tau, uint64_t seed, std::vector<at::Tensor>* sampled, std::vector<at::Tensor>* unknown) {
    std::vector<at::Generator> gens;
    for (int i = 0; i < 3; ++i) gens.push_back(compat::cpu_generator(seed + i));
    return maskgit_decode(fake, L, 12, tau, gens, [&](int64_t, const at::Tensor& s, const at::Tensor& u) {
      if (sampled) sampled->push_back(s.clone());
      if (unknown) unknown->push_back(u.clone());
    });
  };
  std::vector<at::Tensor> sampled, unknown;
  at::Tensor out = run(4.5, 1, &sampled, &unknown);
  REQUIRE(sampled.size() == 12);
  at::Tensor prev_unknown = at::ones({3, L}, at::kBool);
  u = L;
  for (size_t s = 0; s < 12; ++s) {
    u = maskgit_unknown_after(L, static_cast<int64_t>(s), 12, u);
    CHECK(unknown[s].sum(1).eq(u).all().item<bool>());
    CHECK((unknown[s] & ~prev_unknown).sum().item<int64_t>() == 0);  // a known code is never put back
    if (s > 0) {  // known codes keep their values
      at::Tensor known = ~prev_unknown;
      CHECK(sampled[s].index({known}).equal(sampled[s - 1].index({known})));
    }
    prev_unknown = unknown[s];
  }
  CHECK(out.equal(sampled.back()));
  CHECK(((out >= 0) & (out < K)).all().item<bool>());
  // Same seeds, same codes; another seed, other codes.
  CHECK(run(4.5, 1, nullptr, nullptr).equal(out));
  CHECK_FALSE(run(4.5, 50, nullptr, nullptr).equal(out));

  // At temperature 0 the codes put back are exactly the least likely of the newly sampled.
  sampled.clear(), unknown.clear();
  run(0.0, 9, &sampled, &unknown);
  CHECK(run(0.0, 9, nullptr, nullptr).equal(sampled.back()));
  at::Tensor before = at::ones({3, L}, at::kBool), codes_before = at::zeros({3, L}, at::kLong);
  for (size_t s = 0; s < 3; ++s) {
    at::Tensor logp = fake(codes_before, before).expand({3, L, K}).log_softmax(-1);
    at::Tensor p = logp.gather(-1, sampled[s].unsqueeze(-1)).squeeze(-1);
    p = at::where(before, p, at::full_like(p, std::numeric_limits<float>::infinity()));
    const int64_t n = unknown[s][0].sum().item<int64_t>();
    for (int64_t r = 0; r < 3; ++r) {
      // The n smallest confidences of the row are those left unknown.
      at::Tensor threshold = std::get<0>(p[r].sort()).index({n - 1});
      CHECK(unknown[s][r].equal(p[r] <= threshold));
    }
    before = unknown[s], codes_before = sampled[s];
  }
}

TEST_CASE("MaskGIT guidance acts on the logits: u + s (c - u)") {
  at::Tensor c = at::tensor({2.0, -1.0}), u = at::tensor({1.0, 1.0});
  CHECK(guide(c, u, 3.0).allclose(at::tensor({4.0, -5.0})));
}
