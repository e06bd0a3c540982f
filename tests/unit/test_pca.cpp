// The PCA fit on data whose covariance is known exactly.
#include <doctest/doctest.h>
#include <torch/torch.h>

#include "mdx/tokenize/pca.h"

using namespace mdx;

TEST_CASE("PCA of points along (1,1) and (1,-1): eigenvalues 4 and 1, sorted, signs fixed") {
  // Rows +-(s,s), +-(u,-u) with s = sqrt(3), u = sqrt(3/4): zero mean, covariance (n-1 = 3)
  // [[2.5, 1.5], [1.5, 2.5]] with eigenvalues 4 (along (1,1)) and 1 (along (1,-1)).
  double s = std::sqrt(3.0), u = std::sqrt(0.75);
  auto rows = torch::tensor({s, s, -s, -s, u, -u, -u, u}, torch::kDouble).view({4, 2}) + 0.5;  // mean 0.5
  CovarianceAccumulator acc(2);
  acc.add(rows.slice(0, 0, 3));
  acc.add(rows.slice(0, 3));  // streamed in two parts
  CHECK(acc.count() == 4);
  auto cov = acc.covariance(true);
  CHECK(cov[0][0].item<double>() == doctest::Approx(2.5));
  CHECK(cov[0][1].item<double>() == doctest::Approx(1.5));
  PcaTokenizer t = fit_pca(acc, true, 1, 2, 0, 0.8);
  CHECK(t.explained_variance[0].item<double>() == doctest::Approx(4.0));
  CHECK(t.explained_variance[1].item<double>() == doctest::Approx(1.0));
  double r = 1 / std::sqrt(2.0);
  CHECK(t.components[0][0].item<double>() == doctest::Approx(r));
  CHECK(t.components[0][1].item<double>() == doctest::Approx(r));
  CHECK(t.components[1][0].item<double>() == doctest::Approx(r));
  CHECK(t.components[1][1].item<double>() == doctest::Approx(-r));
  CHECK(t.mean[0].item<double>() == doctest::Approx(0.5));
  CHECK(t.dim == 1);  // 4/5 = 0.8 reaches the target
  CHECK(fit_pca(acc, true, 1, 2, 0, 0.81).dim == 2);
  CHECK(fit_pca(acc, true, 1, 2, 2, 0.5).dim == 2);
  CHECK(t.explained_ratio(1) == doctest::Approx(0.8));
  // encode/decode: a point on the first axis has latent (its coordinate) and decodes back.
  auto x = torch::tensor({0.5 + 2 * r, 0.5 + 2 * r}, torch::kFloat).view({1, 2});
  auto z = t.to_latent(x);
  CHECK(z[0][0].item<float>() == doctest::Approx(2.0f));
  CHECK((t.from_latent(z) - x).abs().max().item<float>() < 1e-6);
}

TEST_CASE("PCA needs two patches") {
  CovarianceAccumulator acc(3);
  acc.add(torch::ones({1, 3}));
  CHECK_THROWS(acc.covariance(true));
}
