// mdx-train as a library function: image table(s) (+ tokenizer) -> checkpoint, a masked-diffusion
// auto-encoder trained on the training frame (frame.h). One options struct per component; each
// registers its own options and validates itself.
#pragma once
#include <optional>
#include <string>
#include <vector>

#include "mdx/corrupt/objective.h"
#include "mdx/model/config.h"
#include "mdx/train/frame.h"
#include "mdx/util/provenance.h"

namespace CLI {
class App;
}

namespace mdx {

// Class conditioning (DiT's label table with a null class for classifier-free guidance).
struct LabelOptions {
  bool class_cond = false;             // condition on the labels (null class for guidance)
  double class_dropout = 0.1;          // labels replaced by the null class with this probability

  void add_to(CLI::App& app);
  void validate() const;
};

struct TrainOptions {
  ObjectiveOptions objective;
  LabelOptions labels;
  ModelConfig model;
  OptimOptions optim;
  RunOptions run;
  AugmentOptions augment;
  std::string posterior = "auto";  // a VAE's tokens: auto | mean | sample (a draw per step)
  void add_to(CLI::App& app);
};

// Runs the training; on SIGINT/SIGTERM writes a checkpoint and throws Suspended (exit 75). With
// --benchmark it writes nothing and returns the measurement.
std::optional<TrainBenchmark> train(const TrainOptions& opt, Provenance& prov);

}  // namespace mdx
