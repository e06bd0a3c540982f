// L-BFGS (Nocedal & Wright, "Numerical Optimization", 2nd ed., algorithm 7.4 with the strong Wolfe
// line search of algorithms 3.5 and 3.6): the minimizer behind mdx-probe's logistic probe.
#pragma once
#include <torch/types.h>

#include <functional>
#include <string>

namespace mdx {

// The function L-BFGS minimizes: f(x) and its gradient; x and grad are float64 vectors of the same length.
using LbfgsFunction = std::function<double(const at::Tensor& x, at::Tensor& grad)>;
// Approximates H^-1 v for the Hessian H of f: the initial inverse Hessian of the two-loop
// recursion (a null one means the identity).
using Preconditioner = std::function<at::Tensor(const at::Tensor& v)>;

struct LbfgsOptions {
  int64_t max_iter = 1000;
  int64_t history = 10;      // (s, y) pairs kept
  double gtol = 1e-5;        // converged when max |grad| <= gtol
  double ftol = 1e-12;       // converged when the relative decrease of f in an iteration is below ftol
};

struct LbfgsResult {
  at::Tensor x;              // the last accepted point
  double f = 0;
  double grad_max = 0;       // max |grad| at x
  int64_t iterations = 0, evaluations = 0;
  bool converged = false;
  std::string stop;          // why it stopped, in words
};

LbfgsResult lbfgs(const LbfgsFunction& f, at::Tensor x0, const LbfgsOptions& opt,
                  const Preconditioner& pre = nullptr);

}  // namespace mdx
