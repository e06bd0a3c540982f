// The shape of a token space over images of one size (torch-free, for configurations).
#pragma once
#include <cstdint>

namespace mdx {

// L = grid_h * grid_w tokens, row-major, each one cell of cell_h x cell_w pixels.
struct TokenGeometry {
  int64_t height = 0, width = 0, channels = 0;  // the images
  int64_t grid_h = 0, grid_w = 0;               // the tokens
  int64_t values = 0;                           // D, values per token (continuous spaces)
  int64_t vocabulary = 0;                       // discrete spaces: the number of codes (0: continuous)

  int64_t tokens() const { return grid_h * grid_w; }
  int64_t cell_h() const { return grid_h > 0 ? height / grid_h : 0; }
  int64_t cell_w() const { return grid_w > 0 ? width / grid_w : 0; }
  bool discrete() const { return vocabulary > 0; }
};

}  // namespace mdx
