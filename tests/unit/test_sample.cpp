// The samplers of mdx-sample against exact denoisers: for data that is one point, or Gaussian, the
// ideal eps is known in closed form, and the reverse process must return the data distribution.
#include <doctest/doctest.h>
#include <torch/torch.h>

#include <cmath>

#include "mdx/corrupt/schedule.h"
#include "mdx/eval/sample.h"

using namespace mdx;

TEST_CASE("sample: respacing keeps round(i (T-1)/(N-1)) as guided-diffusion's space_timesteps") {
  NoiseSchedule s(ScheduleKind::Linear, 1000);
  RespacedSchedule r = respace(s, 125);
  REQUIRE(r.timesteps.size() == 125);
  auto ac = s.alphas_cumprod();
  for (int i = 0; i < 125; ++i) {
    const auto expected = static_cast<int64_t>(std::llround(i * 999.0 / 124.0));
    CHECK(r.timesteps[i] == expected);
    CHECK(r.alphas_cumprod[i] == ac[expected].item<double>());
  }
  CHECK(r.timesteps.front() == 0);
  CHECK(r.timesteps.back() == 999);
  RespacedSchedule all = respace(s, 1000);
  for (int i = 0; i < 1000; ++i) CHECK(all.timesteps[i] == i);
  CHECK_THROWS(respace(s, 0));
  CHECK_THROWS(respace(s, 1001));
}

TEST_CASE("sample: UMD's spacing visits 999, 991, ..., 7 and then 0, as small-vision's DDIM") {
  NoiseSchedule s(ScheduleKind::Cosine, 1000);
  RespacedSchedule r = respace_umd(s, 125);
  REQUIRE(r.timesteps.size() == 126);  // 125 transitions and the final x0 call at t = 0
  CHECK(r.timesteps[0] == 0);
  for (int i = 1; i <= 125; ++i) CHECK(r.timesteps[i] == 7 + 8 * (i - 1));
  CHECK(r.timesteps.back() == 999);
  auto ac = s.alphas_cumprod();
  for (size_t i = 0; i < r.timesteps.size(); ++i) CHECK(r.alphas_cumprod[i] == ac[r.timesteps[i]].item<double>());
  CHECK(respace_umd(s, 1000).timesteps.size() == 1000);
  CHECK(respace_umd(s, 1).timesteps == std::vector<int64_t>{0, 999});
  CHECK_THROWS(respace_umd(s, 0));
}

namespace {
// The exact eps of data concentrated at x_star: (x_t - sqrt(ab_t) x_star) / sqrt(1 - ab_t).
Denoiser point_denoiser(const NoiseSchedule& s, const at::Tensor& x_star) {
  at::Tensor ac = s.alphas_cumprod();
  return [ac, x_star](const at::Tensor& xt, const at::Tensor& t) {
    at::Tensor a = ac.index_select(0, t).to(at::kFloat).view({-1, 1, 1});
    return (xt - a.sqrt() * x_star) / (1 - a).sqrt();
  };
}
}  // namespace

TEST_CASE("sample: DDIM (eta 0 and 1) and DDPM return the single data point with its exact denoiser") {
  NoiseSchedule s(ScheduleKind::Cosine, 1000);
  at::Generator g = at::make_generator<at::CPUGeneratorImpl>(7);
  at::Tensor x_star = at::rand({4, 6, 3}, g) * 1.6 - 0.8;
  for (auto [kind, eta] : {std::pair{SamplerKind::Ddim, 0.0}, {SamplerKind::Ddim, 1.0}, {SamplerKind::Ddpm, 0.0}}) {
    SamplerSettings set;
    set.kind = kind;
    set.eta = eta;
    at::Tensor x = reverse_diffusion(respace(s, 50), set, point_denoiser(s, x_star), at::randn({4, 6, 3}, g),
                                     [&](int64_t) { return at::randn({4, 6, 3}, g); });
    CHECK((x - x_star).abs().max().item<double>() < 1e-4);
  }
}

TEST_CASE("sample: a DDIM step with eta 0 by hand") {
  // Two kept timesteps; a denoiser that predicts eps = 0 makes x0 = x_t / sqrt(ab_t) (unclipped), and
  // the deterministic step moves it to sqrt(ab_prev) x0.
  RespacedSchedule r{{0, 500}, {0.9, 0.25}};
  SamplerSettings set;
  set.eta = 0;
  set.clip = false;
  int calls = 0;
  Denoiser zero = [&](const at::Tensor& xt, const at::Tensor& t) {
    CHECK(t[0].item<int64_t>() == (calls == 0 ? 500 : 0));
    ++calls;
    return at::zeros_like(xt);
  };
  at::Tensor x = at::full({1, 1, 1}, 0.3f);
  at::Tensor out = reverse_diffusion(r, set, zero, x, [](int64_t) -> at::Tensor { FAIL("no noise with eta 0"); return {}; });
  // Step 500 -> 0: x0 = 0.3 / 0.5 = 0.6, x = sqrt(0.9) 0.6; step 0 -> clean: x0 = x / sqrt(0.9) = 0.6.
  CHECK(calls == 2);
  CHECK(out.item<double>() == doctest::Approx(0.6).epsilon(1e-6));
}

TEST_CASE("sample: stochastic samplers reproduce Gaussian data's variance with its exact denoiser") {
  // x0 ~ N(0, v): E[x0 | x_t] = sqrt(ab) v / (ab v + 1 - ab) x_t, the ideal x0 prediction.
  NoiseSchedule s(ScheduleKind::Linear, 1000);
  const double v = 0.25;
  at::Tensor ac = s.alphas_cumprod();
  Denoiser ideal = [&](const at::Tensor& xt, const at::Tensor& t) {
    at::Tensor a = ac.index_select(0, t).to(at::kFloat).view({-1, 1, 1});
    return a.sqrt() * v / (a * v + 1 - a) * xt;
  };
  for (auto kind : {SamplerKind::Ddpm, SamplerKind::Ddim}) {
    at::Generator g = at::make_generator<at::CPUGeneratorImpl>(3);
    SamplerSettings set;
    set.kind = kind;
    set.eta = 1.0;
    set.predicts_x0 = true;
    set.clip = false;
    at::Tensor x = reverse_diffusion(respace(s, 100), set, ideal, at::randn({20000, 1, 1}, g),
                                     [&](int64_t) { return at::randn({20000, 1, 1}, g); });
    CHECK(x.var().item<double>() == doctest::Approx(v).epsilon(0.04));
    CHECK(std::abs(x.mean().item<double>()) < 0.02);
  }
}
