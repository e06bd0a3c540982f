// The softmax-regression loss and gradient of mdx-probe's logistic probe against log_softmax,
// finite differences and the closed form, on sizes that exercise every kernel path; the curvature
// preconditioner against plain L-BFGS.
#include <doctest/doctest.h>
#include <torch/torch.h>

#include <cmath>

#include "mdx/eval/lbfgs.h"
#include "mdx/eval/softmax.h"

using namespace mdx;

TEST_CASE("softmax: softmax-regression loss and gradient match log_softmax and finite differences") {
  torch::manual_seed(5);
  const int64_t N = 7, F = 3, K = 4;
  const double lambda = 0.3;
  auto x = torch::randn({N, F});
  auto y = torch::tensor({0, 3, 1, 1, 2, 0, 3}, torch::kLong);
  auto theta = torch::randn({(F + 1) * K}, torch::kDouble) * 0.5;
  SoftmaxObjective obj(x, y, K, lambda);
  CHECK(obj.parameters() == (F + 1) * K);
  at::Tensor g;
  const double f = obj(theta, g);
  // The same loss from PyTorch's log_softmax in float64.
  auto W = theta.slice(0, 0, F * K).view({F, K}), b = theta.slice(0, F * K);
  auto logp = at::log_softmax(at::addmm(b, x.to(at::kDouble), W), 1);
  double expected = -logp.gather(1, y.unsqueeze(1)).mean().item<double>() + 0.5 * lambda * W.square().sum().item<double>();
  CHECK(f == doctest::Approx(expected).epsilon(1e-6));
  REQUIRE(g.numel() == (F + 1) * K);
  // Central differences (the products run in float32, so steps of 1e-3 and a 1e-4 tolerance).
  const double h = 1e-3;
  for (int64_t i = 0; i < theta.numel(); ++i) {
    auto tp = theta.clone(), tm = theta.clone();
    tp[i] += h;
    tm[i] -= h;
    at::Tensor unused;
    double fd = (obj(tp, unused) - obj(tm, unused)) / (2 * h);
    CHECK(g[i].item<double>() == doctest::Approx(fd).epsilon(1e-4).scale(1.0));
  }
  // The bias is not penalized: with W = 0 and a uniform softmax its gradient is 1/K - class share.
  auto zero = torch::zeros({(F + 1) * K}, torch::kDouble);
  obj(zero, g);
  CHECK(g[F * K + 0].item<double>() == doctest::Approx(0.25 - 2.0 / 7));
  CHECK(g[F * K + 2].item<double>() == doctest::Approx(0.25 - 1.0 / 7));
}

// The loss and gradient of SoftmaxObjective against the closed form x'(P - Y)/N + lambda W in float64.
static void check_against_closed_form(int64_t N, int64_t F, int64_t K) {
  torch::manual_seed(9);
  const double lambda = 0.05;
  auto x = torch::randn({N, F});
  auto y = torch::randint(0, K, {N}, torch::kLong);
  auto theta = torch::randn({(F + 1) * K}, torch::kDouble) * 0.3;
  SoftmaxObjective obj(x, y, K, lambda);
  at::Tensor g;
  const double f = obj(theta, g);
  auto W = theta.slice(0, 0, F * K).view({F, K}), b = theta.slice(0, F * K);
  auto xd = x.to(at::kDouble);
  auto logits = at::addmm(b, xd, W);
  auto r = at::softmax(logits, 1) - at::one_hot(y, K).to(at::kDouble);
  auto expected = at::cat({(at::mm(xd.t(), r) / N + lambda * W).reshape({-1}), r.mean(0)});
  double loss = -at::log_softmax(logits, 1).gather(1, y.unsqueeze(1)).mean().item<double>() +
                0.5 * lambda * W.square().sum().item<double>();
  CHECK(f == doctest::Approx(loss).epsilon(1e-6));
  CHECK((g - expected).abs().max().item<double>() < 1e-5);
  CHECK(softmax_logits(x, theta, K).sub(logits.to(at::kFloat)).abs().max().item<float>() < 1e-4);
}

TEST_CASE("softmax: softmax-regression gradient on sizes that exercise every kernel path") {
  // 21 rows (8-row and 4-row tiles and single rows), 19 features (two 8-wide steps and a tail),
  // 5 classes (pairs and a single one): the AVX2 kernels where the CPU has them.
  check_against_closed_form(21, 19, 5);
  // 70 classes: the BLAS path; 2500 rows: several row blocks in several chunks.
  check_against_closed_form(2500, 9, 70);
  check_against_closed_form(2500, 33, 3);
}

TEST_CASE("softmax: logistic fit with the curvature preconditioner reaches the same minimum as without") {
  torch::manual_seed(11);
  const int64_t N = 200, F = 5, K = 3;
  auto x = torch::randn({N, F}) * torch::tensor({1.0f, 10.0f, 0.1f, 1.0f, 3.0f});
  auto y = (x.select(1, 0) + 0.1 * x.select(1, 1) > 0).to(torch::kLong) + (x.select(1, 4) > 2).to(torch::kLong);
  SoftmaxObjective obj(x, y, K, 0.01);
  LbfgsOptions opt;
  opt.gtol = 1e-5;  // the products run in float32: gradients are good to ~1e-6
  opt.ftol = 0;
  auto x0 = torch::zeros({(F + 1) * K}, torch::kDouble);
  LbfgsResult plain = lbfgs(obj, x0, opt);
  LbfgsResult pre = lbfgs(obj, x0, opt, SoftmaxPreconditioner(x, K)(0.01));
  INFO("plain: ", plain.stop, ", grad ", plain.grad_max, ", ", plain.iterations, " iterations; preconditioned: ",
       pre.stop, ", grad ", pre.grad_max);
  // Unpreconditioned, this ill-conditioned problem ends where float32 products stop resolving f:
  // converged, or no decrease found with a gradient near gtol (the summation order of the CPU's
  // BLAS kernels decides which; 1.2e-4 seen on an AVX-512 Xeon).
  CHECK((plain.converged || plain.grad_max < 1e-3));
  CHECK(pre.converged);
  CHECK(pre.f == doctest::Approx(plain.f).epsilon(1e-6));
  CHECK((pre.x - plain.x).abs().max().item<double>() < 1e-2);
  CHECK(pre.iterations <= plain.iterations);
}
