// Streamed first and second moments of rows of features: the mean and covariance behind the PCA
// tokenizer (mdx-pca-fit) and the Gaussians of the Fréchet distance (mdx-fid).
#pragma once
#include <torch/types.h>

namespace mdx {

// Accumulates the float64 sum and sum of outer products of rows streamed in any number of parts.
class CovarianceAccumulator {
 public:
  explicit CovarianceAccumulator(int64_t dim);
  void add(const at::Tensor& rows);  // [n, D], any floating type
  int64_t count() const { return count_; }
  at::Tensor mean() const;                    // [D]
  at::Tensor covariance(bool center) const;  // [D, D], divided by n - 1 (numpy.cov's default)

 private:
  at::Tensor sum_, outer_;
  int64_t count_ = 0;
};

}  // namespace mdx
