// The training frame every fitting tool runs on (mdx-train, mdx-vae-fit, mdx-vq-fit): batches of
// (seed, step), on-the-fly augmentation, AdamW with warmup + cosine, EMA, gradient clipping,
// progress, a metrics JSON-lines log, a reconstruction preview, atomic checkpoints, SIGINT/SIGTERM
// -> checkpoint + exit 75, --resume, --init, data-parallel c10d and --benchmark.
//
// What is trained is a Learner: it builds its model once the table is open, turns a batch of
// images into a loss, draws its preview and names its configuration. The frame owns everything
// else, so a tokenizer is fitted exactly as a masked-diffusion auto-encoder is trained.
#pragma once
#include <torch/torch.h>

#include <map>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "mdx/corrupt/augment.h"
#include "mdx/corrupt/objective.h"
#include "mdx/io/grid.h"
#include "mdx/io/image_table.h"
#include "mdx/train/checkpoint.h"
#include "mdx/util/provenance.h"

namespace CLI {
class App;
}

namespace mdx {

class Communicator;

struct OptimOptions {
  int64_t batch = 256;
  double lr = 0;          // 0: blr * batch / 256
  double blr = 1.5e-4;
  double weight_decay = 0.05, beta1 = 0.9, beta2 = 0.95, clip = 1.0;
  double warmup = 0.05;   // share of the steps
  double ema = -1;        // -1: the learner's default (Learner::default_ema); 0: none
  std::string ema_help =  // what -1 means, for --help
      "-1: the objective's (umd: 1 - 1e-4 batch/256 with --class-cond, else none; mae, mage: none; dit, ldae: 0.9999)";

  void add_to(CLI::App& app);
  void validate() const;
  double base_lr() const { return lr > 0 ? lr : blr * static_cast<double>(batch) / 256.0; }
};

struct RunOptions {
  std::vector<std::string> inputs;
  std::string output;
  int64_t epochs = 0, steps = 0;  // one of them
  int64_t save_every = 1000, log_every = 10, preview_every = 500;
  int64_t keep_every = 0;         // > 0: also keep the checkpoint of every such step as <stem>.step<N>.h5
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

// What --benchmark measures: throughput, FLOP rate, MFU and peak memory of timed steps.
struct TrainBenchmark {
  std::string tool = "mdx-train", commit, libtorch, device, precision, objective, model;
  int64_t parameters = 0, batch = 0, steps = 0, threads = 0;
  double seconds = 0, images_per_s = 0, encoder_tokens_per_s = 0, tflops = 0, peak_memory_mib = 0;
  double step_gflop = 0;  // model FLOPs of a mean step (forward + backward), the measure of equal compute
  std::optional<double> mfu;  // when the device's peak is known (or --peak-tflops)

  std::string to_json() const;  // one line, what --benchmark prints
};

// The work of one step, for --benchmark (forward + backward).
struct StepWork {
  int64_t encoder_tokens = 0;
  double flops = 0;
};

// One step's rows as the frame reads them.
struct BatchRows {
  at::Tensor images;        // uint8 [B,H,W,C] as augmented; undefined when latents are read
  at::Tensor labels;        // int64 [B], -1 without labels
  at::Tensor mean, logvar;  // the table's pre-extracted posterior [B,L,D], when the learner reads latents
  at::Tensor codes;         // ... or its pre-extracted VQ codes int64 [B,L]
};

// What the frame needs of the thing it trains.
class Learner {
 public:
  virtual ~Learner() = default;

  // For logs and --benchmark: "umd", "vae"; the model's preset or form.
  virtual std::string name() const = 0;
  virtual std::string model_name() const = 0;
  // Files it reads besides the tables and --init (checked before any work): (path, what).
  virtual std::vector<std::pair<std::string, std::string>> reads() const { return {}; }
  // Builds the model on `device`, once the table is open. `start` is the checkpoint a --resume
  // (or, with `fine_tune`, an --init) run starts from, null otherwise: the learner keeps its
  // architecture.
  virtual void build(const ImageTable& table, int64_t num_classes, const CheckpointState* start, bool fine_tune,
                     at::Device device, Provenance& prov) = 0;
  virtual torch::nn::Module& module() = 0;
  // One line after build: what is trained, on what (the frame adds steps, lr, EMA, device).
  virtual std::string describe() const = 0;
  // Whether it reads the table's pre-extracted latents (mdx-tokenize --tokenizer) instead of its
  // images; asked once, before the batches are loaded.
  virtual bool reads_latents(const ImageTable& /*table*/) { return false; }
  // When it reads the table's VQ codes: the size of their codebook (the ids they may hold).
  virtual int64_t code_vocabulary() const { return 0; }
  virtual double default_ema(int64_t /*batch*/) const { return 0; }
  virtual Augment default_augment() const { return {}; }
  // The loss of rows `rows` of a batch; `gen` is the run's generator, drawn from in the same order
  // on every process. `work`, when given, receives the step's work.
  virtual Loss loss(const BatchRows& batch, int64_t step, int64_t total, at::Generator& gen, RowRange rows,
                    bool bf16, StepWork* work) = 0;
  // After the optimizer step (a VQ codebook's EMA update); `comm` sums over processes, null alone.
  virtual void after_step(Communicator* /*comm*/) {}
  // Values of the last step for the metrics log, beside the loss terms (a codebook's perplexity).
  virtual std::vector<std::pair<std::string, double>> metrics() const { return {}; }
  // The preview of the run's first 8 images at `step`, and what its columns show.
  virtual Grid preview(const at::Tensor& images, const at::Tensor& labels, int64_t step, int64_t total,
                       std::string& columns) = 0;
  // Its configuration, recorded in the checkpoint and compared on --resume and across ranks. It
  // should hold height, width and channels.
  virtual std::map<std::string, std::string> config() const = 0;
  // Its share of a checkpoint: the tokenizer groups and config entries not compared on --resume.
  virtual void save_into(CheckpointState& /*s*/) const {}
};

// Runs the training of `learner`; on SIGINT/SIGTERM writes a checkpoint and throws Suspended
// (exit 75). With --benchmark it writes nothing and returns the measurement.
std::optional<TrainBenchmark> run_training(Learner& learner, const RunOptions& run, const OptimOptions& optim,
                                           const AugmentOptions& augment, Provenance& prov);

}  // namespace mdx
