// Text in grids: a built-in 5x9 bitmap font of printable ASCII, scaled by whole pixels, so that
// strips and sample grids carry their column and row labels without a font library.
#pragma once
#include "mdx/io/grid.h"

#include <cstdint>
#include <string>
#include <vector>

namespace mdx {

constexpr int64_t kGlyphColumns = 5, kGlyphRows = 9, kGlyphAdvance = 6, kLineHeight = 11;

// Pixels `text` spans at `scale` (no trailing gap).
int64_t text_width(const std::string& text, int64_t scale);
// Draws `text` with its top-left corner at (x, y); what falls outside the grid is clipped.
void draw_text(Grid& g, int64_t x, int64_t y, const std::string& text, int64_t scale, const uint8_t rgb[3]);
// `text` broken at spaces into lines at most `width` pixels wide (longer words are cut).
std::vector<std::string> wrap_text(const std::string& text, int64_t width, int64_t scale);

}  // namespace mdx
