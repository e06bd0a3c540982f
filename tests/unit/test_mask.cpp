// Mask samplers: exact counts, the subset relation of MAGE's dropped tokens, the schedulers' closed
// forms, and MAGE's truncated normal against its analytic mean.
#include <doctest/doctest.h>
#include <torch/torch.h>

#include <cmath>

#include "mdx/corrupt/mask.h"
#include "mdx/util/torch_compat.h"

TEST_CASE("MAE mask: L - int(L (1 - ratio)) tokens masked in every row") {
  auto gen = mdx::compat::cpu_generator(1);
  for (auto [L, ratio, masked] : {std::tuple{49, 0.75, 37}, {49, 0.375, 19}, {196, 0.75, 147}, {16, 0.5, 8}}) {
    auto m = mdx::mae_mask(64, L, ratio, gen);
    CHECK(m.num_masked == masked);
    CHECK(m.masked.sum(1).eq(masked).all().item<bool>());
    CHECK(m.dropped.equal(m.masked));
  }
}

TEST_CASE("masks differ between rows and follow the generator") {
  auto g1 = mdx::compat::cpu_generator(7), g2 = mdx::compat::cpu_generator(7);
  auto a = mdx::mae_mask(8, 49, 0.75, g1), b = mdx::mae_mask(8, 49, 0.75, g2);
  CHECK(a.masked.equal(b.masked));
  CHECK_FALSE(a.masked[0].equal(a.masked[1]));
  // Every token is masked about 75 % of the time.
  auto many = mdx::mae_mask(20000, 49, 0.75, g1);
  auto freq = many.masked.to(torch::kDouble).mean(0);
  CHECK((freq - 37.0 / 49).abs().max().item<double>() < 0.02);
}

TEST_CASE("MAGE mask: ceil(L ratio) masked, ceil(L/2) of them dropped") {
  auto gen = mdx::compat::cpu_generator(3);
  for (double r : {0.5, 0.55, 0.8, 1.0}) {
    auto m = mdx::mage_mask(32, 49, r, gen);
    int64_t masked = static_cast<int64_t>(std::ceil(49 * r));
    CHECK(m.masked.sum(1).eq(masked).all().item<bool>());
    CHECK(m.dropped.sum(1).eq(25).all().item<bool>());
    CHECK((m.dropped & ~m.masked).any().item<bool>() == false);
  }
}

TEST_CASE("MAGE ratio: truncated normal N(0.55, 0.25) on [0.5, 1]") {
  auto gen = mdx::compat::cpu_generator(11);
  double sum = 0, lo = 1, hi = 0;
  const int n = 20000;
  for (int i = 0; i < n; ++i) {
    double r = mdx::mage_ratio(gen);
    sum += r, lo = std::min(lo, r), hi = std::max(hi, r);
  }
  // Analytic mean: mu + sigma (phi(a) - phi(b)) / (Phi(b) - Phi(a)), a = -0.2, b = 1.8.
  auto phi = [](double x) { return std::exp(-x * x / 2) / std::sqrt(2 * M_PI); };
  auto Phi = [](double x) { return 0.5 * std::erfc(-x / std::sqrt(2.0)); };
  double mean = 0.55 + 0.25 * (phi(-0.2) - phi(1.8)) / (Phi(1.8) - Phi(-0.2));
  CHECK(sum / n == doctest::Approx(mean).epsilon(0.01));
  CHECK(lo >= 0.5);
  CHECK(hi <= 1.0);
}

TEST_CASE("LMD schedulers: closed forms at their breakpoints") {
  const int64_t N = 6000;  // S = 4000
  CHECK(mdx::lmd_cosine_ratio(0, N) == doctest::Approx(0.15));
  CHECK(mdx::lmd_cosine_ratio(4000, N) == doctest::Approx(0.75));
  CHECK(mdx::lmd_cosine_ratio(5000, N) == doctest::Approx(0.75));
  auto f = [](double x) { return std::pow(std::cos((x + 0.008) / 1.008 * M_PI / 2), 2); };
  CHECK(mdx::lmd_cosine_ratio(2000, N) == doctest::Approx(0.15 + 0.60 * (1 - f(0.5) / f(0))));
  CHECK(mdx::lmd_piecewise_ratio(0, N) == doctest::Approx(0.15));
  CHECK(mdx::lmd_piecewise_ratio(500, N) == doctest::Approx(0.275));
  CHECK(mdx::lmd_piecewise_ratio(1000, N) == doctest::Approx(0.40));
  CHECK(mdx::lmd_piecewise_ratio(1500, N) == doctest::Approx(0.40));
  CHECK(mdx::lmd_piecewise_ratio(3000, N) == doctest::Approx(0.575));
  CHECK(mdx::lmd_piecewise_ratio(4000, N) == doctest::Approx(0.75));
  CHECK(mdx::lmd_piecewise_ratio(6000, N) == doctest::Approx(0.75));
  CHECK(mdx::lmd_linear_ratio(0, N) == doctest::Approx(0.15));
  CHECK(mdx::lmd_linear_ratio(3000, N) == doctest::Approx(0.45));
  CHECK(mdx::lmd_linear_ratio(6000, N) == doctest::Approx(0.75));
  // Monotone from easy to hard.
  double prev = 0;
  for (int64_t i = 0; i <= N; i += 100) {
    double r = mdx::lmd_cosine_ratio(i, N);
    CHECK(r >= prev - 1e-12);
    prev = r;
  }
}

TEST_CASE("UMD split: a share r of the batch takes the representation step") {
  CHECK(mdx::umd_representation_rows(256, 0.5) == 128);
  CHECK(mdx::umd_representation_rows(100, 0.05) == 5);
  CHECK(mdx::umd_representation_rows(7, 0.5) == 3);    // int(3.5), as small-vision
  CHECK(mdx::umd_representation_rows(256, 0.05) == 12);  // int(12.8): UMD's generation fine-tune
  CHECK(mdx::umd_representation_rows(10, 0.0) == 0);
}
