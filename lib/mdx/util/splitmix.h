// SplitMix64's finaliser: a well-mixed 64-bit value from any counter or key. The per-sample seeds
// of mdx-sample and the per-image draws of the training augmentation both derive from it, so a
// sample or an augmented image depends only on its own key, not on batch, shard or rank.
#pragma once
#include <cstdint>

namespace mdx {

inline uint64_t splitmix64(uint64_t x) {
  x += 0x9e3779b97f4a7c15ULL;
  x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ULL;
  x = (x ^ (x >> 27)) * 0x94d049bb133111ebULL;
  return x ^ (x >> 31);
}

}  // namespace mdx
