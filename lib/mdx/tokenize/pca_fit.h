// mdx-pca-fit as a library function: image table(s) -> PCA tokenizer file.
#pragma once
#include <string>
#include <vector>

#include "mdx/util/provenance.h"

namespace CLI {
class App;
}

namespace mdx {

struct PcaFitOptions {
  std::vector<std::string> inputs;
  std::string output;
  int64_t patch = 4;
  int64_t dim = 0;          // 0: chosen by `variance`
  double variance = 0.9;    // explained-variance target when dim is 0
  int64_t samples = 100000; // random patches; 0 = every patch of every image
  bool no_center = false;
  int64_t chunk = 4096;     // images read per step (memory stays flat)

  void add_to(CLI::App& app);
  void validate() const;
};

void pca_fit(const PcaFitOptions& opt, Provenance& prov);

}  // namespace mdx
