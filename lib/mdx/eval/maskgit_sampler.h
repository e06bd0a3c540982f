// MaskGIT's iterative decoding (Chang et al. 2022; google-research/maskgit's decode, and MAGE's
// gen_img_uncond.py) for the models of the token objectives (mage): start with every code
// unknown; at step s of T (default 12) sample a code at every unknown position from the model's
// (guided) logits, keep the known ones, and of the newly sampled ones put back
//   n(s) = max(1, min(unknown - 1, floor(L cos(pi/2 (s + 1) / T))))
// with the lowest confidence log p(code) + tau (1 - (s + 1) / T) Gumbel (tau: the choice temperature,
// 4.5); known codes have infinite confidence and are never put back. The last step's samples are
// the output, decoded through the checkpoint's tokenizer.
#pragma once
#include <torch/types.h>

#include <functional>
#include <vector>

namespace CLI {
class App;
}

namespace mdx {

struct SamplerEntry;

// The codes left unknown after step `step` (0-based) of `steps` when `unknown` are unknown before it,
// of L codes in all.
int64_t maskgit_unknown_after(int64_t L, int64_t step, int64_t steps, int64_t unknown);

// The model as MaskGIT calls it: codes int64 [B, L] and the unknown map bool [B, L] -> logits float32
// [B, L, K] on the CPU (guided where asked).
using CodeLogits = std::function<at::Tensor(const at::Tensor& codes, const at::Tensor& unknown)>;

// Observes each step: the step, the codes sampled (known ones kept), and the map of those left
// unknown for the next step.
using MaskGitTrace = std::function<void(int64_t step, const at::Tensor& sampled, const at::Tensor& unknown)>;

// Decodes B rows of L codes in `steps` steps; row i draws its samples and Gumbel noise from gens[i].
at::Tensor maskgit_decode(const CodeLogits& logits, int64_t L, int64_t steps, double choice_temperature,
                          std::vector<at::Generator>& gens, const MaskGitTrace& trace = {});

struct MaskGitOptions {
  double choice_temperature = 4.5;  // tau

  void add_to(CLI::App& app);
  void validate() const;
};

SamplerEntry maskgit_sampler();

}  // namespace mdx
