// Training-time data augmentation, on the fly: a random resized crop and a horizontal flip of
// uint8 images, drawn per image from a counter-based generator keyed by (seed, step, row), so the
// augmented batch of a step is the same after --resume and on every rank.
//
// The references: UMD (small-vision) an Inception crop keeping 80-100 % of the area (95-100 % in
// its generation fine-tune), aspect ratio 3/4..4/3, and a flip; MAE a random resized crop keeping
// 20-100 % and a flip; DiT a flip (its centre crop sizes ImageNet; tables are sized already);
// l-DAE a centre crop only, i.e. nothing on a sized table.
//
// One procedure serves both crops: torchvision's RandomResizedCrop.get_params (10 attempts of an
// area share and a log-uniform aspect ratio; then the centre crop of the whole image, its ratio
// clamped), resampled bilinearly to the table's size with half-pixel centres and no antialiasing
// (torch.nn.functional.interpolate(mode="bilinear", align_corners=False), as small-vision's
// resize with antialias=False), rounded to uint8. MAE resizes bicubically with PIL and UMD's crop
// box comes from TensorFlow's sample_distorted_bounding_box: both departures are documented in
// mdx-train(1).
#pragma once
#include <cstdint>
#include <string>

namespace CLI {
class App;
}

namespace mdx {

struct CropBox {
  int64_t top = 0, left = 0, height = 0, width = 0;
  bool flip = false;
};

struct Augment {
  bool crop = false, flip = false;
  double area_min = 1, area_max = 1;  // share of the image's area a crop keeps
  double ratio_min = 3.0 / 4, ratio_max = 4.0 / 3;

  bool any() const { return crop || flip; }
  // "none", "flip", "crop(0.8-1)+flip", ...: what the log and the checkpoint's config say.
  std::string describe() const;
  // The crop box and flip of one image of height x width, from the generator of (seed, step, row).
  CropBox draw(int64_t height, int64_t width, uint64_t seed, int64_t step, int64_t row) const;
};

// --augment and --crop-area, for mdx-train (default auto) and mdx-corrupt (default none).
struct AugmentOptions {
  std::string augment = "auto";  // auto (the objective's) | none | flip | crop | crop+flip
  std::string crop_area;         // "lo,hi": the share of the area a crop keeps ("": the objective's)

  void add_to(CLI::App& app);
  void validate() const;
  // The augmentation these options give under an objective whose own is `reference`. A crop takes
  // the reference's area range unless --crop-area says otherwise (0.08-1, torchvision's, when the
  // reference has no crop). Throws UsageError.
  Augment resolve(const Augment& reference) const;
};

// Crops `box` out of `src` (uint8 HWC) and resamples it to out_h x out_w (bilinear, half-pixel
// centres, no antialiasing), mirrored left-right when box.flip; writes uint8 HWC to `dst`.
void resized_crop(const uint8_t* src, int64_t height, int64_t width, int64_t channels, const CropBox& box,
                  uint8_t* dst, int64_t out_h, int64_t out_w);

}  // namespace mdx
