// Multinomial logistic regression for mdx-probe: the loss and gradient L-BFGS minimizes (float32
// products over the rows, by AVX2 row kernels where the CPU has them and there are few classes,
// BLAS otherwise), its curvature preconditioner, and the fitted model's logits.
#pragma once
#include <torch/types.h>

#include "mdx/eval/lbfgs.h"

namespace mdx {

// mean_i -log softmax(x_i W + b)[y_i] + lambda/2 ||W||_F^2 over the rows of x (float32 [N,F],
// contiguous), with W [F,K] and an unpenalized bias b [K], both packed in one float64 vector
// theta = (W row-major, b). scikit-learn's LogisticRegression minimizes
// C * sum_i -log p_i + 1/2 ||W||^2, which is N*C times this, so C = 1 / (lambda * N).
class SoftmaxObjective {
 public:
  SoftmaxObjective(at::Tensor x, at::Tensor labels, int64_t classes, double lambda);
  double operator()(const at::Tensor& theta, at::Tensor& grad) const;
  int64_t parameters() const { return (features_ + 1) * classes_; }
  void set_lambda(double lambda) { lambda_ = lambda; }

 private:
  at::Tensor x_, labels_;
  int64_t rows_, features_, classes_;
  double lambda_;
};

// H0 for L-BFGS on a SoftmaxObjective: (c Sigma + lambda I)^-1 on W and 1/c on b, with
// Sigma = x^T x / N (the correlation matrix of standardized features) and c = 1/K, the softmax
// curvature at W = 0, so that the data's ill-conditioning (raw pixels: eigenvalues over six
// decades) is taken out before L-BFGS starts. Sigma is computed once for every lambda.
class SoftmaxPreconditioner {
 public:
  SoftmaxPreconditioner(const at::Tensor& x, int64_t classes);
  Preconditioner operator()(double lambda) const;

 private:
  at::Tensor sigma_;
  double jitter_ = 0;
  int64_t features_, classes_;
};

// Logits x W + b of theta's model for float32 rows x: float32 [N,K].
at::Tensor softmax_logits(const at::Tensor& x, const at::Tensor& theta, int64_t classes);

}  // namespace mdx
