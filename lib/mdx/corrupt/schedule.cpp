#include "mdx/corrupt/schedule.h"

#include <torch/torch.h>

#include <cmath>
#include <vector>

#include "mdx/util/error.h"

namespace mdx {

ScheduleKind parse_schedule(const std::string& name) {
  if (name == "linear") return ScheduleKind::Linear;
  if (name == "cosine") return ScheduleKind::Cosine;
  if (name == "ldae-gamma") return ScheduleKind::LdaeGamma;
  if (name == "ldae-sigma") return ScheduleKind::LdaeSigma;
  if (name == "single") return ScheduleKind::Single;
  throw UsageError("unknown noise schedule '" + name + "' (linear, cosine, ldae-gamma, ldae-sigma, single)");
}

std::string schedule_name(ScheduleKind kind) {
  switch (kind) {
    case ScheduleKind::Linear: return "linear";
    case ScheduleKind::Cosine: return "cosine";
    case ScheduleKind::LdaeGamma: return "ldae-gamma";
    case ScheduleKind::LdaeSigma: return "ldae-sigma";
    case ScheduleKind::Single: return "single";
  }
  return "?";
}

NoiseSchedule::NoiseSchedule(ScheduleKind kind, int64_t steps) : kind_(kind), steps_(steps) {
  if (steps < 1) throw UsageError("a noise schedule needs at least 1 step");
  const auto T = static_cast<size_t>(steps);
  std::vector<double> signal(T), noise(T), weight(T, 1.0);
  auto vp_from_betas = [&](const std::vector<double>& betas) {
    double ab = 1.0;
    for (size_t t = 0; t < T; ++t) {
      ab *= 1.0 - betas[t];
      signal[t] = std::sqrt(ab);
      noise[t] = std::sqrt(1.0 - ab);
    }
  };
  switch (kind) {
    case ScheduleKind::Linear: {
      // DiT's and small-vision's get_named_beta_schedule("linear", T): scale = 1000 / T,
      // numpy.linspace(scale 1e-4, scale 0.02, T, dtype=float64), computed as numpy does (a step
      // times the index plus the start; the last value the stop itself).
      const double scale = 1000.0 / static_cast<double>(T), start = scale * 1e-4, stop = scale * 0.02;
      const double step = T > 1 ? (stop - start) / static_cast<double>(T - 1) : 0.0;
      std::vector<double> betas(T);
      for (size_t t = 0; t < T; ++t) betas[t] = static_cast<double>(t) * step + start;
      if (T > 1) betas[T - 1] = stop;
      vp_from_betas(betas);
      break;
    }
    case ScheduleKind::Cosine: {
      auto f = [&](double t) {
        double c = std::cos((t / steps + 0.008) / 1.008 * M_PI / 2);
        return c * c;
      };
      std::vector<double> betas(T);
      for (size_t t = 0; t < T; ++t) betas[t] = std::min(1.0 - f(t + 1.0) / f(t), 0.999);
      vp_from_betas(betas);
      break;
    }
    case ScheduleKind::LdaeGamma:
      for (size_t t = 0; t < T; ++t) {
        double g2 = 1.0 - static_cast<double>(t) / steps;
        signal[t] = std::sqrt(g2);
        noise[t] = std::sqrt(1.0 - g2);
      }
      break;
    case ScheduleKind::LdaeSigma:
      for (size_t t = 0; t < T; ++t) {
        signal[t] = 1.0;
        noise[t] = std::sqrt(2.0) * static_cast<double>(t) / steps;
        weight[t] = 1.0 / (1.0 + noise[t] * noise[t]);
      }
      break;
    case ScheduleKind::Single:
      for (size_t t = 0; t < T; ++t) {
        signal[t] = 1.0;
        noise[t] = std::sqrt(1.0 / 3.0);
      }
      break;
  }
  auto opts = at::TensorOptions().dtype(at::kDouble);
  signal_ = at::tensor(signal, opts);
  noise_ = at::tensor(noise, opts);
  weight_ = at::tensor(weight, opts);
}

bool NoiseSchedule::variance_preserving() const {
  return kind_ == ScheduleKind::Linear || kind_ == ScheduleKind::Cosine || kind_ == ScheduleKind::LdaeGamma;
}

at::Tensor NoiseSchedule::alphas_cumprod() const {
  at::Tensor s2 = signal_ * signal_;
  return s2 / (s2 + noise_ * noise_);
}

at::Tensor NoiseSchedule::per_row(const at::Tensor& coef, const at::Tensor& t, int64_t dims, at::ScalarType type) {
  std::vector<int64_t> shape(static_cast<size_t>(dims), 1);
  shape[0] = t.size(0);
  return coef.index_select(0, t.to(at::kLong).cpu()).to(type).to(t.device()).reshape(shape);
}

at::Tensor NoiseSchedule::add_noise(const at::Tensor& x0, const at::Tensor& t, const at::Tensor& eps) const {
  if ((t < 0).any().item<bool>() || (t >= steps_).any().item<bool>())
    throw Error("timestep outside [0, " + std::to_string(steps_ - 1) + "]");
  return per_row(signal_, t, x0.dim(), x0.scalar_type()) * x0 + per_row(noise_, t, x0.dim(), x0.scalar_type()) * eps;
}

}  // namespace mdx
