// The objectives' corruptions against hand-computed expectations.
#include <doctest/doctest.h>
#include <torch/torch.h>

#include "mdx/corrupt/objective.h"
#include "mdx/tokenize/pca.h"
#include "mdx/util/error.h"
#include "mdx/util/torch_compat.h"

using namespace mdx;

namespace {
// An objective of the registry with its paper defaults (and a mask policy).
std::unique_ptr<Objective> objective(const std::string& name, MaskPolicy policy = MaskPolicy::Fixed) {
  ObjectiveSettings s;
  s.schedule = find_objective(name).schedule;
  s.mask_policy = policy;
  return make_objective(name, s);
}

torch::Tensor tokens(int64_t B, int64_t L, int64_t D) {
  auto g = compat::cpu_generator(5);
  return torch::rand({B, L, D}, g) * 2 - 1;
}
}  // namespace

TEST_CASE("UMD: representation rows are clean and 75 % masked; noisy rows are x_t, 37.5 % masked") {
  auto c = objective("umd");
  auto x0 = tokens(10, 49, 16);
  auto gen = compat::cpu_generator(1);
  auto out = c->sample(x0, 0, 100, gen);
  const int64_t rep = 5;
  CHECK(out.representation.slice(0, 0, rep).all().item<bool>());
  CHECK_FALSE(out.representation.slice(0, rep).any().item<bool>());
  CHECK(out.t.slice(0, 0, rep).eq(-1).all().item<bool>());
  CHECK(out.time_index.slice(0, 0, rep).eq(0).all().item<bool>());
  CHECK(out.xt.slice(0, 0, rep).equal(x0.slice(0, 0, rep)));
  CHECK(out.masked.slice(0, 0, rep).sum(1).eq(37).all().item<bool>());
  CHECK(out.masked.slice(0, rep).sum(1).eq(19).all().item<bool>());
  auto t = out.t.slice(0, rep);
  CHECK(t.ge(0).all().item<bool>());
  CHECK(out.time_index.slice(0, rep).equal(t + 1));
  // x_t = sqrt(ab) x0 + sqrt(1 - ab) eps, with the returned eps and the cosine schedule.
  auto ab = c->schedule().alphas_cumprod().index_select(0, t).to(torch::kFloat).view({-1, 1, 1});
  auto expect = ab.sqrt() * x0.slice(0, rep) + (1 - ab).sqrt() * out.eps.slice(0, rep);
  CHECK((out.xt.slice(0, rep) - expect).abs().max().item<float>() < 1e-5);
}

TEST_CASE("MAE: clean input, 75 % masked, time index 0") {
  auto c = objective("mae");
  auto x0 = tokens(4, 49, 16);
  auto gen = compat::cpu_generator(2);
  auto out = c->sample(x0, 0, 100, gen);
  CHECK(out.xt.equal(x0));
  CHECK(out.time_index.eq(0).all().item<bool>());
  CHECK(out.masked.sum(1).eq(37).all().item<bool>());
}

TEST_CASE("MAE under MAGE's policy: one ratio per batch, dropped subset of masked") {
  auto c = objective("mae", MaskPolicy::Mage);
  auto gen = compat::cpu_generator(3);
  auto out = c->sample(tokens(6, 49, 16), 0, 100, gen);
  double r = out.mask_ratio[0].item<double>();
  CHECK(out.mask_ratio.eq(r).all().item<bool>());
  CHECK(out.masked.sum(1).eq(static_cast<int64_t>(std::ceil(49 * r))).all().item<bool>());
  CHECK(out.dropped.sum(1).eq(25).all().item<bool>());
}

TEST_CASE("MAE under LMD's linear policy follows the training step") {
  auto c = objective("mae", MaskPolicy::LmdLinear);
  auto gen = compat::cpu_generator(3);
  auto out = c->sample(tokens(2, 100, 4), 50, 100, gen);
  CHECK(out.mask_ratio[0].item<double>() == doctest::Approx(0.45));
  CHECK(out.masked.sum(1).eq(100 - 55).all().item<bool>());  // keep int(100 * 0.55) = 55
}

TEST_CASE("DiT: every token noised with the linear schedule, no mask") {
  auto c = objective("dit");
  CHECK(c->schedule().kind() == ScheduleKind::Linear);
  auto x0 = tokens(3, 16, 8);
  auto gen = compat::cpu_generator(4);
  auto out = c->apply(x0, 500, 0.0, gen);
  CHECK_FALSE(out.masked.any().item<bool>());
  double ab = c->schedule().alphas_cumprod()[500].item<double>();
  auto expect = std::sqrt(ab) * x0 + std::sqrt(1 - ab) * out.eps;
  CHECK((out.xt - expect).abs().max().item<float>() < 1e-5);
  CHECK(out.time_index.eq(501).all().item<bool>());
}

TEST_CASE("l-DAE: noise lives in the PCA latent; the input lies in the d-dim subspace") {
  // A tokenizer with an orthonormal basis of R^4 (a rotation), mean m, d = 2.
  auto pca = std::make_shared<PcaTokenizer>();
  pca->patch = 1, pca->channels = 4, pca->dim = 2;
  double s = 1 / std::sqrt(2.0);
  pca->components = torch::tensor({s, s, 0., 0., s, -s, 0., 0., 0., 0., 1., 0., 0., 0., 0., 1.}, torch::kDouble)
                        .view({4, 4});
  pca->mean = torch::tensor({0.1, -0.2, 0.3, 0.0}, torch::kDouble);
  pca->explained_variance = torch::tensor({4.0, 1.0, 0.5, 0.1}, torch::kDouble);
  auto c = objective("ldae");
  c->bind(pca, 0);
  auto x0 = tokens(5, 7, 4);
  auto gen = compat::cpu_generator(9);
  // At t = 0 of the gamma schedule there is no noise: the input is x0 projected on the subspace.
  auto clean = c->apply(x0, 0, 0.0, gen);
  auto m = pca->mean.to(torch::kFloat), v = pca->components.slice(0, 0, 2).to(torch::kFloat);
  auto proj = torch::matmul(torch::matmul(x0 - m, v.t()), v) + m;
  CHECK((clean.xt - proj).abs().max().item<float>() < 1e-5);
  // At t = 600: Vd^T (gamma Vd (x - mu) + sigma eps) + mu with the returned latent eps [B, L, 2].
  auto noisy = c->apply(x0, 600, 0.0, gen);
  CHECK(noisy.eps.size(2) == 2);
  double g = std::sqrt(1 - 0.6), sg = std::sqrt(0.6);
  auto expect = torch::matmul(g * torch::matmul(x0 - m, v.t()) + sg * noisy.eps, v) + m;
  CHECK((noisy.xt - expect).abs().max().item<float>() < 1e-5);
  // Components 3 and 4 of the residual are gone.
  auto rest = torch::matmul(noisy.xt - m, pca->components.slice(0, 2).to(torch::kFloat).t());
  CHECK(rest.abs().max().item<float>() < 1e-5);
}

TEST_CASE("ldae without a tokenizer is a usage error") {
  CHECK_THROWS_AS(objective("ldae")->bind(nullptr, 4), UsageError);
}

TEST_CASE("same seed, same corruption") {
  auto c = objective("umd");
  auto x0 = tokens(8, 49, 16);
  auto g1 = compat::cpu_generator(42), g2 = compat::cpu_generator(42);
  auto a = c->sample(x0, 0, 1, g1), b = c->sample(x0, 0, 1, g2);
  CHECK(a.xt.equal(b.xt));
  CHECK(a.masked.equal(b.masked));
  CHECK(a.t.equal(b.t));
}
