// A PNG-ready grid of images: a row per image, a column per variant, masked patches painted
// (blue: dropped from the encoder; orange: given to the encoder as the mask token, MAGE).
#pragma once
#include <torch/types.h>

#include <cstdint>
#include <vector>

namespace mdx {

struct Grid {
  int64_t height = 0, width = 0;  // pixels; 3 channels (RGB)
  std::vector<uint8_t> pixels;
};

// cells uint8 [R, K, H, W, C]; masked / dropped bool [R, K, L] or undefined (no marks).
// zoom 0: cells of at least 64 pixels.
Grid render_grid(const at::Tensor& cells, const at::Tensor& masked, const at::Tensor& dropped, int64_t patch,
                 int64_t zoom);

}  // namespace mdx
