#include "mdx/tokenize/patches.h"

#include <fmt/format.h>
#include <torch/torch.h>

#include "mdx/util/error.h"

namespace mdx {

at::Tensor to_unit_range(const at::Tensor& images_u8, at::ScalarType type) {
  return images_u8.to(type).div(127.5).sub_(1.0);
}

at::Tensor to_uint8(const at::Tensor& x) {
  return x.to(at::kFloat).add(1.0).mul_(127.5).round_().clamp_(0, 255).to(at::kByte);
}

void check_patch(int64_t p, int64_t height, int64_t width) {
  if (p < 1 || height % p != 0 || width % p != 0)
    throw Error(fmt::format("patch size {} does not divide the image size {}x{}", p, height, width));
}

at::Tensor patchify(const at::Tensor& images, int64_t p) {
  const int64_t n = images.size(0), h = images.size(1), w = images.size(2), c = images.size(3);
  check_patch(p, h, w);
  return images.reshape({n, h / p, p, w / p, p, c}).permute({0, 1, 3, 2, 4, 5}).reshape({n, (h / p) * (w / p), p * p * c});
}

at::Tensor unpatchify(const at::Tensor& tokens, int64_t p, int64_t height, int64_t width, int64_t channels) {
  const int64_t n = tokens.size(0);
  check_patch(p, height, width);
  return tokens.reshape({n, height / p, width / p, p, p, channels})
      .permute({0, 1, 3, 2, 4, 5})
      .reshape({n, height, width, channels});
}

}  // namespace mdx
