// A PNG-ready grid of images: a row per image, a column per variant, masked patches painted
// (blue: dropped from the encoder; orange: given to the encoder as the mask token, MAGE), with
// optional labels drawn above the columns and left of the rows.
#pragma once
#include <torch/types.h>

#include <cstdint>
#include <string>
#include <utility>
#include <vector>

namespace mdx {

struct Grid {
  int64_t height = 0, width = 0;  // pixels; 3 channels (RGB)
  std::vector<uint8_t> pixels;
  // Where the cells lie: cell (r, k) spans [top + r * pitch_y, + cell_h) x [left + k * pitch_x, + cell_w).
  int64_t top = 0, left = 0, cell_h = 0, cell_w = 0, pitch_y = 0, pitch_x = 0;
};

// Text drawn in the image: one per column (above it) and one per row (left of it); either may be
// empty (no band). Labels are wrapped at spaces to the cell's width (the rows' to three cells).
struct GridLabels {
  std::vector<std::string> columns, rows;
};

// cells uint8 [R, K, H, W, C]; masked / dropped bool [R, K, L] or undefined (no marks).
// zoom 0: cells of at least 64 pixels.
Grid render_grid(const at::Tensor& cells, const at::Tensor& masked, const at::Tensor& dropped, int64_t patch,
                 int64_t zoom, const GridLabels& labels = {});

// The cell layout as a PNG text chunk (mdx_cells: "R x K cells of H x W px, first at (x, y), pitch
// (px, py)"), so that scripts can cut the cells out of a labelled grid.
std::vector<std::pair<std::string, std::string>> grid_layout_text(const Grid& g);

}  // namespace mdx
