// The pieces of mdx-probe against closed forms: ridge and k-NN on hand-computed cases (L-BFGS and
// the softmax regression have their own files, test_lbfgs.cpp and test_softmax.cpp).
#include <doctest/doctest.h>
#include <torch/torch.h>

#include <cmath>

#include "mdx/eval/probe.h"

using namespace mdx;

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
