#include "mdx/io/grid.h"

#include <torch/torch.h>

#include <algorithm>

namespace mdx {

namespace {
const uint8_t kDropped[3] = {40, 100, 220};
const uint8_t kMaskToken[3] = {235, 140, 20};
}  // namespace

Grid render_grid(const at::Tensor& cells_in, const at::Tensor& masked_in, const at::Tensor& dropped_in, int64_t patch,
                 int64_t zoom) {
  at::Tensor cells = cells_in.contiguous();
  const int64_t R = cells.size(0), K = cells.size(1), H = cells.size(2), W = cells.size(3), C = cells.size(4);
  const int64_t L = (H / patch) * (W / patch);
  at::Tensor masked = masked_in.defined() ? masked_in.contiguous() : at::zeros({R, K, L}, at::kBool);
  at::Tensor dropped = dropped_in.defined() ? dropped_in.contiguous() : masked;
  if (zoom <= 0) zoom = std::max<int64_t>(1, (64 + std::min(H, W) - 1) / std::min(H, W));
  const int64_t gap = 2, ch = H * zoom, cw = W * zoom;
  Grid g;
  g.height = R * ch + (R + 1) * gap;
  g.width = K * cw + (K + 1) * gap;
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
              &g.pixels[static_cast<size_t>(((gap + r * (ch + gap) + y) * g.width + gap + k * (cw + gap) + x) * 3)];
          if (ma[r][k][tok]) {
            const uint8_t* colour = da[r][k][tok] ? kDropped : kMaskToken;
            std::copy(colour, colour + 3, dst);
          } else {
            for (int c = 0; c < 3; ++c) dst[c] = px[r][k][iy][ix][C == 1 ? 0 : c];
          }
        }
  return g;
}

}  // namespace mdx
