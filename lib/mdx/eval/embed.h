// mdx-embed as a library function: checkpoint + image table(s) -> HDF5 embeddings (SPEC "Files":
// `embeddings` float32 [N,F], `labels` int64 [N] when the table has them, provenance).
#pragma once
#include <string>
#include <vector>

#include "mdx/eval/weights.h"
#include "mdx/util/provenance.h"

namespace CLI {
class App;
}

namespace mdx {

struct EmbedOptions {
  std::string checkpoint;
  std::vector<std::string> tables;
  std::string output;
  std::string pool = "cls";   // cls | mean | cls+mean
  int64_t blocks = 1;         // pool each of the last N encoder blocks, concatenated (DINO's n_last_blocks)
  int64_t t = -1;             // -1: clean input at time index 0; else noised at t (l-DAE probes at small t)
  Weights weights = Weights::Raw;  // as UMD and MAE probe
  std::string tokenizer;      // l-DAE's PCA file when noising (default: the checkpoint's)
  int64_t batch = 256;
  std::string shard = "0/1";

  void add_to(CLI::App& app);
  void validate() const;
};

void embed(const EmbedOptions& opt, Provenance& prov);

}  // namespace mdx
