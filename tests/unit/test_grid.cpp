// Grids: the built-in font, label wrapping, and labelled layouts whose cells stay where the
// recorded layout says.
#include <doctest/doctest.h>
#include <torch/torch.h>

#include <string>
#include <vector>

#include "mdx/io/font.h"
#include "mdx/io/grid.h"

using namespace mdx;

namespace {
bool ink(const Grid& g, int64_t y, int64_t x) { return g.pixels[static_cast<size_t>((y * g.width + x) * 3)] < 128; }
}  // namespace

TEST_CASE("draw_text draws the glyph's pixels, scaled, and clips at the border") {
  // 'A' of the font, written out here as it must look.
  const std::vector<std::string> a = {".###.", "#...#", "#...#", "#####", "#...#", "#...#", "#...#", ".....", "....."};
  for (int64_t scale : {1, 2}) {
    Grid g;
    g.height = 9 * scale + 4, g.width = 5 * scale + 4;
    g.pixels.assign(static_cast<size_t>(g.height * g.width * 3), 255);
    const uint8_t black[3] = {0, 0, 0};
    draw_text(g, 2, 2, "A", scale, black);
    int64_t wrong = 0;
    for (int64_t y = 0; y < g.height; ++y)
      for (int64_t x = 0; x < g.width; ++x) {
        const int64_t gy = (y - 2) / scale, gx = (x - 2) / scale;
        const bool inside = y >= 2 && x >= 2 && gy < 9 && gx < 5;
        wrong += ink(g, y, x) != (inside && a[static_cast<size_t>(gy)][static_cast<size_t>(gx)] == '#');
      }
    CHECK(wrong == 0);
    draw_text(g, -3, g.height - 2, "WW", scale, black);  // partly outside: no fault
  }
  CHECK(text_width("abc", 1) == 17);
  CHECK(text_width("abc", 2) == 34);
  CHECK(text_width("", 3) == 0);
}

TEST_CASE("wrap_text breaks at spaces within the width and cuts longer words") {
  CHECK(wrap_text("t=250 mask 0.750", 84, 1) == std::vector<std::string>{"t=250 mask", "0.750"});
  CHECK(wrap_text("x0", 84, 1) == std::vector<std::string>{"x0"});
  CHECK(wrap_text("lmd-cosine at 0.20: mask 0.309", 84, 1) ==
        std::vector<std::string>{"lmd-cosine at", "0.20: mask", "0.309"});
  CHECK(wrap_text("abcdefgh", 30, 1) == std::vector<std::string>{"abcde", "fgh"});
  CHECK(wrap_text("  ", 30, 1).empty());
  for (const auto& line : wrap_text("Ankle boot and a long T-shirt/top row", 60, 2)) CHECK(text_width(line, 2) <= 60);
}

TEST_CASE("render_grid: labels add bands, the cells stay as given at the recorded layout") {
  const int64_t R = 2, K = 3, H = 4, W = 4;
  at::Tensor cells = at::randint(0, 256, {R, K, H, W, 1}, at::TensorOptions().dtype(at::kByte));
  Grid bare = render_grid(cells, at::Tensor(), at::Tensor(), 2, 3);
  CHECK(bare.height == R * 12 + (R + 1) * 2);
  CHECK(bare.width == K * 12 + (K + 1) * 2);
  CHECK(bare.top == 2);
  CHECK(bare.left == 2);
  Grid g = render_grid(cells, at::Tensor(), at::Tensor(), 2, 3, {{"t=1", "t=2", "a b c d e f"}, {"Coat", "Bag"}});
  CHECK(g.top > bare.top);
  CHECK(g.left >= 2 + text_width("Coat", 1));
  CHECK(g.height == g.top + R * g.pitch_y);
  CHECK(g.width == g.left + K * g.pitch_x);
  auto px = cells.accessor<uint8_t, 5>();
  int64_t wrong = 0;
  for (int64_t r = 0; r < R; ++r)
    for (int64_t k = 0; k < K; ++k)
      for (int64_t y = 0; y < 12; ++y)
        for (int64_t x = 0; x < 12; ++x) {
          const size_t at = static_cast<size_t>(((g.top + r * g.pitch_y + y) * g.width + g.left + k * g.pitch_x + x) * 3);
          wrong += g.pixels[at] != px[r][k][y / 3][x / 3][0];
        }
  CHECK(wrong == 0);
  // Ink above every column and beside every row.
  for (int64_t k = 0; k < K; ++k) {
    bool any = false;
    for (int64_t y = 0; y < g.top - 2; ++y)
      for (int64_t x = g.left + k * g.pitch_x; x < g.left + k * g.pitch_x + 12; ++x) any = any || ink(g, y, x);
    CHECK(any);
  }
  for (int64_t r = 0; r < R; ++r) {
    bool any = false;
    for (int64_t y = g.top + r * g.pitch_y; y < g.top + r * g.pitch_y + 12; ++y)
      for (int64_t x = 0; x < g.left - 2; ++x) any = any || ink(g, y, x);
    CHECK(any);
  }
  const auto layout = grid_layout_text(g);
  REQUIRE(layout.size() == 1);
  CHECK(layout[0].first == "mdx_cells");
  CHECK(layout[0].second == "2 x 3 cells of 12 x 12 px, first at (" + std::to_string(g.left) + ", " +
                                std::to_string(g.top) + "), pitch (14, 14)");
}
