// mdx-sample as a library function: checkpoint -> HDF5 image table (+ PNG grid), by the sampler
// of the checkpoint's objective (sampler.h: DDIM or DDPM on a respaced schedule for the diffusion
// objectives, MaskGIT's decoding for mage), with classifier-free guidance (SPEC "UMD": DDIM eta = 1, 125 steps, EMA weights,
// u + s (c - u)), decoded through the checkpoint's tokenizer.
#pragma once
#include <string>
#include <vector>

#include "mdx/eval/diffusion_sampler.h"
#include "mdx/eval/maskgit_sampler.h"
#include "mdx/eval/weights.h"
#include "mdx/util/provenance.h"

namespace CLI {
class App;
}

namespace mdx {

struct SampleOptions {
  std::string checkpoint;
  std::string output, grid;
  std::string sampler = "auto";      // auto: the first sampler of the checkpoint objective's family
  int64_t steps = -1;                // -1: the sampler's (125 for diffusion, 12 for maskgit)
  double cfg = 1.0;                  // guidance scale s; 1 = plain conditional sampling
  std::vector<int64_t> classes;      // empty: all
  int64_t per_class = 10;
  int64_t count = 0;                 // unconditional models: how many
  Weights weights = Weights::Ema;    // as DiT and UMD's generation run sample
  DiffusionOptions diffusion;        // the diffusion samplers' own (--eta, --predict, --no-clip)
  MaskGitOptions maskgit;            // MaskGIT's (--choice-temperature)
  int64_t batch = 64;
  int64_t grid_columns = 10;
  std::string shard = "0/1";

  void add_to(CLI::App& app);
  void validate() const;
};

void sample(const SampleOptions& opt, Provenance& prov);

}  // namespace mdx
