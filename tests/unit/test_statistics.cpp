// The streamed mean and covariance against the whole-table formulas (torch.cov is numpy.cov).
#include <doctest/doctest.h>
#include <torch/torch.h>

#include "mdx/util/error.h"
#include "mdx/util/statistics.h"

using namespace mdx;

TEST_CASE("statistics: mean and covariance streamed in parts equal numpy.cov of the whole table") {
  torch::manual_seed(13);
  auto x = torch::randn({50, 4}, torch::kDouble) * torch::tensor({1.0, 3.0, 0.5, 2.0}, torch::kDouble) + 7.0;
  x.select(1, 3) += 0.5 * x.select(1, 0);  // correlated columns
  CovarianceAccumulator acc(4);
  acc.add(x.slice(0, 0, 17));
  acc.add(x.slice(0, 17, 18));
  acc.add(x.slice(0, 18));
  CHECK(acc.count() == 50);
  CHECK((acc.mean() - x.mean(0)).abs().max().item<double>() < 1e-12);
  // Rows are observations: torch.cov wants variables as rows.
  CHECK((acc.covariance(true) - at::cov(x.t())).abs().max().item<double>() < 1e-10);
  CHECK((acc.covariance(false) - at::mm(x.t(), x) / 49.0).abs().max().item<double>() < 1e-10);
}

TEST_CASE("statistics: a covariance of fewer than 2 samples is refused") {
  CovarianceAccumulator acc(3);
  CHECK_THROWS_AS(acc.covariance(true), Error);
  acc.add(torch::ones({1, 3}));
  CHECK_THROWS_AS(acc.covariance(false), Error);
  acc.add(torch::zeros({1, 3}, torch::kFloat));
  CHECK(acc.covariance(true)[0][0].item<double>() == doctest::Approx(0.5));
}
