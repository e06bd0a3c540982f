// Images as tokens: pixels scaled to [-1, 1], cut into p x p x C patches (MAE's patchify order:
// row-major over patches, each patch row-major over (y, x, channel)), and back.
#pragma once
#include <torch/types.h>

namespace mdx {

// uint8 [...] -> x/127.5 - 1, in float32 (or `type`)
at::Tensor to_unit_range(const at::Tensor& images_u8, at::ScalarType type = at::kFloat);
at::Tensor to_uint8(const at::Tensor& x);               // clamp to [-1, 1], round back to uint8

// [N,H,W,C] -> [N, (H/p)(W/p), p*p*C]. H and W must be multiples of p.
at::Tensor patchify(const at::Tensor& images, int64_t p);
// [N, L, p*p*C] -> [N,H,W,C]
at::Tensor unpatchify(const at::Tensor& tokens, int64_t p, int64_t height, int64_t width, int64_t channels);

// Throws Error unless p divides height and width.
void check_patch(int64_t p, int64_t height, int64_t width);

}  // namespace mdx
