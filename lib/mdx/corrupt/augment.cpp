#include "mdx/corrupt/augment.h"

#include <CLI/CLI.hpp>
#include <fmt/format.h>

#include <algorithm>
#include <cmath>

#include "mdx/util/error.h"
#include "mdx/util/splitmix.h"

namespace mdx {

namespace {

// A counter-based stream of uniforms for one image: the same (seed, step, row) always draws the
// same numbers, whatever was drawn before, on any rank.
class Draws {
 public:
  Draws(uint64_t seed, int64_t step, int64_t row)
      : state_(splitmix64(splitmix64(splitmix64(seed ^ 0x6d64782d61756721ULL) ^ static_cast<uint64_t>(step)) ^
                        static_cast<uint64_t>(row))) {}
  double uniform() {  // [0, 1), 53 bits
    state_ = splitmix64(state_);
    return static_cast<double>(state_ >> 11) * 0x1.0p-53;
  }
  int64_t below(int64_t n) { return std::min(n - 1, static_cast<int64_t>(uniform() * static_cast<double>(n))); }

 private:
  uint64_t state_;
};

std::pair<double, double> parse_area(const std::string& text) {
  const auto comma = text.find(',');
  double lo = 0, hi = 0;
  try {
    if (comma == std::string::npos) throw std::invalid_argument(text);
    size_t a = 0, b = 0;
    lo = std::stod(text.substr(0, comma), &a);
    hi = std::stod(text.substr(comma + 1), &b);
    if (a != comma || b != text.size() - comma - 1) throw std::invalid_argument(text);
  } catch (const std::exception&) {
    throw UsageError("--crop-area must be two shares 'lo,hi', got '" + text + "'");
  }
  if (!(lo > 0 && lo <= hi && hi <= 1))
    throw UsageError(fmt::format("--crop-area must satisfy 0 < lo <= hi <= 1, got '{}'", text));
  return {lo, hi};
}

}  // namespace

std::string Augment::describe() const {
  if (!any()) return "none";
  std::string out;
  if (crop) out = fmt::format("crop({}-{})", area_min, area_max);
  if (flip) out += out.empty() ? "flip" : "+flip";
  return out;
}

CropBox Augment::draw(int64_t height, int64_t width, uint64_t seed, int64_t step, int64_t row) const {
  CropBox box{0, 0, height, width, false};
  Draws d(seed, step, row);
  if (flip) box.flip = d.uniform() < 0.5;
  if (!crop) return box;
  // torchvision's RandomResizedCrop.get_params.
  const double area = static_cast<double>(height * width);
  const double log_lo = std::log(ratio_min), log_hi = std::log(ratio_max);
  for (int attempt = 0; attempt < 10; ++attempt) {
    const double target = area * (area_min + (area_max - area_min) * d.uniform());
    const double aspect = std::exp(log_lo + (log_hi - log_lo) * d.uniform());
    const auto w = static_cast<int64_t>(std::nearbyint(std::sqrt(target * aspect)));
    const auto h = static_cast<int64_t>(std::nearbyint(std::sqrt(target / aspect)));
    if (w > 0 && w <= width && h > 0 && h <= height) {
      box.top = d.below(height - h + 1);
      box.left = d.below(width - w + 1);
      box.height = h, box.width = w;
      return box;
    }
  }
  const double in_ratio = static_cast<double>(width) / static_cast<double>(height);
  int64_t w = width, h = height;
  if (in_ratio < ratio_min) h = static_cast<int64_t>(std::nearbyint(static_cast<double>(w) / ratio_min));
  else if (in_ratio > ratio_max) w = static_cast<int64_t>(std::nearbyint(static_cast<double>(h) * ratio_max));
  box.top = (height - h) / 2, box.left = (width - w) / 2, box.height = h, box.width = w;
  return box;
}

void resized_crop(const uint8_t* src, int64_t height, int64_t width, int64_t channels, const CropBox& box,
                  uint8_t* dst, int64_t out_h, int64_t out_w) {
  (void)height;
  // torch's upsample_bilinear2d (align_corners=False): source = scale (dst + 0.5) - 0.5, clamped
  // at 0; the lower neighbour and the next one inside the crop, in float32.
  const float sy = static_cast<float>(box.height) / static_cast<float>(out_h);
  const float sx = static_cast<float>(box.width) / static_cast<float>(out_w);
  for (int64_t y = 0; y < out_h; ++y) {
    const float fy = std::max(0.0f, sy * (static_cast<float>(y) + 0.5f) - 0.5f);
    const auto y0 = static_cast<int64_t>(fy);
    const int64_t y1 = y0 < box.height - 1 ? y0 + 1 : y0;
    const float ly = fy - static_cast<float>(y0), hy = 1.0f - ly;
    const uint8_t* r0 = src + ((box.top + y0) * width + box.left) * channels;
    const uint8_t* r1 = src + ((box.top + y1) * width + box.left) * channels;
    for (int64_t x = 0; x < out_w; ++x) {
      const float fx = std::max(0.0f, sx * (static_cast<float>(x) + 0.5f) - 0.5f);
      const auto x0 = static_cast<int64_t>(fx);
      const int64_t x1 = x0 < box.width - 1 ? x0 + 1 : x0;
      const float lx = fx - static_cast<float>(x0), hx = 1.0f - lx;
      uint8_t* out = dst + (y * out_w + (box.flip ? out_w - 1 - x : x)) * channels;
      for (int64_t c = 0; c < channels; ++c) {
        const float v = hy * (hx * r0[x0 * channels + c] + lx * r0[x1 * channels + c]) +
                        ly * (hx * r1[x0 * channels + c] + lx * r1[x1 * channels + c]);
        out[c] = static_cast<uint8_t>(std::min(255.0f, std::max(0.0f, std::floor(v + 0.5f))));
      }
    }
  }
}

void AugmentOptions::add_to(CLI::App& app) {
  app.add_option("--augment", augment,
                 "auto (the objective's: umd crop(0.8-1)+flip, crop(0.95-1)+flip with --class-cond; mae "
                 "crop(0.2-1)+flip, as mage; dit flip; ldae none) | none | flip | crop | crop+flip")
      ->capture_default_str();
  app.add_option("--crop-area", crop_area, "lo,hi: the share of the image area a random crop keeps");
}

void AugmentOptions::validate() const {
  if (augment != "auto" && augment != "none" && augment != "flip" && augment != "crop" && augment != "crop+flip")
    throw UsageError("--augment must be auto, none, flip, crop or crop+flip, got '" + augment + "'");
  if (!crop_area.empty()) parse_area(crop_area);
}

Augment AugmentOptions::resolve(const Augment& reference) const {
  validate();
  Augment a = reference;
  if (augment != "auto") {
    a.crop = augment == "crop" || augment == "crop+flip";
    a.flip = augment == "flip" || augment == "crop+flip";
    if (a.crop && !reference.crop) a.area_min = 0.08, a.area_max = 1;
  }
  if (!crop_area.empty()) {
    if (!a.crop) throw UsageError("--crop-area goes with a crop (--augment crop or crop+flip)");
    std::tie(a.area_min, a.area_max) = parse_area(crop_area);
  }
  return a;
}

}  // namespace mdx
