#include "mdx/util/statistics.h"

#include <torch/torch.h>

#include <algorithm>
#include <string>

#include "mdx/util/error.h"

namespace mdx {

CovarianceAccumulator::CovarianceAccumulator(int64_t dim)
    : sum_(at::zeros({dim}, at::kDouble)), outer_(at::zeros({dim, dim}, at::kDouble)) {}

void CovarianceAccumulator::add(const at::Tensor& rows) {
  at::Tensor x = rows.to(at::kDouble);
  sum_ += x.sum(0);
  outer_.addmm_(x.t(), x);
  count_ += x.size(0);
}

at::Tensor CovarianceAccumulator::mean() const { return sum_ / static_cast<double>(std::max<int64_t>(count_, 1)); }

at::Tensor CovarianceAccumulator::covariance(bool center) const {
  if (count_ < 2) throw Error("a covariance needs at least 2 samples, got " + std::to_string(count_));
  at::Tensor m = mean();
  at::Tensor s = center ? outer_ - static_cast<double>(count_) * at::outer(m, m) : outer_.clone();
  return s / static_cast<double>(count_ - 1);
}

}  // namespace mdx
