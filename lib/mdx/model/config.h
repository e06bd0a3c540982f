// The architecture of a masked-diffusion auto-encoder: presets and explicit sizes. Stored whole in
// every checkpoint, so that later tools rebuild the model from the file alone.
#pragma once

#include <cstdint>
#include <map>
#include <string>

#include "mdx/tokenize/geometry.h"

namespace CLI {
class App;
}

namespace mdx {

struct ModelConfig {
  std::string preset = "tiny";  // tiny | s | b | l
  int64_t height = 0, width = 0, channels = 0;  // the images (from the table)
  int64_t patch = 4;                            // --patch: the pixel tokenizer's (a token's cell side)
  int64_t grid_h = 0, grid_w = 0, values = 0;   // the token space (from the tokenizer)
  int64_t vocabulary = 0;  // discrete token spaces (a VQ's codes, MAGE): the number of codes K; 0: continuous
  int64_t dim = 0, depth = 0, heads = 0;                          // encoder (0: the preset's)
  int64_t decoder_dim = 0, decoder_depth = 0, decoder_heads = 0;  // decoder (0: the preset's)
  double mlp_ratio = 4.0;
  int64_t cls_tokens = 4;   // UMD: the representation is the mean of these outputs
  // UMD's form (small-vision's ae.py) or DiT/MAE's: learned positions, N(0, 1/sqrt(hw)), one table
  // for the encoder and one for the decoder, or fixed 2-D sin-cos; one conditioning vector (time
  // + label) for encoder, decoder and the final modulation, or one of each side. "auto" becomes
  // the objective's (mdx-train: learned and shared for umd).
  std::string positions = "auto";  // auto | sincos | learned
  std::string condition = "auto";  // auto | separate | shared
  bool learned_positions() const { return positions == "learned"; }
  bool shared_condition() const { return condition == "shared"; }
  // Dropout in the token embedding and the blocks (attention weights, projections, MLP), as MAGE's
  // 0.1; -1: the objective's (mdx-train: 0.1 for mage, else 0).
  double dropout = -1;
  int64_t num_classes = 0;  // 0: unconditional; otherwise a null class is added for guidance
  int64_t timesteps = 1000; // time index 0..T (0 = no noise)

  void add_to(CLI::App& app);
  void resolve();        // fills the preset's sizes where 0; validates
  // The model's tokens: the image size, the grid and the values per token of the tokenizer.
  void set_geometry(const TokenGeometry& g);
  TokenGeometry geometry() const;
  int64_t tokens() const { return grid_h * grid_w; }
  int64_t token_dim() const { return values; }
  bool discrete() const { return vocabulary > 0; }

  // Flat key/value form (HDF5 attributes of a checkpoint's `config` group).
  std::map<std::string, std::string> to_map() const;
  static ModelConfig from_map(const std::map<std::string, std::string>& m);
};

}  // namespace mdx
