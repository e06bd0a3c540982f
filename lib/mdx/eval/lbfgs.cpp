#include "mdx/eval/lbfgs.h"

#include <torch/torch.h>

#include <algorithm>
#include <cmath>
#include <vector>

#include "mdx/util/error.h"
#include "mdx/util/signal.h"

namespace mdx {

namespace {

double dot64(const at::Tensor& a, const at::Tensor& b) { return at::dot(a, b).item<double>(); }
double max_abs64(const at::Tensor& a) { return a.numel() ? a.abs().max().item<double>() : 0.0; }

// Minimizer of the cubic through (x1, f1, g1) and (x2, f2, g2), clamped to [lo, hi]; the midpoint
// when the cubic has no minimizer.
double cubic_min(double x1, double f1, double g1, double x2, double f2, double g2, double lo, double hi) {
  double d1 = g1 + g2 - 3 * (f1 - f2) / (x1 - x2);
  double d2sq = d1 * d1 - g1 * g2;
  if (d2sq < 0 || !std::isfinite(d2sq)) return (lo + hi) / 2;
  double d2 = std::sqrt(d2sq);
  double x = x1 <= x2 ? x2 - (x2 - x1) * (g2 + d2 - d1) / (g2 - g1 + 2 * d2)
                      : x1 - (x1 - x2) * (g1 + d2 - d1) / (g1 - g2 + 2 * d2);
  if (!std::isfinite(x)) return (lo + hi) / 2;
  return std::min(std::max(x, lo), hi);
}

struct LinePoint {
  double t, f, gtd;
  at::Tensor g;
};

// Strong Wolfe line search along d from x (f0, g0): N&W algorithm 3.5 (bracketing by cubic
// extrapolation) and 3.6 (zoom by safeguarded cubic interpolation). Returns the accepted point,
// or the best point seen (t = 0 when none decreased f) after max_evals evaluations.
LinePoint strong_wolfe(const LbfgsFunction& f, const at::Tensor& x, double f0, const at::Tensor& g0,
                       const at::Tensor& d, double t, int64_t& evaluations, double c1 = 1e-4, double c2 = 0.9,
                       int max_evals = 25) {
  const double gtd0 = dot64(g0, d);
  auto eval = [&](double step) {
    LinePoint p{step, 0, 0, at::empty_like(x)};
    p.f = f(x + step * d, p.g);
    p.gtd = dot64(p.g, d);
    ++evaluations;
    return p;
  };
  LinePoint prev{0, f0, gtd0, g0};
  LinePoint best = prev;
  LinePoint lo, hi;
  bool bracketed = false;
  int evals = 0;
  while (evals < max_evals) {
    LinePoint cur = eval(t);
    ++evals;
    if (std::isfinite(cur.f) && cur.f < best.f) best = cur;
    if (!std::isfinite(cur.f) || cur.f > f0 + c1 * t * gtd0 || (evals > 1 && cur.f >= prev.f)) {
      lo = prev, hi = cur, bracketed = true;
      break;
    }
    if (std::abs(cur.gtd) <= -c2 * gtd0) return cur;
    if (cur.gtd >= 0) {
      lo = cur, hi = prev, bracketed = true;
      break;
    }
    // Extrapolate: a cubic step at least 1.01x and at most 10x beyond the current one.
    double next = cubic_min(prev.t, prev.f, prev.gtd, cur.t, cur.f, cur.gtd, cur.t + 0.01 * (cur.t - prev.t),
                            cur.t * 10);
    prev = cur;
    t = next;
  }
  if (!bracketed) return best;
  // Zoom: lo always satisfies the sufficient decrease condition and has the lower f.
  while (evals < max_evals) {
    double a = std::min(lo.t, hi.t), b = std::max(lo.t, hi.t);
    if ((b - a) * std::abs(dot64(d, d)) < 1e-30 || b - a < 1e-12 * b) break;  // interval collapsed
    double step = std::isfinite(hi.f) ? cubic_min(lo.t, lo.f, lo.gtd, hi.t, hi.f, hi.gtd, a, b) : (a + b) / 2;
    // Safeguard: stay at least 10% of the interval away from its ends.
    if (std::min(step - a, b - step) < 0.1 * (b - a)) step = (a + b) / 2;
    LinePoint cur = eval(step);
    ++evals;
    if (std::isfinite(cur.f) && cur.f < best.f) best = cur;
    if (!std::isfinite(cur.f) || cur.f > f0 + c1 * step * gtd0 || cur.f >= lo.f) {
      hi = cur;
    } else {
      if (std::abs(cur.gtd) <= -c2 * gtd0) return cur;
      if (cur.gtd * (hi.t - lo.t) >= 0) hi = lo;
      lo = cur;
    }
  }
  return best;
}

}  // namespace

LbfgsResult lbfgs(const LbfgsFunction& f, at::Tensor x0, const LbfgsOptions& opt, const Preconditioner& pre) {
  LbfgsResult r;
  at::Tensor x = x0.to(at::kDouble).contiguous().clone();
  at::Tensor g = at::empty_like(x);
  double fx = f(x, g);
  r.evaluations = 1;
  if (!std::isfinite(fx)) throw Error("L-BFGS: the objective is not finite at the starting point");
  std::vector<at::Tensor> S, Y;
  std::vector<double> rho;
  double gamma = 1;  // scale of H0, s'y / y'H0y of the newest pair (N&W eq. 7.20)
  auto h0 = [&](const at::Tensor& v) { return pre ? pre(v) : v; };
  r.stop = "iteration limit";
  for (; r.iterations < opt.max_iter; ++r.iterations) {
    if (max_abs64(g) <= opt.gtol) {
      r.converged = true;
      r.stop = "gradient below tolerance";
      break;
    }
    check_interrupt();
    // Two-loop recursion (N&W algorithm 7.4): d = -H g.
    at::Tensor q = g.clone();
    std::vector<double> alpha(S.size());
    for (size_t i = S.size(); i-- > 0;) {
      alpha[i] = rho[i] * dot64(S[i], q);
      q.sub_(Y[i], alpha[i]);
    }
    at::Tensor d = h0(q).mul_(gamma);
    for (size_t i = 0; i < S.size(); ++i) {
      double beta = rho[i] * dot64(Y[i], d);
      d.add_(S[i], alpha[i] - beta);
    }
    d.neg_();
    double gtd = dot64(g, d);
    if (!(gtd < 0)) {  // rounding broke descent: restart from the (preconditioned) gradient
      S.clear(), Y.clear(), rho.clear();
      gamma = 1;
      d = -h0(g);
      gtd = dot64(g, d);
      if (!(gtd < 0)) {
        r.stop = "no descent direction";
        break;
      }
    }
    // The first step of an unpreconditioned start is scaled so that it moves by at most ~1.
    double t = (r.iterations == 0 && !pre) ? std::min(1.0, 1.0 / g.abs().sum().item<double>()) : 1.0;
    LinePoint p = strong_wolfe(f, x, fx, g, d, t, r.evaluations);
    if (p.t == 0) {
      r.stop = "line search found no decrease";
      r.converged = max_abs64(g) <= 10 * opt.gtol;
      break;
    }
    at::Tensor s = p.t * d, y = p.g - g;
    const double ys = dot64(y, s);
    const double f_old = fx;
    x.add_(s);
    fx = p.f;
    g = p.g;
    if (ys > 1e-10 * std::sqrt(dot64(s, s) * dot64(y, y))) {  // keep the pair only when curvature is positive
      if (static_cast<int64_t>(S.size()) == opt.history) S.erase(S.begin()), Y.erase(Y.begin()), rho.erase(rho.begin());
      S.push_back(s), Y.push_back(y), rho.push_back(1 / ys);
      gamma = ys / dot64(y, h0(y));
    }
    if (f_old - fx <= opt.ftol * std::max({std::abs(f_old), std::abs(fx), 1.0})) {
      ++r.iterations;
      r.converged = true;
      r.stop = "relative decrease below tolerance";
      break;
    }
  }
  r.x = x;
  r.f = fx;
  r.grad_max = max_abs64(g);
  return r;
}

}  // namespace mdx
