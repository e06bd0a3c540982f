// mdx-corrupt as a library function: apply an objective's corruption at chosen timesteps / mask
// ratios to a few images, and render a PNG grid (rows: images, columns: corruptions) or write the
// corrupted images, masks and timesteps to HDF5.
#pragma once
#include <string>
#include <vector>

#include "mdx/corrupt/augment.h"
#include "mdx/corrupt/objective.h"
#include "mdx/util/provenance.h"

namespace CLI {
class App;
}

namespace mdx {

struct CorruptOptions {
  std::vector<std::string> inputs;
  std::string output;                // .png: a grid; .h5/.hdf5: the corrupted data
  ObjectiveOptions objective;        // objective, schedule, T, mask policy, tokenizer, its own
  std::vector<int64_t> t;            // noise columns (empty: 0,250,500,750,999)
  std::vector<double> mask_ratio;    // mask columns under the fixed policy (empty: 0.75)
  int64_t draws = 5;                 // mask columns under the mage policy
  std::vector<double> progress;      // mask columns under the LMD policies, as fractions of training
  int64_t patch = 4;                 // pixel patches, when no --tokenizer is given
  int64_t count = 8;                 // rows
  int64_t first = 0;                 // first image of the table
  int64_t zoom = 0;                  // pixel repetition in the PNG (0: cells of at least 64 px)
  bool no_original = false;
  bool no_labels = false;            // PNG: no column / row labels drawn in the image
  AugmentOptions augment{"none", ""};  // what mdx-train's --augment would feed (default: none)

  void add_to(CLI::App& app);
  void validate() const;
};

void corrupt(const CorruptOptions& opt, Provenance& prov);

}  // namespace mdx
