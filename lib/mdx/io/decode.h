// Image files decoded (PNG by libpng; JPEG, BMP, TIFF, WebP by OpenCV; gray, RGB, RGBA; 8 or 16 bit), and
// resized to a table's size. Built into its own small library (mdx_decode) so that only the tools
// that read image files link OpenCV.
#pragma once
#include <cstdint>
#include <string>
#include <vector>

namespace mdx {

struct Image {
  int64_t height = 0, width = 0, channels = 0;
  std::vector<uint8_t> pixels;  // HWC, RGB order
};

enum class Fit { Crop, Stretch, Pad };
Fit parse_fit(const std::string& name);  // crop | stretch | pad; throws UsageError

// True for the extensions mdx decodes: .png .jpg .jpeg .bmp .tif .tiff .webp (any case).
bool is_image_file(const std::string& path);
// Decodes `path` to 8-bit `channels`: 1 or 3, or 0 for the file's own (1 if gray, else 3). Alpha
// is dropped; 16-bit samples are scaled to 8 bits.
// Throws Error naming the file when it is empty, truncated or not an image.
Image decode_image(const std::string& path, int channels);
// Converts between 1 and 3 channels (gray replicated; ITU-R 601 luma, as OpenCV and PIL).
Image convert_channels(Image in, int64_t channels);
// Resizes to height x width under `fit`: crop (scale to cover, centre crop), stretch, or pad
// (scale to fit, centre on black). Area interpolation to shrink, bilinear to enlarge.
Image fit_image(const Image& in, int64_t height, int64_t width, Fit fit);

}  // namespace mdx
