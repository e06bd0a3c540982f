// Every difference between the LibTorch versions mdx builds against (Debian's 1.13 on CPU, 2.x
// with CUDA on GPU nodes) is confined to this header.
#pragma once
#include <ATen/CPUGeneratorImpl.h>
#include <torch/types.h>
#include <torch/version.h>

#define MDX_TORCH_AT_LEAST(major, minor) \
  (TORCH_VERSION_MAJOR > (major) || (TORCH_VERSION_MAJOR == (major) && TORCH_VERSION_MINOR >= (minor)))

namespace mdx::compat {

// A CPU generator with a fixed seed: every random draw of a run comes from generators like this,
// so the same seed gives the same output.
inline at::Generator cpu_generator(uint64_t seed) { return at::make_generator<at::CPUGeneratorImpl>(seed); }

}  // namespace mdx::compat
