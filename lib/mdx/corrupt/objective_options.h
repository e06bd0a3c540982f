// The options that choose an objective's corruption, shared by mdx-corrupt and mdx-train.
#pragma once
#include <CLI/CLI.hpp>

#include <string>

#include "mdx/corrupt/objective.h"

namespace mdx {

struct CorruptionOptions {
  std::string objective = "umd";
  std::string schedule;              // empty: the objective's default
  int64_t timesteps = 1000;          // T
  std::string mask_policy = "fixed";
  double noisy_mask_ratio = 0.375;   // UMD's noisy step
  std::string tokenizer;             // PCA tokenizer (ldae)

  void add_to(CLI::App& app);
  // The objective's defaults with these choices; throws UsageError on an invalid combination.
  ObjectiveConfig resolve() const;
};

}  // namespace mdx
