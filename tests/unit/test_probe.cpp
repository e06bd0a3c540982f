// The pieces of mdx-probe against closed forms: ridge and k-NN on hand-computed cases (L-BFGS and
// the softmax regression have their own files, test_lbfgs.cpp and test_softmax.cpp).
#include <doctest/doctest.h>
#include <torch/torch.h>

#include <cmath>

#include "mdx/eval/probe.h"
#include "mdx/util/torch_compat.h"

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
  // A NaN score is never a hit.
  auto nan = torch::tensor({NAN, 0.5f}).view({1, 2});
  CHECK(label_rank(nan, torch::tensor({0}, torch::kLong))[0].item<int64_t>() == 2);
}

TEST_CASE("probe: k-NN votes do not depend on the features' scale (1e20 and 1e-25 as 1)") {
  auto g = compat::cpu_generator(3);
  auto train = torch::randn({40, 8}, g), test = torch::randn({10, 8}, g);
  auto labels = torch::randint(0, 3, {40}, g, torch::kLong);
  auto base = knn_scores(train, labels, test, 3, 5, 4);
  for (float scale : {1e20f, 1e-25f}) {
    CAPTURE(scale);
    auto s = knn_scores(train * scale, labels, test * scale, 3, 5, 4);
    CHECK(torch::isfinite(s).all().item<bool>());
    CHECK(torch::allclose(s, base, 1e-4, 1e-6));
  }
}

TEST_CASE("probe: the report as JSON: keys in order, shortest numbers, null for a class without test rows") {
  ProbeReport r;
  r.method = "ridge";
  r.top1 = 0.75, r.top5 = 1;
  r.per_class_accuracy = {1.0, std::nullopt, 0.5};
  r.test_counts = {2, 0, 2};
  r.confusion = {{2, 0, 0}, {0, 0, 0}, {1, 0, 1}};
  r.classes = 3, r.features = 4, r.train_rows = 10, r.test_rows = 4, r.shots = 0;
  r.label_names = {"a", "b\"c", "d"};
  r.hyperparameters = "{\"lambda\": 1024}";
  r.train = {"tr.h5", "embeddings", 12, 10};
  r.test = {"te.h5", "embeddings", 4, 4};
  r.seed = 7;
  r.mdx_version = "0.1.0", r.mdx_commit = "abc";
  CHECK(r.to_json() ==
        "{\"method\": \"ridge\", \"top1\": 0.75, \"top5\": 1, \"per_class_accuracy\": [1, null, 0.5], "
        "\"test_counts\": [2, 0, 2], \"confusion\": [[2, 0, 0], [0, 0, 0], [1, 0, 1]], \"classes\": 3, "
        "\"label_names\": [\"a\", \"b\\\"c\", \"d\"], \"features\": 4, \"train_rows\": 10, \"test_rows\": 4, "
        "\"shots\": 0, \"hyperparameters\": {\"lambda\": 1024}, \"train\": {\"path\": \"tr.h5\", \"kind\": "
        "\"embeddings\", \"rows\": 12, \"used_rows\": 10}, \"test\": {\"path\": \"te.h5\", \"kind\": \"embeddings\", "
        "\"rows\": 4, \"used_rows\": 4}, \"seed\": 7, \"mdx_version\": \"0.1.0\", \"mdx_commit\": \"abc\"}");
  r.label_names.clear();  // inputs without names
  CHECK(r.to_json().find("\"label_names\": null, ") != std::string::npos);
}
