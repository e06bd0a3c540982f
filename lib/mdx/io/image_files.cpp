// The parts of decode.h that need no OpenCV: which files are images, and the fit policies.
#include <algorithm>

#include "mdx/io/decode.h"
#include "mdx/util/error.h"

namespace mdx {

bool is_image_file(const std::string& path) {
  auto dot = path.find_last_of('.');
  if (dot == std::string::npos) return false;
  std::string ext = path.substr(dot + 1);
  std::transform(ext.begin(), ext.end(), ext.begin(), [](unsigned char c) { return std::tolower(c); });
  for (const char* e : {"png", "jpg", "jpeg", "bmp", "tif", "tiff", "webp"})
    if (ext == e) return true;
  return false;
}

Fit parse_fit(const std::string& name) {
  if (name == "crop") return Fit::Crop;
  if (name == "stretch") return Fit::Stretch;
  if (name == "pad") return Fit::Pad;
  throw UsageError("--fit must be crop, stretch or pad, got '" + name + "'");
}

Image convert_channels(Image in, int64_t channels) {
  if (in.channels == channels) return in;
  Image out;
  out.height = in.height;
  out.width = in.width;
  out.channels = channels;
  const int64_t n = in.height * in.width;
  out.pixels.resize(static_cast<size_t>(n * channels));
  const uint8_t* s = in.pixels.data();
  uint8_t* d = out.pixels.data();
  if (in.channels == 1 && channels == 3) {
    for (int64_t i = 0; i < n; ++i) d[3 * i] = d[3 * i + 1] = d[3 * i + 2] = s[i];
  } else if (in.channels == 3 && channels == 1) {
    // Fixed-point 0.299 R + 0.587 G + 0.114 B with rounding, as OpenCV's RGB2GRAY.
    for (int64_t i = 0; i < n; ++i)
      d[i] = static_cast<uint8_t>((s[3 * i] * 4899 + s[3 * i + 1] * 9617 + s[3 * i + 2] * 1868 + 8192) >> 14);
  } else {
    throw Error("cannot convert " + std::to_string(in.channels) + " channels to " + std::to_string(channels));
  }
  return out;
}

}  // namespace mdx
