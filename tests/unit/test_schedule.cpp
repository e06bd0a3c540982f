// Noise schedules against their closed forms, computed here independently in long double.
#include <doctest/doctest.h>
#include <torch/torch.h>

#include <cmath>

#include "mdx/corrupt/schedule.h"

using mdx::NoiseSchedule;
using mdx::ScheduleKind;

TEST_CASE("linear schedule: alpha_bar is the product of 1 - beta, beta linear from 1e-4 to 0.02") {
  NoiseSchedule s(ScheduleKind::Linear, 1000);
  auto ab = s.alphas_cumprod();
  long double prod = 1.0L;
  for (int t = 0; t < 1000; ++t) {
    long double beta = 1e-4L + (0.02L - 1e-4L) * t / 999.0L;
    prod *= 1.0L - beta;
    CHECK(ab[t].item<double>() == doctest::Approx(static_cast<double>(prod)).epsilon(1e-12));
  }
  CHECK(ab[0].item<double>() == doctest::Approx(0.9999).epsilon(1e-14));
  CHECK(ab[999].item<double>() == doctest::Approx(4.0358e-5).epsilon(1e-3));  // DDPM's well-known value
  CHECK((s.signal().pow(2) + s.noise().pow(2) - 1).abs().max().item<double>() < 1e-12);
}

TEST_CASE("linear schedule of T != 1000 steps is rescaled by 1000/T, as DiT and UMD rescale") {
  for (int T : {100, 250, 4000}) {
    NoiseSchedule s(ScheduleKind::Linear, T);
    auto ab = s.alphas_cumprod();
    const long double scale = 1000.0L / T;
    long double prod = 1.0L;
    for (int t = 0; t < T; ++t) {
      prod *= 1.0L - scale * (1e-4L + (0.02L - 1e-4L) * t / (T - 1.0L));
      if (t % 37 == 0 || t == T - 1)
        CHECK(ab[t].item<double>() == doctest::Approx(static_cast<double>(prod)).epsilon(1e-11));
    }
    CHECK(ab[0].item<double>() == doctest::Approx(1 - scale * 1e-4L).epsilon(1e-14));
  }
  // About the same total noise whatever T: alpha_bar at the end stays near DDPM's 4e-5.
  CHECK(NoiseSchedule(ScheduleKind::Linear, 100).alphas_cumprod()[99].item<double>() < 1e-4);
}

TEST_CASE("cosine schedule: alpha_bar[t] = f(t+1)/f(0) where beta is not clipped") {
  NoiseSchedule s(ScheduleKind::Cosine, 1000);
  auto ab = s.alphas_cumprod();
  auto f = [](long double t) {
    long double c = std::cos((t / 1000.0L + 0.008L) / 1.008L * static_cast<long double>(M_PI) / 2);
    return c * c;
  };
  for (int t : {0, 1, 10, 100, 250, 500, 750, 900, 980})
    CHECK(ab[t].item<double>() == doctest::Approx(static_cast<double>(f(t + 1) / f(0))).epsilon(1e-9));
  // The last step is clipped at beta = 0.999: alpha_bar[T-1] = alpha_bar[T-2] * 0.001.
  CHECK(ab[999].item<double>() == doctest::Approx(ab[998].item<double>() * 0.001).epsilon(1e-9));
  CHECK(ab.diff().lt(0).all().item<bool>());
}

TEST_CASE("l-DAE schedules") {
  NoiseSchedule g(ScheduleKind::LdaeGamma, 1000);
  for (int t : {0, 1, 500, 999}) {
    CHECK(g.signal()[t].item<double>() == doctest::Approx(std::sqrt(1.0 - t / 1000.0)));
    CHECK(g.noise()[t].item<double>() == doctest::Approx(std::sqrt(t / 1000.0)));
    CHECK(g.weight()[t].item<double>() == 1.0);
  }
  NoiseSchedule s(ScheduleKind::LdaeSigma, 1000);
  for (int t : {0, 250, 999}) {
    double sigma = std::sqrt(2.0) * t / 1000.0;
    CHECK(s.signal()[t].item<double>() == 1.0);
    CHECK(s.noise()[t].item<double>() == doctest::Approx(sigma));
    CHECK(s.weight()[t].item<double>() == doctest::Approx(1.0 / (1.0 + sigma * sigma)));
  }
  NoiseSchedule one(ScheduleKind::Single, 1000);
  CHECK((one.noise() - std::sqrt(1.0 / 3.0)).abs().max().item<double>() < 1e-15);
  CHECK((one.signal() - 1.0).abs().max().item<double>() == 0.0);
}

TEST_CASE("add_noise applies each row's own timestep") {
  NoiseSchedule s(ScheduleKind::Linear, 1000);
  auto x0 = torch::ones({2, 3, 4});
  auto eps = torch::full({2, 3, 4}, 2.0);
  auto t = torch::tensor({0, 999}, torch::kLong);
  auto xt = s.add_noise(x0, t, eps);
  for (int i = 0; i < 2; ++i) {
    int ti = i == 0 ? 0 : 999;
    double expect = s.signal()[ti].item<double>() + 2.0 * s.noise()[ti].item<double>();
    CHECK(xt[i].sub(expect).abs().max().item<double>() < 1e-6);
  }
  CHECK_THROWS(s.add_noise(x0, torch::tensor({0, 1000}, torch::kLong), eps));
}

TEST_CASE("schedule names round-trip") {
  for (auto k : {ScheduleKind::Linear, ScheduleKind::Cosine, ScheduleKind::LdaeGamma, ScheduleKind::LdaeSigma,
                 ScheduleKind::Single})
    CHECK(mdx::parse_schedule(mdx::schedule_name(k)) == k);
  CHECK_THROWS(mdx::parse_schedule("quadratic"));
}
