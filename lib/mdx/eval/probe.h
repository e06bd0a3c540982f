// mdx-probe as a library function: train + test features (embeddings, or an image table's raw
// pixels) -> a JSON report of a linear probe on stdout (SPEC "Linear probe"), and the probe's
// weights as HDF5. Three methods: multinomial logistic regression fitted by L-BFGS with L2 chosen
// on a held-out split, closed-form ridge regression on one-hot targets (UMD's few-shot probe), and
// cosine k-NN (DINO's weighted vote).
#pragma once
#include <CLI/CLI.hpp>
#include <torch/types.h>

#include <functional>
#include <string>
#include <vector>

#include "mdx/util/provenance.h"

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

// --- L-BFGS (Nocedal & Wright, "Numerical Optimization", 2nd ed., algorithm 7.4 with the strong
// Wolfe line search of algorithms 3.5 and 3.6) -------------------------------------------------------

// f(x) and its gradient; x and grad are float64 vectors of the same length.
using Objective = std::function<double(const at::Tensor& x, at::Tensor& grad)>;
// Approximates H^-1 v for the Hessian H of f: the initial inverse Hessian of the two-loop
// recursion (a null one means the identity).
using Preconditioner = std::function<at::Tensor(const at::Tensor& v)>;

struct LbfgsOptions {
  int64_t max_iter = 1000;
  int64_t history = 10;      // (s, y) pairs kept
  double gtol = 1e-5;        // converged when max |grad| <= gtol
  double ftol = 1e-12;       // converged when the relative decrease of f in an iteration is below ftol
};

struct LbfgsResult {
  at::Tensor x;              // the last accepted point
  double f = 0;
  double grad_max = 0;       // max |grad| at x
  int64_t iterations = 0, evaluations = 0;
  bool converged = false;
  std::string stop;          // why it stopped, in words
};

LbfgsResult lbfgs(const Objective& f, at::Tensor x0, const LbfgsOptions& opt, const Preconditioner& pre = nullptr);

// --- Multinomial logistic regression ----------------------------------------------------------------

// mean_i -log softmax(x_i W + b)[y_i] + lambda/2 ||W||_F^2 over the rows of x (float32 [N,F],
// contiguous), with W [F,K] and an unpenalized bias b [K], both packed in one float64 vector
// theta = (W row-major, b). scikit-learn's LogisticRegression minimizes
// C * sum_i -log p_i + 1/2 ||W||^2, which is N*C times this, so C = 1 / (lambda * N).
class SoftmaxObjective {
 public:
  SoftmaxObjective(at::Tensor x, at::Tensor labels, int64_t classes, double lambda);
  double operator()(const at::Tensor& theta, at::Tensor& grad) const;
  int64_t parameters() const { return (features_ + 1) * classes_; }
  void set_lambda(double lambda) { lambda_ = lambda; }

 private:
  at::Tensor x_, labels_;
  int64_t rows_, features_, classes_;
  double lambda_;
};

// H0 for L-BFGS on a SoftmaxObjective: (c Sigma + lambda I)^-1 on W and 1/c on b, with
// Sigma = x^T x / N (the correlation matrix of standardized features) and c = 1/K, the softmax
// curvature at W = 0, so that the data's ill-conditioning (raw pixels: eigenvalues over six
// decades) is taken out before L-BFGS starts. Sigma is computed once for every lambda.
class SoftmaxPreconditioner {
 public:
  SoftmaxPreconditioner(const at::Tensor& x, int64_t classes);
  Preconditioner operator()(double lambda) const;

 private:
  at::Tensor sigma_;
  double jitter_ = 0;
  int64_t features_, classes_;
};

// Logits x W + b of theta's model for float32 rows x: float32 [N,K].
at::Tensor softmax_logits(const at::Tensor& x, const at::Tensor& theta, int64_t classes);

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

// Prints the JSON report on stdout; writes -o.
void probe(const ProbeOptions& opt, Provenance& prov);

}  // namespace mdx
