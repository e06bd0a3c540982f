// Checkpoints in HDF5 (SPEC "Files"): the weights by parameter path (`model/`), the EMA weights
// (`ema/`), AdamW's moments (`optimizer/`), the step, the random-generator state, and the whole
// configuration as attributes of `config/` and the tokenizers (so that later tools rebuild the
// model from the file alone), plus provenance. Written to a temporary name and renamed.
#pragma once
#include <torch/torch.h>

#include <map>
#include <memory>
#include <string>
#include <vector>

#include "mdx/util/provenance.h"

namespace mdx {

class Tokenizer;

struct CheckpointState {
  std::map<std::string, at::Tensor> model;      // parameters and buffers
  std::map<std::string, at::Tensor> ema;        // parameters
  std::map<std::string, at::Tensor> exp_avg, exp_avg_sq;
  std::map<std::string, int64_t> adam_steps;
  int64_t step = 0;
  at::Tensor rng;                               // uint8 generator state
  std::map<std::string, std::string> config;    // model + objective + optimizer + data, flat
  std::vector<std::string> history;             // the file's pipeline (read only)
  // The model's token space (`tokenizer/`) and the latent its objective noises in
  // (`latent_tokenizer/`, l-DAE's PCA), copied in whole so that the checkpoint needs no other
  // file. Null in checkpoints written before tokenizers were carried.
  std::shared_ptr<const Tokenizer> tokenizer, latent;
};

void save_checkpoint(const std::string& path, const CheckpointState& state, const Provenance& prov,
                     const std::vector<std::string>& inputs = {});
// Reads everything; `weights_only` skips the optimizer and generator state.
CheckpointState load_checkpoint(const std::string& path, bool weights_only = false);

// Copies `weights` (a checkpoint's `model` or `ema` map) into the module's parameters (and the
// buffers it holds) of the same name. Strict: a parameter missing from `weights` or of another
// shape is an error naming `path`. Not strict (fine-tuning from another configuration): such parameters keep their initial values
// and their names are returned.
std::vector<std::string> copy_weights(torch::nn::Module& module, const std::map<std::string, at::Tensor>& weights,
                                      const std::string& path, bool strict);

}  // namespace mdx
