// A trained model rebuilt from its checkpoint alone (the architecture, the objective and its noise
// schedule are in the checkpoint's `config`), and the representation its encoder gives an image:
// what mdx-embed writes, what mdx-fid --encoder compares, what mdx-sample runs the decoder of.
#pragma once
#include <torch/types.h>

#include <map>
#include <memory>
#include <string>
#include <vector>

#include "mdx/corrupt/objective.h"
#include "mdx/eval/weights.h"
#include "mdx/model/autoencoder.h"

namespace mdx {

struct TrainedModel {
  std::string path;
  ModelConfig config;
  std::shared_ptr<Objective> objective;         // the objective it was trained under (last stage),
                                                // bound to the checkpoint's tokenizers
  std::map<std::string, std::string> settings;  // the checkpoint's whole configuration
  std::vector<std::string> history;             // the checkpoint's pipeline
  int64_t step = 0;
  bool ema = true;                              // EMA weights loaded (else the raw ones)
  bool bf16 = false;                            // its forward passes under bf16 autocast
  MaskedDiffusionAutoencoder model{nullptr};

  // The setting, or `fallback` when the checkpoint lacks it.
  std::string setting(const std::string& key, const std::string& fallback = "") const;
};

// Loads the `weights` (the raw ones when the EMA is asked for and the file has none, saying so) onto `device`, in
// eval mode, with the tokenizers the checkpoint carries (a checkpoint written before tokenizers
// were carried: pixel patches of its patch size, and the latent from `latent_file`, default the
// path its configuration recorded, when that file is still there). Throws Error when `path` is not
// an mdx checkpoint or lacks a weight.
TrainedModel load_trained_model(const std::string& path, Weights weights, const at::Device& device,
                                const std::string& latent_file = "");

// How the encoder's outputs become one vector per image.
//   cls       the mean of the CLS outputs (UMD's representation)
//   mean      the mean of the patch-token outputs (MAE's global pool)
//   cls+mean  both, concatenated
enum class Pool { Cls, Mean, ClsMean };
Pool parse_pool(const std::string& name);  // throws UsageError
std::string pool_name(Pool pool);

// The encoder of a trained model as a feature extractor: uint8 images [B,H,W,C] -> float32 [B,F]
// on the CPU. The input is clean and unmasked (time index 0) unless `t` >= 0: then it is noised at
// t by the checkpoint's own objective (l-DAE: in its PCA latent), with noise drawn from a
// generator seeded with `seed`. `blocks` > 1 pools each of the encoder's last `blocks` blocks
// (each through the final norm, as DINO's linear evaluation takes its n_last_blocks) and
// concatenates them, the shallowest first: blocks x the pool's width features.
class FeatureEncoder {
 public:
  FeatureEncoder(TrainedModel& model, Pool pool, int64_t t = -1, uint64_t seed = 0, int64_t blocks = 1);
  ~FeatureEncoder();
  int64_t dim() const;
  at::Tensor operator()(const at::Tensor& images);

 private:
  TrainedModel& m_;
  Pool pool_;
  int64_t t_, blocks_;
  at::Generator gen_;
};

}  // namespace mdx
