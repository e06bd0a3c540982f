// mdx-train as a library function: image table(s) (+ tokenizer) -> checkpoint. One options
// struct per component; each registers its own options and validates itself.
#pragma once
#include <optional>
#include <string>
#include <vector>

#include "mdx/corrupt/objective.h"
#include "mdx/model/config.h"
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

struct OptimOptions {
  int64_t batch = 256;
  double lr = 0;          // 0: blr * batch / 256
  double blr = 1.5e-4;
  double weight_decay = 0.05, beta1 = 0.9, beta2 = 0.95, clip = 1.0;
  double warmup = 0.05;   // share of the steps
  double ema = -1;        // -1: the objective's default (Objective::default_ema); 0: none

  void add_to(CLI::App& app);
  void validate() const;
  double base_lr() const { return lr > 0 ? lr : blr * static_cast<double>(batch) / 256.0; }
};

struct RunOptions {
  std::vector<std::string> inputs;
  std::string output;
  int64_t epochs = 0, steps = 0;  // one of them
  int64_t save_every = 1000, log_every = 10, preview_every = 500;
  bool resume = false;
  std::string init;               // fine-tune from this checkpoint's weights
  bool init_ema = false;          // ... its EMA weights
  int64_t benchmark = 0;          // > 0: time this many steps, print JSON, write nothing
  double peak_tflops = 0;         // for MFU; 0: the device's known peak (or none)
  double dist_timeout = 300;      // seconds a collective waits for the other processes
  double memory_budget = 16;      // GiB: a larger table is streamed

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
  void add_to(CLI::App& app);
};

// What --benchmark measures: throughput, FLOP rate, MFU and peak memory of timed steps.
struct TrainBenchmark {
  std::string commit, libtorch, device, precision, objective, model;
  int64_t parameters = 0, batch = 0, steps = 0, threads = 0;
  double seconds = 0, images_per_s = 0, encoder_tokens_per_s = 0, tflops = 0, peak_memory_mib = 0;
  std::optional<double> mfu;  // when the device's peak is known (or --peak-tflops)

  std::string to_json() const;  // one line, what mdx-train --benchmark prints
};

// Runs the training; on SIGINT/SIGTERM writes a checkpoint and throws Suspended (exit 75). With
// --benchmark it writes nothing and returns the measurement.
std::optional<TrainBenchmark> train(const TrainOptions& opt, Provenance& prov);

}  // namespace mdx
