// mdx-fid as a library function: the Fréchet distance between the Gaussians fitted to the features
// of two image sets (Heusel et al. 2017, "GANs Trained by a Two Time-Scale Update Rule Converge to
// a Local Nash Equilibrium", eq. 6), computed as pytorch-fid computes it. Features come from a
// TorchScript module (pytorch-fid's Inception-v3 for standard FID) or from an mdx encoder; either
// side may be an image table or saved statistics (SPEC "Files": `mu`, `sigma`, `count`, identity).
// The tool prints the report as JSON on stdout.
#pragma once
#include <hdf5.h>
#include <torch/types.h>

#include <optional>
#include <string>
#include <vector>

#include "mdx/eval/weights.h"
#include "mdx/util/provenance.h"

namespace CLI {
class App;
}

namespace mdx {

struct FidOptions {
  std::vector<std::string> inputs;  // one or two: image tables or statistics files
  std::string extractor;            // TorchScript module file
  std::string encoder;              // mdx checkpoint
  std::string pool = "cls";         // --encoder: cls | mean | cls+mean
  Weights weights = Weights::Raw;   // --encoder: as UMD's representation FDs
  int64_t size = 299;               // --extractor: images are resized to size x size
  int64_t batch = 100;
  std::string save_stats;           // statistics of the one image-table input

  void add_to(CLI::App& app);
  void validate() const;
};

// Which network made a set of features, and how its input was prepared: features of different
// extractors are not comparable, so statistics carry this and mismatches are refused.
struct ExtractorIdentity {
  std::string kind;           // "torchscript" | "mdx-encoder"
  std::string path;           // the module or checkpoint file as given
  std::string sha256;         // of that file
  int64_t bytes = 0;          // its size
  int64_t features = 0;       // F
  int64_t size = 0;           // torchscript: the square input size
  int64_t step = -1;          // mdx-encoder: the checkpoint's training step
  std::string pool, weights;  // mdx-encoder: cls | mean | cls+mean; ema | raw
  std::string preprocessing;  // in words

  // Why features of `other` cannot be compared with these ("" when they can).
  std::string mismatch(const ExtractorIdentity& other) const;
  std::string describe() const;  // one line for messages
  std::string json() const;
  void save(hid_t file) const;   // root attributes extractor_*
  static ExtractorIdentity load(hid_t file, const std::string& path_for_errors);
};

// The Gaussian of a set of features: float64 mean [F] and covariance [F,F] (divided by n - 1).
struct FeatureStats {
  at::Tensor mu, sigma;
  int64_t count = 0;
  ExtractorIdentity extractor;

  static FeatureStats load(const std::string& path);
  void save(hid_t file) const;  // mu, sigma, count and the identity
};

// ||mu1 - mu2||^2 + tr S1 + tr S2 - 2 tr sqrt(S1 S2), in float64. The trace of the square root is
// the sum of the square roots of the eigenvalues of S1^1/2 S2 S1^1/2 (the same spectrum as S1 S2),
// negative ones (rounding) clamped to 0: no general matrix square root is needed. When the result
// is not finite, eps I is added to both covariances and it is recomputed, as pytorch-fid does.
double frechet_distance(const at::Tensor& mu1, const at::Tensor& sigma1, const at::Tensor& mu2,
                        const at::Tensor& sigma2, double eps = 1e-6);

// One input of the comparison, as the report describes it.
struct FidInput {
  std::string path, type;  // type: images | stats
  int64_t count = 0;       // images behind its statistics
};

// What mdx-fid reports: the distance (none with one input, whose statistics are only saved), the
// inputs, the extractor and the provenance.
struct FidReport {
  std::optional<double> fid;
  std::vector<FidInput> inputs;
  std::string stats;  // the --save-stats file, or ""
  ExtractorIdentity extractor;
  std::string device, mdx_version, mdx_commit;

  std::string to_json() const;  // one line: what mdx-fid prints
};

// Computes the statistics of image-table inputs and the distance; writes --save-stats.
FidReport fid(const FidOptions& opt, Provenance& prov);

}  // namespace mdx
