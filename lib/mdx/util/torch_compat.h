// Every difference between the LibTorch versions mdx builds against (Debian's 1.13 on CPU, 2.x
// with CUDA on GPU nodes) is confined to this header.
#pragma once
#include <ATen/CPUGeneratorImpl.h>
#include <torch/types.h>
#include <torch/utils.h>
#include <torch/version.h>

#include <cmath>
#include <string>

#define MDX_TORCH_AT_LEAST(major, minor) \
  (TORCH_VERSION_MAJOR > (major) || (TORCH_VERSION_MAJOR == (major) && TORCH_VERSION_MINOR >= (minor)))

namespace mdx::compat {

// A CPU generator with a fixed seed: every random draw of a run comes from generators like this,
// so the same seed gives the same output.
inline at::Generator cpu_generator(uint64_t seed) { return at::make_generator<at::CPUGeneratorImpl>(seed); }
// Seeds the global generators (the CPU's and every CUDA device's), which dropout draws from.
inline void seed_global(uint64_t seed) { torch::manual_seed(seed); }

}  // namespace mdx::compat

namespace mdx::compat {

// Multi-head attention without a mask, q k v [B, heads, N, d], with dropout `p` on the attention
// weights (pass 0 outside training). LibTorch 2.x's fused kernels (flash / memory-efficient /
// math, picked per device and dtype) where they exist.
inline at::Tensor attention(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v, double p = 0.0) {
#if MDX_TORCH_AT_LEAST(2, 0)
  return at::scaled_dot_product_attention(q, k, v, {}, p);
#else
  at::Tensor scores = at::matmul(q, k.transpose(-2, -1)).mul_(1.0 / std::sqrt(static_cast<double>(q.size(-1))));
  at::Tensor weights = scores.softmax(-1);
  if (p > 0) weights = at::dropout(weights, p, true);
  return at::matmul(weights, v);
#endif
}

}  // namespace mdx::compat

#include <ATen/autocast_mode.h>
#ifdef MDX_WITH_CUDA
#include <ATen/cuda/CUDAContext.h>
#include <c10/cuda/CUDACachingAllocator.h>
#include <torch/cuda.h>
#endif

namespace mdx::compat {

// CUDA only: TF32 matmuls and convolutions (the float32 parts of a bf16-autocast step).
inline void enable_tf32() {
#ifdef MDX_WITH_CUDA
  at::globalContext().setAllowTF32CuBLAS(true);
  at::globalContext().setAllowTF32CuDNN(true);
#endif
}

// bf16 autocast for the lifetime of the guard, on the device the model runs on (CUDA's or the
// CPU's): matrix products in bf16, float32 master weights, optimizer state and losses outside the
// guard; nothing when off.
class Autocast {
 public:
  Autocast(const at::Device& device, bool on) : cuda_(device.is_cuda()), on_(on) {
    if (!on_) return;
    if (cuda_) {
#ifdef MDX_WITH_CUDA
#if MDX_TORCH_AT_LEAST(2, 4)
      at::autocast::set_autocast_enabled(at::kCUDA, true);
      at::autocast::set_autocast_dtype(at::kCUDA, at::kBFloat16);
#else
      at::autocast::set_enabled(true);
      at::autocast::set_autocast_gpu_dtype(at::kBFloat16);
#endif
#endif
      return;
    }
#if MDX_TORCH_AT_LEAST(2, 4)
    at::autocast::set_autocast_enabled(at::kCPU, true);
    at::autocast::set_autocast_dtype(at::kCPU, at::kBFloat16);
#else
    at::autocast::set_cpu_enabled(true);
    at::autocast::set_autocast_cpu_dtype(at::kBFloat16);
#endif
  }
  ~Autocast() {
    if (!on_) return;
    if (cuda_) {
#ifdef MDX_WITH_CUDA
#if MDX_TORCH_AT_LEAST(2, 4)
      at::autocast::set_autocast_enabled(at::kCUDA, false);
#else
      at::autocast::set_enabled(false);
#endif
#endif
    } else {
#if MDX_TORCH_AT_LEAST(2, 4)
      at::autocast::set_autocast_enabled(at::kCPU, false);
#else
      at::autocast::set_cpu_enabled(false);
#endif
    }
    at::autocast::clear_cache();
  }
  Autocast(const Autocast&) = delete;
  Autocast& operator=(const Autocast&) = delete;

 private:
  bool cuda_, on_;
};

inline void synchronize(const at::Device& device) {
#ifdef MDX_WITH_CUDA
  if (device.is_cuda()) torch::cuda::synchronize(device.has_index() ? device.index() : -1);
#else
  (void)device;
#endif
}

// Peak memory allocated on a CUDA device (MiB); 0 elsewhere.
inline double peak_memory_mib(const at::Device& device) {
#ifdef MDX_WITH_CUDA
  if (device.is_cuda()) {
    auto stats = c10::cuda::CUDACachingAllocator::getDeviceStats(device.has_index() ? device.index() : 0);
    return stats.allocated_bytes[0].peak / (1024.0 * 1024.0);
  }
#endif
  (void)device;
  return 0.0;
}

// Dense bf16 peak TFLOP/s of known GPUs (for MFU); 0 when unknown.
inline double peak_tflops(const at::Device& device) {
#ifdef MDX_WITH_CUDA
  if (device.is_cuda()) {
    std::string name = at::cuda::getDeviceProperties(device.has_index() ? device.index() : 0)->name;
    if (name.find("H100") != std::string::npos || name.find("H200") != std::string::npos) return 989.0;
    if (name.find("A100") != std::string::npos) return 312.0;
  }
#endif
  (void)device;
  return 0.0;
}

}  // namespace mdx::compat
