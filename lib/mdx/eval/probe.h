// mdx-probe as a library function: train + test features (embeddings, or an image table's raw
// pixels) -> the report of a linear probe (SPEC "Linear probe"; the tool prints it as JSON on
// stdout), and the probe's weights as HDF5. Three methods: multinomial logistic regression fitted
// by L-BFGS with L2 chosen on a held-out split (lbfgs.h, softmax.h), closed-form ridge regression
// on one-hot targets (UMD's few-shot probe), and cosine k-NN (DINO's weighted vote).
#pragma once
#include <torch/types.h>

#include <optional>
#include <string>
#include <vector>

#include "mdx/util/provenance.h"

namespace CLI {
class App;
}

namespace mdx {

struct ProbeOptions {
  std::string train, test;    // embeddings files or image tables
  std::string output;         // optional probe file
  std::string method = "logistic";  // logistic | ridge | knn
  std::string l2;             // logistic: comma-separated lambdas (one value: fixed); empty: the default grid
  double holdout = 0.1;       // logistic: share of the training rows that scores the grid
  int64_t max_iter = 1000;    // logistic: L-BFGS iterations per fit
  double tol = 1e-4;          // logistic: converged when max |gradient of the mean loss| <= tol
  double lambda = 1024;       // ridge
  int64_t shots = 0;          // K random training rows per class (0: all rows)
  int64_t k = 20;             // knn
  int64_t batch = 0;          // knn: test rows per similarity block (0: about 16 MiB of similarities)

  void add_to(CLI::App& app);
  void validate() const;
  std::vector<double> l2_grid() const;  // --l2 parsed, largest first, duplicates removed
};

// The default lambda grid of the logistic probe, largest first (the order of the warm-started path).
std::vector<double> default_l2_grid();

// --- Ridge and k-NN ----------------------------------------------------------------------------------

// Minimizes sum_i ||onehot(y_i) - x_i W - b||^2 + lambda ||W||_F^2 (b unpenalized: x and the
// targets are centred, b = mean target - mean x W), in float64, through the primal or the dual
// normal equations, whichever system is smaller. Returns W [F,K] and b [K].
std::pair<at::Tensor, at::Tensor> fit_ridge(const at::Tensor& x, const at::Tensor& labels, int64_t classes,
                                            double lambda);

// DINO's k-NN vote (Caron et al. 2021, eval_knn.py): rows are L2-normalized, each test row takes
// its k most cosine-similar training rows, and each of those adds exp(s / 0.07) to its class.
// Returns the class scores, float32 [M,K]; `batch` test rows at a time.
at::Tensor knn_scores(const at::Tensor& train, const at::Tensor& train_labels, const at::Tensor& test,
                      int64_t classes, int64_t k, int64_t batch);
constexpr double kKnnTemperature = 0.07;

// The rank of each row's true class among its scores: the number of classes with a higher score,
// plus those with an equal score and a smaller index (so rank 0 is the argmax, first on a tie).
at::Tensor label_rank(const at::Tensor& scores, const at::Tensor& labels);

// --- The report --------------------------------------------------------------------------------------

// One input of a probe, as the report describes it.
struct ProbeInput {
  std::string path, kind;      // kind: embeddings | images
  int64_t rows = 0, used_rows = 0;
};

// What mdx-probe reports: accuracies on the test rows, the confusion matrix, the fit's
// hyperparameters, the inputs and the provenance.
struct ProbeReport {
  std::string method;
  double top1 = 0, top5 = 0;
  std::vector<std::optional<double>> per_class_accuracy;  // none for a class without test rows
  std::vector<int64_t> test_counts;                        // test rows per class
  std::vector<std::vector<int64_t>> confusion;             // [true class][predicted class]
  int64_t classes = 0, features = 0, train_rows = 0, test_rows = 0, shots = 0;
  std::vector<std::string> label_names;                    // empty: the inputs name no classes
  std::string hyperparameters;                             // the method's, as a JSON object
  ProbeInput train, test;
  uint64_t seed = 0;
  std::string mdx_version, mdx_commit;

  std::string to_json() const;  // one line: what mdx-probe prints
};

// Fits and scores the probe; writes -o.
ProbeReport probe(const ProbeOptions& opt, Provenance& prov);

}  // namespace mdx
