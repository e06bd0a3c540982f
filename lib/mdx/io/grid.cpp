#include "mdx/io/grid.h"

#include <torch/torch.h>

#include <fmt/format.h>

#include <algorithm>

#include "mdx/io/font.h"

namespace mdx {

namespace {
const uint8_t kDropped[3] = {40, 100, 220};
const uint8_t kMaskToken[3] = {235, 140, 20};
const uint8_t kInk[3] = {30, 30, 30};
}  // namespace

Grid render_grid(const at::Tensor& cells_in, const at::Tensor& masked_in, const at::Tensor& dropped_in, int64_t patch,
                 int64_t zoom, const GridLabels& labels) {
  at::Tensor cells = cells_in.contiguous();
  const int64_t R = cells.size(0), K = cells.size(1), H = cells.size(2), W = cells.size(3), C = cells.size(4);
  const int64_t L = (H / patch) * (W / patch);
  at::Tensor masked = masked_in.defined() ? masked_in.contiguous() : at::zeros({R, K, L}, at::kBool);
  at::Tensor dropped = dropped_in.defined() ? dropped_in.contiguous() : masked;
  if (zoom <= 0) zoom = std::max<int64_t>(1, (64 + std::min(H, W) - 1) / std::min(H, W));
  const int64_t gap = 2, ch = H * zoom, cw = W * zoom;
  // Text at one font pixel per screen pixel up to 128-pixel cells, then larger with the cells.
  const int64_t scale = std::max<int64_t>(1, std::min(ch, cw) / 128), line = kLineHeight * scale;

  std::vector<std::vector<std::string>> col_lines, row_lines;
  int64_t header = 0, margin = 0;
  for (int64_t k = 0; k < K && !labels.columns.empty(); ++k) {
    col_lines.push_back(k < static_cast<int64_t>(labels.columns.size()) ? wrap_text(labels.columns[k], cw, scale)
                                                                        : std::vector<std::string>{});
    header = std::max(header, static_cast<int64_t>(col_lines.back().size()) * line);
  }
  for (int64_t r = 0; r < R && !labels.rows.empty(); ++r) {
    row_lines.push_back(r < static_cast<int64_t>(labels.rows.size()) ? wrap_text(labels.rows[r], 3 * cw, scale)
                                                                     : std::vector<std::string>{});
    for (const auto& s : row_lines.back()) margin = std::max(margin, text_width(s, scale));
  }
  if (header > 0) header += 2 * gap;
  if (margin > 0) margin += 3 * gap;

  Grid g;
  g.top = header + gap, g.left = margin + gap, g.cell_h = ch, g.cell_w = cw, g.pitch_y = ch + gap,
  g.pitch_x = cw + gap;
  g.height = header + R * ch + (R + 1) * gap;
  g.width = margin + K * cw + (K + 1) * gap;
  g.pixels.assign(static_cast<size_t>(g.height * g.width * 3), 255);
  auto px = cells.accessor<uint8_t, 5>();
  auto ma = masked.accessor<bool, 3>();
  auto da = dropped.accessor<bool, 3>();
  const int64_t gw = W / patch;
  for (int64_t r = 0; r < R; ++r)
    for (int64_t k = 0; k < K; ++k)
      for (int64_t y = 0; y < ch; ++y)
        for (int64_t x = 0; x < cw; ++x) {
          const int64_t iy = y / zoom, ix = x / zoom, tok = (iy / patch) * gw + ix / patch;
          uint8_t* dst =
              &g.pixels[static_cast<size_t>(((g.top + r * g.pitch_y + y) * g.width + g.left + k * g.pitch_x + x) * 3)];
          if (ma[r][k][tok]) {
            const uint8_t* colour = da[r][k][tok] ? kDropped : kMaskToken;
            std::copy(colour, colour + 3, dst);
          } else {
            for (int c = 0; c < 3; ++c) dst[c] = px[r][k][iy][ix][C == 1 ? 0 : c];
          }
        }
  // Column labels centred over their cells, their last line just above them; row labels right-
  // aligned beside their cells, centred in height.
  for (int64_t k = 0; k < static_cast<int64_t>(col_lines.size()); ++k) {
    const auto& lines = col_lines[k];
    const int64_t n = static_cast<int64_t>(lines.size());
    for (int64_t i = 0; i < n; ++i) {
      const int64_t x = g.left + k * g.pitch_x + (cw - text_width(lines[i], scale)) / 2;
      draw_text(g, x, g.top - gap - (n - i) * line, lines[i], scale, kInk);
    }
  }
  for (int64_t r = 0; r < static_cast<int64_t>(row_lines.size()); ++r) {
    const auto& lines = row_lines[r];
    const int64_t n = static_cast<int64_t>(lines.size());
    const int64_t y0 = g.top + r * g.pitch_y + (ch - n * line) / 2;
    for (int64_t i = 0; i < n; ++i)
      draw_text(g, g.left - 2 * gap - text_width(lines[i], scale), y0 + i * line, lines[i], scale, kInk);
  }
  return g;
}

std::vector<std::pair<std::string, std::string>> grid_layout_text(const Grid& g) {
  const int64_t rows = (g.height - g.top) / g.pitch_y, columns = (g.width - g.left) / g.pitch_x;
  return {{"mdx_cells", fmt::format("{} x {} cells of {} x {} px, first at ({}, {}), pitch ({}, {})", rows, columns,
                                    g.cell_h, g.cell_w, g.left, g.top, g.pitch_x, g.pitch_y)}};
}

}  // namespace mdx
