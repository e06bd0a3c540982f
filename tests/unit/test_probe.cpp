// The pieces of mdx-probe against closed forms: L-BFGS on convex problems with known minima, the
// softmax-regression gradient against finite differences, ridge and k-NN on hand-computed cases.
#include <doctest/doctest.h>
#include <torch/torch.h>

#include <cmath>

#include "mdx/eval/probe.h"

using namespace mdx;

TEST_CASE("probe: L-BFGS finds the minimum of an ill-conditioned quadratic and of log-sum-exp + ridge") {
  // f(x) = 1/2 (x - c)' A (x - c), A with eigenvalues 1 .. 1e4 in a rotated basis: minimum at c.
  torch::manual_seed(3);
  const int64_t n = 6;
  auto Q = std::get<0>(at::linalg_qr(torch::randn({n, n}, torch::kDouble)));
  auto A = at::mm(at::mm(Q, torch::diag(torch::logspace(0, 4, n, 10, torch::kDouble))), Q.t());
  auto c = torch::arange(n, torch::kDouble) - 2.5;
  Objective quad = [&](const at::Tensor& x, at::Tensor& g) {
    g = at::mv(A, x - c);
    return 0.5 * at::dot(x - c, g).item<double>();
  };
  LbfgsOptions opt;
  opt.gtol = 1e-9;
  opt.ftol = 0;
  LbfgsResult r = lbfgs(quad, torch::zeros({n}, torch::kDouble), opt);
  CHECK(r.converged);
  CHECK((r.x - c).abs().max().item<double>() < 1e-8);
  CHECK(r.f < 1e-15);
  // With the exact inverse Hessian as H0 the first step is Newton's: one iteration.
  auto Ainv = at::inverse(A);
  LbfgsResult rp = lbfgs(quad, torch::zeros({n}, torch::kDouble), opt,
                         [&](const at::Tensor& v) { return at::mv(Ainv, v); });
  CHECK(rp.iterations <= 2);
  CHECK((rp.x - c).abs().max().item<double>() < 1e-8);

  // f(x) = log sum exp(x) + 1/2 |x|^2: gradient softmax(x) + x = 0 at x_i = -1/n for all i.
  Objective lse = [](const at::Tensor& x, at::Tensor& g) {
    g = at::softmax(x, 0) + x;
    return at::logsumexp(x, 0).item<double>() + 0.5 * at::dot(x, x).item<double>();
  };
  LbfgsResult r2 = lbfgs(lse, torch::tensor({3.0, -2.0, 0.5, 7.0}, torch::kDouble), opt);
  CHECK(r2.converged);
  CHECK((r2.x + 0.25).abs().max().item<double>() < 1e-8);
  CHECK(r2.f == doctest::Approx(std::log(4.0) - 0.25 + 0.5 * 4 / 16.0).epsilon(1e-12));
}

TEST_CASE("probe: softmax-regression loss and gradient match log_softmax and finite differences") {
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

TEST_CASE("probe: softmax-regression gradient on sizes that exercise every kernel path") {
  // 21 rows (8-row and 4-row tiles and single rows), 19 features (two 8-wide steps and a tail),
  // 5 classes (pairs and a single one): the AVX2 kernels where the CPU has them.
  check_against_closed_form(21, 19, 5);
  // 70 classes: the BLAS path; 2500 rows: several row blocks in several chunks.
  check_against_closed_form(2500, 9, 70);
  check_against_closed_form(2500, 33, 3);
}

TEST_CASE("probe: logistic fit with the curvature preconditioner reaches the same minimum as without") {
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
  CHECK(plain.converged);
  CHECK(pre.converged);
  CHECK(pre.f == doctest::Approx(plain.f).epsilon(1e-6));
  CHECK((pre.x - plain.x).abs().max().item<double>() < 1e-2);
  CHECK(pre.iterations <= plain.iterations);
}

TEST_CASE("probe: ridge on hand-computed two-class cases (primal and dual)") {
  // x = -1 (class 0), +1 (class 1), lambda 1: W = (x'x + 1)^-1 x'Yc = [-1/3, 1/3], b = [1/2, 1/2].
  auto [W, b] = fit_ridge(torch::tensor({-1.0, 1.0}).view({2, 1}), torch::tensor({0, 1}, torch::kLong), 2, 1.0);
  CHECK(W[0][0].item<double>() == doctest::Approx(-1.0 / 3));
  CHECK(W[0][1].item<double>() == doctest::Approx(1.0 / 3));
  CHECK(b[0].item<double>() == doctest::Approx(0.5));
  CHECK(b[1].item<double>() == doctest::Approx(0.5));
  // Fewer rows than features (the dual system): rows e1 (class 0) and e2 (class 1) in 3-d, lambda 1:
  // the centred data has one direction (1,-1,0) of eigenvalue 1, so W = 1/2 * 1/(1+1) * (1,-1,0) (x) (1,-1).
  auto [W2, b2] = fit_ridge(torch::tensor({1.0, 0.0, 0.0, 0.0, 1.0, 0.0}).view({2, 3}),
                            torch::tensor({0, 1}, torch::kLong), 2, 1.0);
  auto expected = torch::tensor({0.25, -0.25, -0.25, 0.25, 0.0, 0.0}, torch::kDouble).view({3, 2});
  CHECK((W2 - expected).abs().max().item<double>() < 1e-12);
  CHECK(b2[0].item<double>() == doctest::Approx(0.5));
  CHECK(b2[1].item<double>() == doctest::Approx(0.5));
}

TEST_CASE("probe: k-NN weighted vote and label ranks") {
  auto train = torch::tensor({1.0f, 0.0f, 0.0f, 1.0f, 1.0f, 1.0f}).view({3, 2});
  auto labels = torch::tensor({0, 1, 1}, torch::kLong);
  auto test = torch::tensor({2.0f, 0.2f}).view({1, 2});  // the direction (1, 0.1)
  auto s = knn_scores(train, labels, test, 3, 2, 1);
  // The two nearest: (1,0) with cosine 1/sqrt(1.01) and (1,1) with 1.1/sqrt(2.02).
  CHECK(s[0][0].item<float>() == doctest::Approx(std::exp(1 / std::sqrt(1.01) / kKnnTemperature)).epsilon(1e-5));
  CHECK(s[0][1].item<float>() == doctest::Approx(std::exp(1.1 / std::sqrt(2.02) / kKnnTemperature)).epsilon(1e-5));
  CHECK(s[0][2].item<float>() == 0.0f);
  // k larger than the training set: every row votes.
  auto all = knn_scores(train, labels, test, 2, 50, 7);
  CHECK(all[0][1].item<float>() > s[0][1].item<float>());
  // Ranks: higher scores, and equal scores of smaller classes, come first.
  auto scores = torch::tensor({0.1f, 0.5f, 0.5f, 0.2f, 3.0f, 1.0f, 1.0f, 1.0f}).view({2, 4});
  auto rank = label_rank(scores, torch::tensor({2, 1}, torch::kLong));
  CHECK(rank[0].item<int64_t>() == 1);
  CHECK(rank[1].item<int64_t>() == 1);
  CHECK(label_rank(scores, torch::tensor({1, 0}, torch::kLong))[0].item<int64_t>() == 0);
}
