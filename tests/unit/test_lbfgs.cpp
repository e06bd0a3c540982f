// L-BFGS on convex problems with known minima: an ill-conditioned quadratic (with and without the
// exact inverse Hessian as H0) and log-sum-exp plus a ridge term.
#include <doctest/doctest.h>
#include <torch/torch.h>

#include <cmath>

#include "mdx/eval/lbfgs.h"

using namespace mdx;

TEST_CASE("lbfgs: L-BFGS finds the minimum of an ill-conditioned quadratic and of log-sum-exp + ridge") {
  // f(x) = 1/2 (x - c)' A (x - c), A with eigenvalues 1 .. 1e4 in a rotated basis: minimum at c.
  torch::manual_seed(3);
  const int64_t n = 6;
  auto Q = std::get<0>(at::linalg_qr(torch::randn({n, n}, torch::kDouble)));
  auto A = at::mm(at::mm(Q, torch::diag(torch::logspace(0, 4, n, 10, torch::kDouble))), Q.t());
  auto c = torch::arange(n, torch::kDouble) - 2.5;
  LbfgsFunction quad = [&](const at::Tensor& x, at::Tensor& g) {
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
  LbfgsFunction lse = [](const at::Tensor& x, at::Tensor& g) {
    g = at::softmax(x, 0) + x;
    return at::logsumexp(x, 0).item<double>() + 0.5 * at::dot(x, x).item<double>();
  };
  LbfgsResult r2 = lbfgs(lse, torch::tensor({3.0, -2.0, 0.5, 7.0}, torch::kDouble), opt);
  CHECK(r2.converged);
  CHECK((r2.x + 0.25).abs().max().item<double>() < 1e-8);
  CHECK(r2.f == doctest::Approx(std::log(4.0) - 0.25 + 0.5 * 4 / 16.0).epsilon(1e-12));
}
