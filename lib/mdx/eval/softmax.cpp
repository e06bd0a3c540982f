#include "mdx/eval/softmax.h"

#include <ATen/Parallel.h>
#include <torch/torch.h>

#include <algorithm>
#include <cmath>
#include <vector>
#if defined(__x86_64__) && defined(__GNUC__)
#include <immintrin.h>
#endif

namespace mdx {

namespace {
// Rows per block of the loss/gradient pass: a block of x stays in cache between the two products
// that read it (logits, then the gradient), so x streams from memory once per evaluation.
constexpr int64_t kRowBlock = 1024;
// The rows are cut into this many contiguous chunks, one task each, whose sums are added in chunk
// order: the result does not depend on the number of threads.
constexpr int64_t kChunks = 16;

// z [n,K] (logits) becomes softmax(z) - onehot(y), the gradient of the summed loss w.r.t. the
// logits; returns the summed loss. Per row in float64.
double softmax_residual(float* z, const int64_t* y, int64_t n, int64_t K) {
  double loss = 0;
  for (int64_t i = 0; i < n; ++i) {
    float* row = z + i * K;
    const float m = *std::max_element(row, row + K);
    double sum = 0;
    for (int64_t c = 0; c < K; ++c) sum += std::exp(static_cast<double>(row[c] - m));
    const double lse = m + std::log(sum);
    loss += lse - row[y[i]];
    for (int64_t c = 0; c < K; ++c) row[c] = static_cast<float>(std::exp(row[c] - lse));
    row[y[i]] -= 1;
  }
  return loss;
}

#if defined(__x86_64__) && defined(__GNUC__)
#define MDX_SOFTMAX_AVX2 1
// A few classes (K <= kMaxAvx2Classes) make both products of the pass skinny matrix products,
// which OpenBLAS runs at a fraction of its speed (60000x784 by 784x10: ~10 GFLOP/s on one core);
// these two AVX2 kernels do the same arithmetic 3-5x faster, and are chosen at run time where the
// CPU has AVX2 and FMA.
constexpr int64_t kMaxAvx2Classes = 64;

bool have_avx2() {
  static const bool ok = __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
  return ok;
}

__attribute__((target("avx2,fma"))) inline float hsum(__m256 v) {
  __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
  s = _mm_add_ps(s, _mm_movehl_ps(s, s));
  s = _mm_add_ss(s, _mm_movehdup_ps(s));
  return _mm_cvtss_f32(s);
}

// z[r][c] = b[c] + x_r . wt_c for R rows of x and C rows of wt (both of stride F); z has stride K.
template <int R, int C>
__attribute__((target("avx2,fma"))) inline void logits_tile(const float* x, const float* wt, const float* b, int64_t F,
                                                            int64_t K, float* z) {
  __m256 acc[R][C];
  for (int r = 0; r < R; ++r)
    for (int c = 0; c < C; ++c) acc[r][c] = _mm256_setzero_ps();
  int64_t f = 0;
  for (; f + 8 <= F; f += 8) {
    __m256 w[C];
    for (int c = 0; c < C; ++c) w[c] = _mm256_loadu_ps(wt + c * F + f);
    for (int r = 0; r < R; ++r) {
      const __m256 v = _mm256_loadu_ps(x + r * F + f);
      for (int c = 0; c < C; ++c) acc[r][c] = _mm256_fmadd_ps(v, w[c], acc[r][c]);
    }
  }
  for (int r = 0; r < R; ++r)
    for (int c = 0; c < C; ++c) {
      float s = hsum(acc[r][c]);
      for (int64_t g = f; g < F; ++g) s += x[r * F + g] * wt[c * F + g];
      z[r * K + c] = b[c] + s;
    }
}

__attribute__((target("avx2,fma"))) void logits_avx2(const float* x, int64_t n, int64_t F, const float* wt,
                                                     const float* b, int64_t K, float* z) {
  int64_t i = 0;
  for (; i + 4 <= n; i += 4) {
    int64_t c = 0;
    for (; c + 2 <= K; c += 2) logits_tile<4, 2>(x + i * F, wt + c * F, b + c, F, K, z + i * K + c);
    for (; c < K; ++c) logits_tile<4, 1>(x + i * F, wt + c * F, b + c, F, K, z + i * K + c);
  }
  for (; i < n; ++i)
    for (int64_t c = 0; c < K; ++c) logits_tile<1, 1>(x + i * F, wt + c * F, b + c, F, K, z + i * K + c);
}

// gt[c] += sum_r p[r][c] x_r for R rows of x (stride F) and p (stride K), every class c.
template <int R>
__attribute__((target("avx2,fma"))) inline void gradient_tile(const float* x, const float* p, int64_t F, int64_t K,
                                                              float* gt) {
  for (int64_t c = 0; c < K; ++c) {
    __m256 s[R];
    for (int r = 0; r < R; ++r) s[r] = _mm256_set1_ps(p[r * K + c]);
    float* g = gt + c * F;
    int64_t f = 0;
    for (; f + 8 <= F; f += 8) {
      __m256 acc = _mm256_loadu_ps(g + f);
      for (int r = 0; r < R; ++r) acc = _mm256_fmadd_ps(s[r], _mm256_loadu_ps(x + r * F + f), acc);
      _mm256_storeu_ps(g + f, acc);
    }
    for (; f < F; ++f)
      for (int r = 0; r < R; ++r) g[f] += p[r * K + c] * x[r * F + f];
  }
}

__attribute__((target("avx2,fma"))) void gradient_avx2(const float* x, int64_t n, int64_t F, const float* p, int64_t K,
                                                       float* gt) {
  int64_t i = 0;
  for (; i + 8 <= n; i += 8) gradient_tile<8>(x + i * F, p + i * K, F, K, gt);
  for (; i < n; ++i) gradient_tile<1>(x + i * F, p + i * K, F, K, gt);
}
#endif
}  // namespace

SoftmaxObjective::SoftmaxObjective(at::Tensor x, at::Tensor labels, int64_t classes, double lambda)
    : x_(x.to(at::kFloat).contiguous()), labels_(labels.to(at::kLong).contiguous()), rows_(x_.size(0)),
      features_(x_.size(1)), classes_(classes), lambda_(lambda) {}

// float32 for the products over the rows (the passes over x are memory-bound, and float32 halves
// the traffic), float64 for theta, the reductions and everything L-BFGS sees, so that the line
// search compares losses that differ in the 7th digit reliably.
double SoftmaxObjective::operator()(const at::Tensor& theta, at::Tensor& grad) const {
  const int64_t F = features_, K = classes_;
  at::Tensor W = theta.slice(0, 0, F * K).view({F, K});
  at::Tensor b = theta.slice(0, F * K);
  at::Tensor b32 = b.to(at::kFloat).contiguous();
  const int64_t* y = labels_.data_ptr<int64_t>();
  const int64_t blocks = (rows_ + kRowBlock - 1) / kRowBlock, chunks = std::min(kChunks, blocks);
  // Per chunk: the summed loss, and the summed gradient w.r.t. (W', b) as [K, F+1].
  std::vector<double> chunk_loss(static_cast<size_t>(chunks), 0.0);
  at::Tensor chunk_grad = at::zeros({chunks, K, F + 1}, at::kDouble);
#ifdef MDX_SOFTMAX_AVX2
  if (K <= kMaxAvx2Classes && have_avx2()) {
    at::Tensor wt = W.t().to(at::kFloat).contiguous();  // [K,F]: the kernels read rows of weights
    const float* wp = wt.data_ptr<float>();
    const float* bp = b32.data_ptr<float>();
    const float* xp = x_.data_ptr<float>();
    at::parallel_for(0, chunks, 1, [&](int64_t c0, int64_t c1) {
      std::vector<float> z(static_cast<size_t>(kRowBlock * K)), gt(static_cast<size_t>(K * F));
      for (int64_t chunk = c0; chunk < c1; ++chunk) {
        double* acc = chunk_grad.data_ptr<double>() + chunk * K * (F + 1);
        for (int64_t blk = blocks * chunk / chunks; blk < blocks * (chunk + 1) / chunks; ++blk) {
          const int64_t start = blk * kRowBlock, n = std::min(kRowBlock, rows_ - start);
          logits_avx2(xp + start * F, n, F, wp, bp, K, z.data());
          chunk_loss[chunk] += softmax_residual(z.data(), y + start, n, K);
          std::fill(gt.begin(), gt.end(), 0.0f);
          gradient_avx2(xp + start * F, n, F, z.data(), K, gt.data());
          for (int64_t c = 0; c < K; ++c) {
            for (int64_t f = 0; f < F; ++f) acc[c * (F + 1) + f] += gt[c * F + f];
            for (int64_t i = 0; i < n; ++i) acc[c * (F + 1) + F] += z[i * K + c];
          }
        }
      }
    });
  } else
#endif
  {
    // Any CPU, any K: BLAS products per block, blocks in order.
    at::Tensor W32 = W.to(at::kFloat);
    at::Tensor z = at::empty({kRowBlock, K}, at::kFloat), gblock = at::empty({F, K}, at::kFloat);
    for (int64_t chunk = 0; chunk < chunks; ++chunk) {
      at::Tensor acc = chunk_grad[chunk];
      for (int64_t blk = blocks * chunk / chunks; blk < blocks * (chunk + 1) / chunks; ++blk) {
        const int64_t start = blk * kRowBlock, n = std::min(kRowBlock, rows_ - start);
        at::Tensor xb = x_.slice(0, start, start + n), zb = z.slice(0, 0, n);
        at::addmm_out(zb, b32, xb, W32);
        chunk_loss[chunk] += softmax_residual(zb.data_ptr<float>(), y + start, n, K);
        at::mm_out(gblock, xb.t(), zb);
        acc.slice(1, 0, F).add_(gblock.t());
        acc.select(1, F).add_(zb.sum(0, false, at::kDouble));
      }
    }
  }
  double loss = 0;
  for (double l : chunk_loss) loss += l;
  at::Tensor g = chunk_grad.sum(0);  // [K, F+1]
  const double inv = 1.0 / static_cast<double>(rows_);
  at::Tensor gW = g.slice(1, 0, F).t().mul(inv).add_(W, lambda_);
  at::Tensor gb = g.select(1, F).mul(inv);
  grad = at::cat({gW.contiguous().view({-1}), gb});
  return loss * inv + 0.5 * lambda_ * W.square().sum().item<double>();
}

SoftmaxPreconditioner::SoftmaxPreconditioner(const at::Tensor& x, int64_t classes)
    : features_(x.size(1)), classes_(classes) {
  // Every row: the weak directions, where lambda matters, are poorly estimated from a sample
  // (8192 of 60000 Fashion-MNIST rows cost 60% more iterations).
  const int64_t n = x.size(0), F = features_;
  sigma_ = at::zeros({F, F}, at::kDouble);
  for (int64_t start = 0; start < n; start += 8 * kRowBlock) {
    at::Tensor xb = x.slice(0, start, std::min(n, start + 8 * kRowBlock));
    sigma_.add_(at::mm(xb.t(), xb).to(at::kDouble));
  }
  sigma_.div_(static_cast<double>(std::max<int64_t>(n, 1)));
  // A direction that neither the data nor the penalty curves (lambda = 0 and a constant feature)
  // gets a curvature 1e-6 of the average one, so that the system is always positive definite.
  jitter_ = 1e-6 * std::max(sigma_.diagonal().mean().item<double>(), 1e-300) / static_cast<double>(classes_);
}

// Cholesky of c Sigma + lambda I per lambda (LAPACK's blocked potrf, milliseconds for F ~ 1000,
// where an eigen-decomposition through the reference LAPACK takes seconds).
Preconditioner SoftmaxPreconditioner::operator()(double lambda) const {
  const int64_t F = features_, K = classes_;
  const double c = 1.0 / static_cast<double>(K);
  at::Tensor m = sigma_ * c;
  m.diagonal().add_(lambda + jitter_);
  at::Tensor L = at::linalg_cholesky(m);
  return [L, F, K, c](const at::Tensor& v) {
    at::Tensor w = at::cholesky_solve(v.slice(0, 0, F * K).view({F, K}), L);
    return at::cat({w.reshape({-1}), v.slice(0, F * K) / c});
  };
}

at::Tensor softmax_logits(const at::Tensor& x, const at::Tensor& theta, int64_t classes) {
  const int64_t F = x.size(1);
  at::Tensor W = theta.slice(0, 0, F * classes).view({F, classes}).to(at::kFloat);
  at::Tensor b = theta.slice(0, F * classes).to(at::kFloat);
  return at::addmm(b, x.to(at::kFloat), W);
}

}  // namespace mdx
