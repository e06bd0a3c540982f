#include "mdx/eval/probe.h"

#include <CLI/CLI.hpp>
#include <fmt/format.h>
#include <torch/torch.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <optional>
#include <random>
#include <sstream>

#include "mdx/eval/lbfgs.h"
#include "mdx/eval/softmax.h"
#include "mdx/io/hdf5.h"
#include "mdx/util/error.h"
#include "mdx/util/json.h"
#include "mdx/util/log.h"
#include "mdx/util/output.h"
#include "mdx/util/signal.h"

namespace mdx {

// ---------------------------------------------------------------------------------------------------
// Ridge and k-NN

std::pair<at::Tensor, at::Tensor> fit_ridge(const at::Tensor& x, const at::Tensor& labels, int64_t classes,
                                            double lambda) {
  at::Tensor X = x.to(at::kDouble);
  const int64_t n = X.size(0), F = X.size(1);
  at::Tensor Y = at::one_hot(labels.to(at::kLong), classes).to(at::kDouble);
  at::Tensor xm = X.mean(0), ym = Y.mean(0);
  at::Tensor Xc = X - xm, Yc = Y - ym;
  at::Tensor W;
  if (F <= n) {
    at::Tensor A = at::mm(Xc.t(), Xc) + lambda * at::eye(F, at::kDouble);
    W = at::linalg_solve(A, at::mm(Xc.t(), Yc));
  } else {  // (X'X + lambda I)^-1 X' = X' (X X' + lambda I)^-1
    at::Tensor A = at::mm(Xc, Xc.t()) + lambda * at::eye(n, at::kDouble);
    W = at::mm(Xc.t(), at::linalg_solve(A, Yc));
  }
  at::Tensor b = ym - at::mv(W.t(), xm);
  return {W, b};
}

at::Tensor knn_scores(const at::Tensor& train, const at::Tensor& train_labels, const at::Tensor& test,
                      int64_t classes, int64_t k, int64_t batch) {
  // Cosine similarity as dot products divided by the norms afterwards. Each table is first divided
  // by its largest magnitude (cosines do not change), so that float32 norms and products neither
  // overflow (features of 1e20) nor underflow (1e-25).
  auto unit_scale = [](const at::Tensor& x) {
    at::Tensor f = x.to(at::kFloat);
    const double m = x.numel() > 0 ? f.abs().max().item<double>() : 1.0;
    return m > 0 && std::isfinite(m) ? f / m : f;
  };
  at::Tensor a = unit_scale(train), q = unit_scale(test);
  at::Tensor an = a.norm(2, {1}).clamp_min(1e-12), qn = q.norm(2, {1}).clamp_min(1e-12);
  at::Tensor labels = train_labels.to(at::kLong);
  const int64_t kk = std::min<int64_t>(k, a.size(0));
  at::Tensor scores = at::zeros({q.size(0), classes}, at::kFloat);
  for (int64_t start = 0; start < q.size(0); start += batch) {
    check_interrupt();
    const int64_t n = std::min(batch, q.size(0) - start);
    at::Tensor sim = at::mm(q.slice(0, start, start + n), a.t());
    sim.div_(qn.slice(0, start, start + n).unsqueeze(1)).div_(an.unsqueeze(0));
    auto [top, idx] = at::topk(sim, kk, 1, true, true);
    at::Tensor votes = (top / kKnnTemperature).exp_();
    scores.slice(0, start, start + n).scatter_add_(1, labels.index_select(0, idx.reshape(-1)).view({n, kk}), votes);
  }
  return scores;
}

at::Tensor label_rank(const at::Tensor& scores, const at::Tensor& labels) {
  at::Tensor y = labels.to(at::kLong).unsqueeze(1);
  at::Tensor own = scores.gather(1, y);
  at::Tensor index = at::arange(scores.size(1), at::kLong).unsqueeze(0);
  at::Tensor rank = ((scores > own) | ((scores == own) & (index < y))).sum(1);
  // A NaN score is never a hit: it ranks last.
  return at::where(own.squeeze(1).isnan(), at::full_like(rank, scores.size(1)), rank);
}

// ---------------------------------------------------------------------------------------------------
// The tool

std::vector<double> default_l2_grid() { return {1e-1, 1e-2, 1e-3, 1e-4, 1e-5, 1e-6}; }

void ProbeOptions::add_to(CLI::App& app) {
  app.add_option("train", train, "training features: embeddings (HDF5 from mdx-embed) or an image table (raw pixels)")
      ->required();
  app.add_option("test", test, "test features, of the same kind and width as the training ones")->required();
  app.add_option("-o,--output", output, "probe file to write (HDF5): weights, standardization, test predictions");
  app.add_option("--method", method, "logistic (L-BFGS, L2 chosen on a held-out split) | ridge (closed form) | knn "
                                     "(cosine, weighted vote)")
      ->capture_default_str();
  app.add_option("--l2", l2, "logistic: comma-separated L2 strengths lambda to choose from (one value: fixed; "
                             "default: 1e-1,1e-2,...,1e-6)");
  app.add_option("--holdout", holdout, "logistic: share of the training rows held out to choose lambda")
      ->capture_default_str();
  app.add_option("--max-iter", max_iter, "logistic: L-BFGS iterations per fit")->capture_default_str();
  app.add_option("--tol", tol, "logistic: converged when max |gradient| of the mean loss <= tol")->capture_default_str();
  app.add_option("--lambda", lambda, "ridge: L2 strength on the summed squared error (UMD: 1024)")
      ->capture_default_str();
  app.add_option("--shots", shots, "use K random training rows per class (few-shot; 0: all rows)")->capture_default_str();
  app.add_option("--k", k, "knn: neighbours that vote")->capture_default_str();
  app.add_option("--batch", batch, "knn: test rows per block of similarities (0: about 16 MiB of them)")
      ->capture_default_str();
}

std::vector<double> ProbeOptions::l2_grid() const {
  if (l2.empty()) return default_l2_grid();
  std::vector<double> grid;
  std::stringstream in(l2);
  for (std::string item; std::getline(in, item, ',');) {
    size_t used = 0;
    double v = -1;
    try {
      v = std::stod(item, &used);
    } catch (const std::exception&) {
      used = 0;
    }
    if (used == 0 || used != item.size() || !(v >= 0) || !std::isfinite(v))
      throw UsageError("--l2 expects comma-separated numbers >= 0, got '" + l2 + "'");
    grid.push_back(v);
  }
  if (grid.empty()) throw UsageError("--l2 expects comma-separated numbers >= 0, got '" + l2 + "'");
  std::sort(grid.rbegin(), grid.rend());
  grid.erase(std::unique(grid.begin(), grid.end()), grid.end());
  return grid;
}

void ProbeOptions::validate() const {
  if (method != "logistic" && method != "ridge" && method != "knn")
    throw UsageError("--method must be logistic, ridge or knn, got '" + method + "'");
  l2_grid();
  if (!(holdout >= 0 && holdout < 1)) throw UsageError("--holdout must be in [0, 1)");
  if (max_iter < 1) throw UsageError("--max-iter must be at least 1");
  if (!(tol > 0)) throw UsageError("--tol must be > 0");
  if (!(lambda >= 0) || !std::isfinite(lambda)) throw UsageError("--lambda must be finite and >= 0");
  if (shots < 0) throw UsageError("--shots must be >= 0");
  if (k < 1) throw UsageError("--k must be at least 1");
  if (batch < 0) throw UsageError("--batch must be >= 0");
}

namespace {

using Clock = std::chrono::steady_clock;
double seconds_since(Clock::time_point t) { return std::chrono::duration<double>(Clock::now() - t).count(); }

// One input file as features: `embeddings` float [N,F], or `images` uint8 [N,H,W,C] flattened to
// F = H*W*C pixel values (0..255); int64 `labels` [N] in both cases.
struct Features {
  std::string path, kind;
  at::Tensor x;       // float32 [N,F]
  at::Tensor labels;  // int64 [N]
  std::vector<std::string> label_names, history;
};

Features read_features(const std::string& path) {
  Features r;
  r.path = path;
  h5::Handle f = h5::open_file(path);
  if (h5::has(f, "config") && h5::has(f, "model"))
    throw Error("'" + path + "' is an mdx checkpoint; make embeddings with mdx-embed");
  if (h5::has(f, "embeddings")) {
    r.kind = "embeddings";
    h5::Handle ds = h5::open_dataset(f, "embeddings", path);
    h5::DatasetInfo i = h5::info(ds);
    if (i.dims.size() != 2 || i.type_class != H5T_FLOAT)
      throw Error(fmt::format("'{}': dataset 'embeddings' must be float [N,F], found a {}-dimensional {}", path,
                              i.dims.size(), i.type_class == H5T_FLOAT ? "float" : "non-float"));
    if (i.dims[1] == 0) throw Error(fmt::format("'{}': dataset 'embeddings' has 0 features per row", path));
    r.x = at::empty({static_cast<int64_t>(i.dims[0]), static_cast<int64_t>(i.dims[1])}, at::kFloat);
    if (r.x.numel()) h5::read_all(ds, H5T_NATIVE_FLOAT, r.x.data_ptr<float>(), "'embeddings' in '" + path + "'");
  } else if (h5::has(f, "images")) {
    r.kind = "images";
    h5::Handle ds = h5::open_dataset(f, "images", path);
    h5::DatasetInfo i = h5::info(ds);
    if (i.dims.size() != 4 || i.type_class != H5T_INTEGER || i.type_size != 1 || i.is_signed)
      throw Error(fmt::format("'{}': dataset 'images' must be uint8 [N,H,W,C]", path));
    // HDF5 converts uint8 to float while reading: no second copy of the table in memory.
    r.x = at::empty({static_cast<int64_t>(i.dims[0]), static_cast<int64_t>(i.dims[1] * i.dims[2] * i.dims[3])},
                    at::kFloat);
    if (r.x.numel()) h5::read_all(ds, H5T_NATIVE_FLOAT, r.x.data_ptr<float>(), "'images' in '" + path + "'");
  } else {
    throw Error("'" + path + "' has neither a dataset 'embeddings' [N,F] nor 'images' [N,H,W,C]");
  }
  const int64_t n = r.x.size(0);
  if (n == 0) throw Error("'" + path + "' has no rows");
  if (!h5::has(f, "labels"))
    throw Error("'" + path + "' has no dataset 'labels': a probe needs labelled rows");
  {
    h5::Handle ds = h5::open_dataset(f, "labels", path);
    h5::DatasetInfo i = h5::info(ds);
    if (i.dims.size() != 1 || static_cast<int64_t>(i.dims[0]) != n || i.type_class != H5T_INTEGER)
      throw Error(fmt::format("'{}': dataset 'labels' must be integer [{}] (one per row)", path, n));
    r.labels = at::empty({n}, at::kLong);
    h5::read_all(ds, H5T_NATIVE_INT64, r.labels.data_ptr<int64_t>(), "'labels' in '" + path + "'");
  }
  // A NaN or infinity anywhere makes the sum non-finite (as can huge finite values: then look closer).
  if (!std::isfinite(r.x.sum().item<double>())) {
    at::Tensor bad = (~at::isfinite(r.x)).any(1).nonzero();
    if (bad.numel())
      throw Error(fmt::format("'{}': row {} of '{}' is not finite (NaN or infinity)", path, bad[0][0].item<int64_t>(),
                              r.kind));
  }
  if (h5::has(f, "label_names")) r.label_names = h5::read_strings(f, "label_names", path);
  r.history = h5::read_history(f);
  return r;
}

// Fisher-Yates over [0, n) with a 64-bit Mersenne Twister: the same order on every platform.
std::vector<int64_t> permutation(int64_t n, std::mt19937_64& rng) {
  std::vector<int64_t> p(static_cast<size_t>(n));
  for (int64_t i = 0; i < n; ++i) p[i] = i;
  for (int64_t i = n - 1; i > 0; --i) std::swap(p[i], p[rng() % static_cast<uint64_t>(i + 1)]);
  return p;
}

at::Tensor index_tensor(std::vector<int64_t> rows) {
  std::sort(rows.begin(), rows.end());
  return at::tensor(rows, at::kLong);
}

// Row `i` of x and labels becomes row order[i], in place (cycle by cycle, one row of scratch):
// the tables can be large, and the holdout split then leaves the fitted rows as one slice.
void permute_rows_(at::Tensor& x, at::Tensor& labels, const std::vector<int64_t>& order) {
  const int64_t n = x.size(0), F = x.size(1);
  float* xp = x.data_ptr<float>();
  int64_t* yp = labels.data_ptr<int64_t>();
  std::vector<float> row(static_cast<size_t>(F));
  std::vector<bool> done(static_cast<size_t>(n), false);
  for (int64_t start = 0; start < n; ++start) {
    if (done[start]) continue;
    std::copy(xp + start * F, xp + (start + 1) * F, row.begin());
    const int64_t label = yp[start];
    int64_t i = start;
    for (;;) {  // row i takes old row order[i]
      done[i] = true;
      const int64_t from = order[i];
      if (from == start) break;
      std::copy(xp + from * F, xp + (from + 1) * F, xp + i * F);
      yp[i] = yp[from];
      i = from;
    }
    std::copy(row.begin(), row.end(), xp + i * F);
    yp[i] = label;
  }
}

// Mean and standard deviation (population, as scikit-learn's StandardScaler) of each column, in
// float64 by plain loops over the rows (ATen's column reductions with a dtype cast copy the table);
// a constant column gets std 1.
std::pair<at::Tensor, at::Tensor> column_stats(const at::Tensor& x) {
  const int64_t n = x.size(0), F = x.size(1);
  const float* xp = x.data_ptr<float>();
  std::vector<double> sum(static_cast<size_t>(F), 0.0), ss(static_cast<size_t>(F), 0.0);
  for (int64_t i = 0; i < n; ++i)
    for (int64_t f = 0; f < F; ++f) sum[f] += xp[i * F + f];
  for (auto& v : sum) v /= static_cast<double>(n);
  for (int64_t i = 0; i < n; ++i)
    for (int64_t f = 0; f < F; ++f) {
      const double d = xp[i * F + f] - sum[f];
      ss[f] += d * d;
    }
  at::Tensor mean = at::tensor(sum, at::kDouble), std = at::tensor(ss, at::kDouble).div_(static_cast<double>(n)).sqrt_();
  std.masked_fill_(std == 0, 1.0);
  return {mean, std};
}

// In place: a second copy of a large table costs more than the arithmetic.
void standardize_(at::Tensor& x, const at::Tensor& mean, const at::Tensor& std) {
  x.sub_(mean.to(at::kFloat)).div_(std.to(at::kFloat));
}

double accuracy(const at::Tensor& scores, const at::Tensor& labels) {
  return (label_rank(scores, labels) == 0).to(at::kDouble).mean().item<double>();
}

// What a fit leaves for the report and the probe file.
struct ProbeResult {
  at::Tensor scores;                   // [M,K] on the test rows
  at::Tensor coef, intercept;          // linear methods: float64 [K,F], [K]
  at::Tensor mean, std;                // linear methods: the standardization
  std::string hyper_json;              // the "hyperparameters" object
  std::vector<std::pair<std::string, double>> attrs;  // numbers for the probe file
};

// The run_* functions standardize (or normalize) x and xt in place and may reorder the rows of x
// and y together.
ProbeResult run_logistic(const ProbeOptions& opt, at::Tensor x, at::Tensor y, at::Tensor xt, int64_t K,
                         std::mt19937_64& rng) {
  ProbeResult r;
  std::tie(r.mean, r.std) = column_stats(x);
  standardize_(x, r.mean, r.std);
  standardize_(xt, r.mean, r.std);
  const int64_t N = x.size(0), F = x.size(1);
  LbfgsOptions lo;
  lo.max_iter = opt.max_iter;
  lo.gtol = opt.tol;
  // Held-out fits only rank the lambdas: they stop at a 10x looser gradient, which leaves their
  // held-out accuracies unchanged to ~0.1 point (checked on Fashion-MNIST) at a third of the cost.
  LbfgsOptions lo_hold = lo;
  lo_hold.gtol = 10 * opt.tol;
  const std::vector<double> grid = opt.l2_grid();
  const int64_t n_hold = static_cast<int64_t>(std::llround(opt.holdout * static_cast<double>(N)));
  const bool choose = grid.size() > 1;
  if (choose && (n_hold < 1 || N - n_hold < 1))
    throw Error(fmt::format("--holdout {} of {} training rows leaves no rows to choose lambda with; give one --l2 "
                            "value or a larger --holdout",
                            opt.holdout, N));
  auto fit_log = [](const char* what, double lambda, int64_t n, const LbfgsResult& f, double secs) {
    log("{} lambda = {:g} (C = {:.6g}): {} iterations, {} evaluations, loss {:.6f}, max |grad| {:.2g}{} ({:.1f} s)",
        what, lambda, lambda > 0 ? 1 / (lambda * n) : INFINITY, f.iterations, f.evaluations, f.f, f.grad_max,
        f.converged ? "" : ", not converged", secs);
  };
  at::Tensor theta = at::zeros({(F + 1) * K}, at::kDouble);
  const SoftmaxPreconditioner curvature(x, K);  // of all the training rows; a good enough H0 for the split too
  double chosen = grid[0];
  std::string grid_json;
  if (choose) {
    permute_rows_(x, y, permutation(N, rng));  // a random split: the first n_hold rows are held out
    SoftmaxObjective obj(x.slice(0, n_hold), y.slice(0, n_hold), K, grid[0]);
    at::Tensor xh = x.slice(0, 0, n_hold), yh = y.slice(0, 0, n_hold);
    log("choosing lambda from {} values on {} held-out rows, fitting on {}", grid.size(), n_hold, N - n_hold);
    // The path from the strongest penalty down, each fit warm-started from the previous one; it
    // stops at the first value that scores below the best so far (the smaller ones overfit further).
    double best_acc = -1;
    at::Tensor best_theta = theta;
    for (double lambda : grid) {
      auto t0 = Clock::now();
      obj.set_lambda(lambda);
      LbfgsResult f = lbfgs(obj, theta, lo_hold, curvature(lambda));
      theta = f.x;
      double acc = accuracy(softmax_logits(xh, theta, K), yh);
      fit_log("held-out fit", lambda, N - n_hold, f, seconds_since(t0));
      log("  held-out top-1 {:.4f}", acc);
      grid_json += fmt::format("{}{{\"lambda\": {}, \"C\": {}, \"holdout_top1\": {}, \"iterations\": {}}}",
                               grid_json.empty() ? "" : ", ", json_number(lambda),
                               json_number(lambda > 0 ? 1 / (lambda * (N - n_hold)) : INFINITY), json_number(acc),
                               f.iterations);
      if (!(acc > best_acc)) break;
      best_acc = acc, chosen = lambda, best_theta = theta;
    }
    theta = best_theta;
  }
  auto t0 = Clock::now();
  SoftmaxObjective obj(x, y, K, chosen);
  LbfgsResult f = lbfgs(obj, theta, lo, curvature(chosen));
  fit_log("final fit on all training rows:", chosen, N, f, seconds_since(t0));
  if (!f.converged) warn("L-BFGS stopped before converging ({}); raise --max-iter or --tol", f.stop);
  r.scores = softmax_logits(xt, f.x, K);
  r.coef = f.x.slice(0, 0, F * K).view({F, K}).t().contiguous();
  r.intercept = f.x.slice(0, F * K).contiguous();
  const double C = chosen > 0 ? 1 / (chosen * N) : INFINITY;
  r.hyper_json = fmt::format(
      "{{\"lambda\": {}, \"C\": {}, \"loss\": \"mean cross-entropy + lambda/2 ||W||^2, bias unpenalized; C = "
      "1/(lambda N) for scikit-learn\", \"grid\": [{}], \"holdout\": {}, \"holdout_rows\": {}, \"max_iter\": {}, "
      "\"tol\": {}, \"iterations\": {}, \"converged\": {}, \"train_loss\": {}}}",
      json_number(chosen), json_number(C), grid_json, json_number(opt.holdout), choose ? n_hold : 0, opt.max_iter,
      json_number(opt.tol), f.iterations, f.converged ? "true" : "false", json_number(f.f));
  r.attrs = {{"lambda", chosen}, {"C", C}};
  return r;
}

ProbeResult run_ridge(const ProbeOptions& opt, at::Tensor x, at::Tensor y, at::Tensor xt, int64_t K) {
  ProbeResult r;
  std::tie(r.mean, r.std) = column_stats(x);
  standardize_(x, r.mean, r.std);
  standardize_(xt, r.mean, r.std);
  auto [W, b] = fit_ridge(x, y, K, opt.lambda);
  r.coef = W.t().contiguous();
  r.intercept = b.contiguous();
  r.scores = at::addmm(b, xt.to(at::kDouble), W);
  r.hyper_json = fmt::format("{{\"lambda\": {}, \"loss\": \"sum of squared errors on one-hot targets + lambda "
                             "||W||^2, bias unpenalized\"}}",
                             json_number(opt.lambda));
  r.attrs = {{"lambda", opt.lambda}};
  return r;
}

ProbeResult run_knn(const ProbeOptions& opt, const at::Tensor& x, const at::Tensor& y, const at::Tensor& xt,
                    int64_t K) {
  ProbeResult r;
  const int64_t batch = opt.batch > 0 ? opt.batch : std::max<int64_t>(1, (int64_t(4) << 20) / x.size(0));
  r.scores = knn_scores(x, y, xt, K, opt.k, batch);
  r.hyper_json = fmt::format("{{\"k\": {}, \"similarity\": \"cosine\", \"vote\": \"exp(similarity / {})\"}}",
                             std::min<int64_t>(opt.k, x.size(0)), kKnnTemperature);
  r.attrs = {{"k", static_cast<double>(std::min<int64_t>(opt.k, x.size(0)))}, {"temperature", kKnnTemperature}};
  return r;
}

std::vector<int64_t> int64_list(const at::Tensor& t) {  // 1-D int64
  std::vector<int64_t> v;
  for (int64_t i = 0; i < t.size(0); ++i) v.push_back(t[i].item<int64_t>());
  return v;
}

std::string json_list(const std::vector<int64_t>& v) {
  std::string s = "[";
  for (size_t i = 0; i < v.size(); ++i) s += (i ? ", " : "") + std::to_string(v[i]);
  return s + "]";
}

}  // namespace

std::string ProbeReport::to_json() const {
  std::string per_class, conf_rows, names;
  for (size_t c = 0; c < per_class_accuracy.size(); ++c) {
    const std::optional<double>& a = per_class_accuracy[c];
    per_class += fmt::format("{}{}", c ? ", " : "", a ? json_number(*a) : "null");
  }
  for (size_t c = 0; c < confusion.size(); ++c)
    conf_rows += fmt::format("{}{}", c ? ", " : "", json_list(confusion[c]));
  for (size_t i = 0; i < label_names.size(); ++i) names += (i ? ", " : "") + json_string(label_names[i]);
  auto input_json = [](const ProbeInput& in) {
    return fmt::format("{{\"path\": {}, \"kind\": {}, \"rows\": {}, \"used_rows\": {}}}", json_string(in.path),
                       json_string(in.kind), in.rows, in.used_rows);
  };
  return fmt::format(
      "{{\"method\": {}, \"top1\": {}, \"top5\": {}, \"per_class_accuracy\": [{}], \"test_counts\": {}, "
      "\"confusion\": [{}], \"classes\": {}, \"label_names\": {}, \"features\": {}, \"train_rows\": {}, "
      "\"test_rows\": {}, \"shots\": {}, \"hyperparameters\": {}, \"train\": {}, \"test\": {}, \"seed\": {}, "
      "\"mdx_version\": {}, \"mdx_commit\": {}}}",
      json_string(method), json_number(top1), json_number(top5), per_class, json_list(test_counts), conf_rows, classes,
      label_names.empty() ? "null" : "[" + names + "]", features, train_rows, test_rows, shots, hyperparameters,
      input_json(train), input_json(test), seed, json_string(mdx_version), json_string(mdx_commit));
}

ProbeReport probe(const ProbeOptions& opt, Provenance& prov) {
  opt.validate();
  const auto start = Clock::now();
  std::unique_ptr<AtomicOutput> out;
  if (!opt.output.empty())
    out = std::make_unique<AtomicOutput>(opt.output, std::vector<std::string>{opt.train, opt.test});
  Features train = read_features(opt.train);
  Features test = read_features(opt.test);
  prov.add_input(opt.train, train.history);
  prov.add_input(opt.test, test.history);
  const int64_t F = train.x.size(1);
  if (test.x.size(1) != F)
    throw Error(fmt::format("'{}' has {} features per row but '{}' has {}: they must come from the same extractor",
                            opt.train, F, opt.test, test.x.size(1)));
  if (train.kind != test.kind)
    warn("'{}' holds {} and '{}' holds {}: comparing different kinds of features", opt.train, train.kind, opt.test,
         test.kind);
  const int64_t min_label = train.labels.min().item<int64_t>();
  if (min_label < 0) throw Error(fmt::format("'{}': label {} is negative; labels must be 0, 1, ...", opt.train, min_label));
  const int64_t K = train.labels.max().item<int64_t>() + 1;
  const int64_t tmin = test.labels.min().item<int64_t>(), tmax = test.labels.max().item<int64_t>();
  if (tmin < 0 || tmax >= K)
    throw Error(fmt::format("'{}': label {} is outside the {} classes of '{}' (0..{})", opt.test,
                            tmin < 0 ? tmin : tmax, K, opt.train, K - 1));
  std::vector<std::string> names = !train.label_names.empty() ? train.label_names : test.label_names;
  if (!names.empty() && static_cast<int64_t>(names.size()) < K) {
    warn("'{}' names {} classes but its labels go up to {}; names left out of the report", opt.train, names.size(),
         K - 1);
    names.clear();
  }

  std::mt19937_64 rng(prov.seed);
  at::Tensor x = train.x, y = train.labels;
  at::Tensor counts = at::bincount(y, {}, K);
  if (opt.shots > 0) {
    // K-shot: opt.shots rows of every class present, drawn without replacement.
    const int64_t few = counts.gt(0).logical_and(counts.lt(opt.shots)).nonzero().numel();
    if (few)
      throw Error(fmt::format("--shots {}: class {} has only {} training rows", opt.shots,
                              counts.gt(0).logical_and(counts.lt(opt.shots)).nonzero()[0][0].item<int64_t>(),
                              counts.masked_select(counts.gt(0).logical_and(counts.lt(opt.shots)))[0].item<int64_t>()));
    std::vector<int64_t> perm = permutation(x.size(0), rng), rows, taken(static_cast<size_t>(K), 0);
    const int64_t* yp = y.data_ptr<int64_t>();
    for (int64_t i : perm)
      if (taken[yp[i]] < opt.shots) ++taken[yp[i]], rows.push_back(i);
    at::Tensor idx = index_tensor(rows);
    x = x.index_select(0, idx), y = y.index_select(0, idx);
  }
  log("{} method on {} training rows ({}) and {} test rows, {} features, {} classes", opt.method, x.size(0),
      train.kind, test.x.size(0), F, K);

  ProbeResult r = opt.method == "logistic" ? run_logistic(opt, x, y, test.x, K, rng)
                  : opt.method == "ridge"  ? run_ridge(opt, x, y, test.x, K)
                                           : run_knn(opt, x, y, test.x, K);

  const at::Tensor rank = label_rank(r.scores, test.labels);
  const at::Tensor pred = r.scores.argmax(1);
  const double top1 = (rank < 1).to(at::kDouble).mean().item<double>();
  const double top5 = (rank < 5).to(at::kDouble).mean().item<double>();
  at::Tensor confusion = at::zeros({K * K}, at::kLong).index_add_(0, test.labels * K + pred, at::ones_like(pred))
                             .view({K, K});
  ProbeReport report;
  report.method = opt.method;
  report.top1 = top1, report.top5 = top5;
  report.test_counts = int64_list(confusion.sum(1));
  for (int64_t c = 0; c < K; ++c) {
    const int64_t n = report.test_counts[c];
    std::optional<double> share;
    if (n) share = static_cast<double>(confusion[c][c].item<int64_t>()) / n;
    report.per_class_accuracy.push_back(share);
    report.confusion.push_back(int64_list(confusion[c]));
  }
  report.classes = K, report.features = F;
  report.train_rows = x.size(0), report.test_rows = test.x.size(0), report.shots = opt.shots;
  if (!names.empty()) report.label_names.assign(names.begin(), names.begin() + K);
  report.hyperparameters = r.hyper_json;
  report.train = {train.path, train.kind, train.x.size(0), x.size(0)};
  report.test = {test.path, test.kind, test.x.size(0), test.x.size(0)};
  report.seed = prov.seed;
  report.mdx_version = version(), report.mdx_commit = git_commit();
  log("top-1 {:.4f}, top-5 {:.4f} on {} test rows ({:.1f} s)", top1, top5, test.x.size(0), seconds_since(start));

  if (out) {
    h5::Handle f = h5::create_file(out->temp_path());
    if (r.coef.defined()) {
      const auto k = static_cast<hsize_t>(K), fw = static_cast<hsize_t>(F);
      at::Tensor coef = r.coef.to(at::kDouble).contiguous(), icpt = r.intercept.to(at::kDouble).contiguous();
      at::Tensor mean = r.mean.contiguous(), std = r.std.contiguous();
      h5::write(f, "coef", H5T_NATIVE_DOUBLE, {k, fw}, coef.data_ptr<double>());
      h5::write(f, "intercept", H5T_NATIVE_DOUBLE, {k}, icpt.data_ptr<double>());
      h5::write(f, "mean", H5T_NATIVE_DOUBLE, {fw}, mean.data_ptr<double>());
      h5::write(f, "std", H5T_NATIVE_DOUBLE, {fw}, std.data_ptr<double>());
    }
    at::Tensor p = pred.contiguous();
    h5::write(f, "test_predictions", H5T_NATIVE_INT64, {static_cast<hsize_t>(p.size(0))}, p.data_ptr<int64_t>());
    if (!names.empty()) h5::write_strings(f, "label_names", std::vector<std::string>(names.begin(), names.begin() + K));
    h5::write_attr(f, "method", opt.method);
    h5::write_attr(f, "classes", K);
    h5::write_attr(f, "features", F);
    h5::write_attr(f, "top1", top1);
    for (const auto& [key, value] : r.attrs) h5::write_attr(f, key, value);
    h5::write_provenance(f, prov);
    h5::close_output(f, opt.output);
    out->commit();
    log("wrote {}", opt.output);
  }
  return report;
}

}  // namespace mdx
