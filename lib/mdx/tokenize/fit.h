// mdx-vae-fit and mdx-vq-fit as library functions: image table(s) -> a learned tokenizer, fitted
// on the training frame (train/frame.h) that mdx-train runs on. The output is a checkpoint whose
// `tokenizer/` group is the tokenizer: every --tokenizer accepts it, and --resume continues it.
#pragma once
#include <optional>
#include <string>
#include <vector>

#include "mdx/tokenize/learned.h"
#include "mdx/train/frame.h"
#include "mdx/util/provenance.h"

namespace CLI {
class App;
}

namespace mdx {

// Options both fits share: the coder's architecture, the frame's options and a table to report
// the reconstruction on.
struct CoderFitOptions {
  CoderConfig coder;
  int64_t patch = 0;           // --patch: the patch form's patch (its stride)
  std::string eval;            // a table (a test split) whose reconstruction is reported at the end
  int64_t eval_rows = 10000;   // ... at most these rows of it
  OptimOptions optim;
  RunOptions run;
  AugmentOptions augment;

  CoderFitOptions();
  void add_to(CLI::App& app);
  void validate();
};

struct VaeFitOptions : CoderFitOptions {
  double beta = 1e-3;  // weight of the KL term (per image value); 0: a plain auto-encoder
  void add_to(CLI::App& app);
};

struct VqFitOptions : CoderFitOptions {
  int64_t codes = 512;          // the codebook size K
  double commitment = 0.25;     // beta of the commitment loss
  double decay = 0.99;          // EMA decay of the codebook
  int64_t restart_every = 100;  // steps between dead-code restarts (0: never)
  int64_t kmeans_iterations = 10;
  void add_to(CLI::App& app);
};

// What a tokenizer makes of a table: reconstruction error on the [-1, 1] scale, PSNR (peak 2),
// and for codes the share of the codebook used and the perplexity.
struct ReconstructionReport {
  int64_t rows = 0;
  double mse = 0, psnr = 0;
  std::optional<double> usage, perplexity;
  std::string to_json() const;
};
ReconstructionReport reconstruction_report(const Tokenizer& tok, const ImageTable& table, int64_t max_rows);

// The fits' precision: `asked` (--precision) as given, but `auto` is bf16 on CUDA only. On CPUs
// LibTorch 1.13 runs bf16 convolutions slower than float32 (1.5x at one and two threads on a
// 2-core Xeon with AVX512-BF16, no AMX), so the fits keep float32 there unless asked for bf16.
void fit_precision(const std::string& asked, Provenance& prov);

// Validate (and complete) the options, fit, and report --eval's reconstruction on stdout.
std::optional<TrainBenchmark> vae_fit(VaeFitOptions& opt, Provenance& prov);
std::optional<TrainBenchmark> vq_fit(VqFitOptions& opt, Provenance& prov);

}  // namespace mdx
