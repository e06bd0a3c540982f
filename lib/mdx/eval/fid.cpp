#include "mdx/eval/fid.h"

#include <CLI/CLI.hpp>
#include <fmt/format.h>
#include <torch/script.h>
#include <torch/torch.h>

#include <cmath>
#include <fstream>
#include <memory>

#include "mdx/eval/trained_model.h"
#include "mdx/io/hdf5.h"
#include "mdx/io/image_table.h"
#include "mdx/util/error.h"
#include "mdx/util/script.h"
#include "mdx/util/json.h"
#include "mdx/util/log.h"
#include "mdx/util/output.h"
#include "mdx/util/progress.h"
#include "mdx/util/sha256.h"
#include "mdx/util/statistics.h"

namespace mdx {

void FidOptions::add_to(CLI::App& app) {
  app.add_option("inputs", inputs, "two image tables or statistics files (HDF5) to compare; one image table "
                                   "with --save-stats")
      ->required()
      ->expected(1, 2);
  app.add_option("--extractor", extractor, "TorchScript feature extractor (e.g. pytorch-fid's Inception-v3 for "
                                           "standard FID; see share/mdx/inception_to_torchscript.py)");
  app.add_option("--encoder", encoder, "mdx checkpoint whose encoder gives the features (a distance in its "
                                       "representation space)");
  app.add_option("--pool", pool, "--encoder: cls | mean | cls+mean")->capture_default_str();
  add_weights_option(app, weights, "with --encoder: raw (as UMD's representation FDs) or ema");
  app.add_option("--size", size, "--extractor: images are resized (bilinear) to size x size")->capture_default_str();
  app.add_option("--batch", batch, "images per forward pass")->capture_default_str();
  app.add_option("--save-stats", save_stats, "write mu, sigma, count and the extractor's identity of the "
                                             "image-table input to this file (HDF5)");
}

void FidOptions::validate() const {
  if (!extractor.empty() && !encoder.empty()) throw UsageError("give one of --extractor and --encoder, not both");
  parse_pool(pool);
  if (size < 1 || size > 4096) throw UsageError("--size must lie in [1, 4096]");
  if (batch < 1) throw UsageError("--batch must be at least 1");
  if (inputs.size() == 1 && save_stats.empty())
    throw UsageError("one input: give a second one to compare with, or --save-stats FILE to save its statistics");
}

// ---------------------------------------------------------------------------------------------
// Extractor identity and saved statistics.

std::string ExtractorIdentity::describe() const {
  const std::string sha = sha256.substr(0, 12);
  if (kind == "torchscript")
    return fmt::format("TorchScript '{}' (sha256 {}..., {}x{} input, {} features)", path, sha, size, size, features);
  return fmt::format("the encoder of '{}' (sha256 {}..., step {}, {} pooling, {} weights, {} features)", path, sha,
                     step, pool, weights, features);
}

std::string ExtractorIdentity::mismatch(const ExtractorIdentity& o) const {
  if (kind != o.kind) return fmt::format("kind {} vs {}", kind, o.kind);
  if (sha256 != o.sha256) return fmt::format("different files: sha256 {}... vs {}...", sha256.substr(0, 12),
                                             o.sha256.substr(0, 12));
  if (kind == "torchscript" && size != o.size) return fmt::format("input size {} vs {}", size, o.size);
  if (kind != "torchscript" && pool != o.pool) return fmt::format("pooling {} vs {}", pool, o.pool);
  if (kind != "torchscript" && weights != o.weights) return fmt::format("{} vs {} weights", weights, o.weights);
  if (features != o.features) return fmt::format("{} vs {} features", features, o.features);
  return "";
}

std::string ExtractorIdentity::json() const {
  std::string s = fmt::format("{{\"kind\": {}, \"path\": {}, \"bytes\": {}, \"sha256\": {}, \"features\": {}",
                              json_string(kind), json_string(path), bytes, json_string(sha256), features);
  if (kind == "torchscript") s += fmt::format(", \"size\": {}", size);
  else s += fmt::format(", \"step\": {}, \"pool\": {}, \"weights\": {}", step, json_string(pool), json_string(weights));
  return s + fmt::format(", \"preprocessing\": {}}}", json_string(preprocessing));
}

void ExtractorIdentity::save(hid_t file) const {
  h5::write_attr(file, "extractor_kind", kind);
  h5::write_attr(file, "extractor_path", path);
  h5::write_attr(file, "extractor_sha256", sha256);
  h5::write_attr(file, "extractor_bytes", bytes);
  h5::write_attr(file, "extractor_features", features);
  h5::write_attr(file, "extractor_preprocessing", preprocessing);
  if (kind == "torchscript") {
    h5::write_attr(file, "extractor_size", size);
  } else {
    h5::write_attr(file, "extractor_step", step);
    h5::write_attr(file, "extractor_pool", pool);
    h5::write_attr(file, "extractor_weights", weights);
  }
}

ExtractorIdentity ExtractorIdentity::load(hid_t file, const std::string& path) {
  auto need = [&](const char* name) {
    if (!h5::has_attr(file, name))
      throw Error(fmt::format("'{}' lacks the attribute '{}': statistics must say which extractor made them "
                              "(as mdx-fid --save-stats writes)", path, name));
  };
  auto text = [&](const char* name) { return h5::has_attr(file, name) ? h5::read_attr_string(file, name) : ""; };
  auto integer = [&](const char* name, int64_t fallback) {
    return h5::has_attr(file, name) ? h5::read_attr_int(file, name) : fallback;
  };
  ExtractorIdentity id;
  need("extractor_kind");
  need("extractor_sha256");
  id.kind = h5::read_attr_string(file, "extractor_kind");
  if (id.kind != "torchscript" && id.kind != "mdx-encoder")
    throw Error(fmt::format("'{}': extractor_kind '{}' is neither torchscript nor mdx-encoder", path, id.kind));
  id.sha256 = h5::read_attr_string(file, "extractor_sha256");
  id.path = text("extractor_path");
  id.preprocessing = text("extractor_preprocessing");
  id.pool = text("extractor_pool");
  id.weights = text("extractor_weights");
  id.bytes = integer("extractor_bytes", 0);
  id.features = integer("extractor_features", 0);
  id.size = integer("extractor_size", 0);
  id.step = integer("extractor_step", -1);
  return id;
}

FeatureStats FeatureStats::load(const std::string& path) {
  h5::Handle f = h5::open_file(path);
  FeatureStats s;
  auto matrix = [&](const char* name, size_t rank) {
    h5::Handle ds = h5::open_dataset(f, name, path);
    h5::DatasetInfo in = h5::info(ds);
    if (in.type_class != H5T_FLOAT || in.dims.size() != rank)
      throw Error(fmt::format("'{}': dataset '{}' must be a float{} array", path, name, rank == 1 ? " [F]" : " [F,F]"));
    // Extractors give at most a few thousand features (Inception 2048): a larger declared shape is
    // damage, not a 28 GB allocation.
    if (in.dims[0] > 16384 || (rank == 2 && in.dims[1] > 16384))
      throw Error(fmt::format("'{}': dataset '{}' declares {} features, more than mdx reads (16384)", path, name,
                              in.dims[0]));
    std::vector<int64_t> shape(in.dims.begin(), in.dims.end());
    at::Tensor t = at::empty(shape, at::kDouble);
    h5::read_all(ds, H5T_NATIVE_DOUBLE, t.data_ptr<double>(), fmt::format("'{}' dataset '{}'", path, name));
    return t;
  };
  s.mu = matrix("mu", 1);
  s.sigma = matrix("sigma", 2);
  const int64_t F = s.mu.size(0);
  if (s.sigma.size(0) != F || s.sigma.size(1) != F)
    throw Error(fmt::format("'{}': sigma is [{}] but mu has {} values (expected [{},{}])", path,
                            fmt::join(s.sigma.sizes(), ","), F, F, F));
  if (!at::isfinite(s.mu).all().item<bool>() || !at::isfinite(s.sigma).all().item<bool>())
    throw Error(fmt::format("'{}': mu or sigma holds NaN or infinite values", path));
  // A covariance is symmetric positive semi-definite; another matrix gives a meaningless (even
  // negative) distance. Rounding is allowed for: relative asymmetry below 1e-6, and negative
  // eigenvalues above -1e-6 of the largest or -1e-10 (a degenerate feature's variance computes
  // as a tiny negative number).
  {
    at::Tensor sig = s.sigma.to(at::kDouble);
    const double scale = std::max(sig.abs().max().item<double>(), 1e-300);
    if ((sig - sig.t()).abs().max().item<double>() > 1e-6 * scale)
      throw Error(fmt::format("'{}': sigma is not symmetric, so not a covariance", path));
    at::Tensor ev = at::linalg_eigvalsh(sig);
    const double low = ev.min().item<double>(), high = ev.max().item<double>();
    if (low < -std::max(1e-6 * high, 1e-10))
      throw Error(fmt::format("'{}': sigma has a negative eigenvalue ({:.3g}; largest {:.3g}), so it is not a "
                              "covariance", path, low, high));
  }
  if (h5::has_attr(f, "count")) {
    s.count = h5::read_attr_int(f, "count");
  } else if (h5::has(f, "count")) {  // h5py users may write it as a scalar dataset
    h5::Handle ds = h5::open_dataset(f, "count", path);
    h5::read_all(ds, H5T_NATIVE_INT64, &s.count, fmt::format("'{}' dataset 'count'", path));
  } else {
    throw Error(fmt::format("'{}' lacks 'count' (the number of images of the statistics)", path));
  }
  if (s.count < 2) throw Error(fmt::format("'{}': statistics of {} images; a covariance needs at least 2", path, s.count));
  s.extractor = ExtractorIdentity::load(f, path);
  if (s.extractor.features != 0 && s.extractor.features != F)
    throw Error(fmt::format("'{}': extractor_features is {} but mu has {} values", path, s.extractor.features, F));
  s.extractor.features = F;
  return s;
}

void FeatureStats::save(hid_t file) const {
  const auto F = static_cast<hsize_t>(mu.size(0));
  at::Tensor m = mu.to(at::kDouble).contiguous(), c = sigma.to(at::kDouble).contiguous();
  h5::write(file, "mu", H5T_NATIVE_DOUBLE, {F}, m.data_ptr<double>());
  h5::write(file, "sigma", H5T_NATIVE_DOUBLE, {F, F}, c.data_ptr<double>());
  h5::write_attr(file, "count", count);
  extractor.save(file);
}

// ---------------------------------------------------------------------------------------------
// The Fréchet distance.

namespace {

// One evaluation; an exception from LAPACK (no convergence) counts as a result that is not finite.
// tr sqrt(S1 S2) is the sum of the square roots of the eigenvalues of G^T S2 G for any G with
// G G^T = S1 (G^T S2 G = G^-1 (S1 S2) G where G is invertible; the nonzero spectra of AB and BA
// agree where it is not). G = S1^1/2 from a symmetric eigen-decomposition (negative eigenvalues
// clamped to 0) is the textbook choice; the Cholesky factor of S1, where S1 is positive definite,
// gives the same spectrum (both factorizations are backward stable) at a fraction of the cost: at
// 2048 dimensions an eigen-decomposition with vectors costs about 9x a Cholesky factorization.
double frechet_once(const at::Tensor& diff, const at::Tensor& s1, const at::Tensor& s2) {
  try {
    auto [chol, info] = at::linalg_cholesky_ex(s1);
    at::Tensor g = chol;
    if (info.item<int64_t>() != 0) {  // S1 singular (fewer images than features, constant features)
      auto [w, v] = at::linalg_eigh(s1);
      g = v * w.clamp_min(0.0).sqrt();  // S1^1/2 = g v^T, and g^T S2 g has the spectrum of S1^1/2 S2 S1^1/2
    }
    at::Tensor m = at::matmul(g.t(), at::matmul(s2, g));
    m = (m + m.t()).mul_(0.5);  // symmetric up to rounding; eigvalsh reads one triangle
    const double tr_covmean = at::linalg_eigvalsh(m).clamp_min(0.0).sqrt().sum().item<double>();
    return diff.dot(diff).item<double>() + s1.trace().item<double>() + s2.trace().item<double>() - 2 * tr_covmean;
  } catch (const c10::Error&) {
    return std::nan("");
  }
}

}  // namespace

double frechet_distance(const at::Tensor& mu1, const at::Tensor& sigma1, const at::Tensor& mu2,
                        const at::Tensor& sigma2, double eps) {
  const int64_t F = mu1.numel();
  if (mu1.dim() != 1 || mu2.dim() != 1 || mu2.numel() != F)
    throw Error(fmt::format("Fréchet distance: means of [{}] and [{}] features; expected two [F]",
                            fmt::join(mu1.sizes(), ","), fmt::join(mu2.sizes(), ",")));
  for (const at::Tensor* s : {&sigma1, &sigma2})
    if (s->dim() != 2 || s->size(0) != F || s->size(1) != F)
      throw Error(fmt::format("Fréchet distance: a covariance of shape [{}] for {} features; expected [{},{}]",
                              fmt::join(s->sizes(), ","), F, F, F));
  at::NoGradGuard ng;
  auto f64 = [](const at::Tensor& t) { return t.to(at::kCPU, at::kDouble); };
  at::Tensor diff = f64(mu1) - f64(mu2);
  at::Tensor s1 = f64(sigma1), s2 = f64(sigma2);
  s1 = (s1 + s1.t()).mul_(0.5);
  s2 = (s2 + s2.t()).mul_(0.5);
  if (!at::isfinite(diff).all().item<bool>() || !at::isfinite(s1).all().item<bool>() ||
      !at::isfinite(s2).all().item<bool>())
    throw Error("Fréchet distance: the means or covariances hold NaN or infinite values");
  double d = frechet_once(diff, s1, s2);
  if (!std::isfinite(d)) {
    warn("Fréchet distance is not finite (singular product); adding {} to the diagonal of both covariances", eps);
    at::Tensor offset = at::eye(F, at::kDouble).mul_(eps);
    d = frechet_once(diff, s1 + offset, s2 + offset);
    if (!std::isfinite(d)) throw Error("Fréchet distance is not finite, even with eps added to the covariances");
  }
  return d;
}

// ---------------------------------------------------------------------------------------------
// Feature extractors: uint8 images [B,H,W,C] (CPU) -> float32 features [B,F] (CPU).

namespace {

class Extractor {
 public:
  virtual ~Extractor() = default;
  // Throws when the images of `table` cannot go through this extractor.
  virtual void check(const ImageTable& table, const std::string& path) const = 0;
  virtual at::Tensor operator()(const at::Tensor& images) = 0;
  const ExtractorIdentity& identity() const { return id_; }

 protected:
  ExtractorIdentity id_;
};

void identify_file(ExtractorIdentity& id, const std::string& path) {
  id.path = path;
  id.sha256 = sha256_file(path);
  std::ifstream in(path, std::ios::binary | std::ios::ate);
  id.bytes = static_cast<int64_t>(in.tellg());
}

// pytorch-fid's preprocessing, done here so that the module is the bare network: RGB, [0,1],
// bilinear resize (align_corners false), then [-1,1] (InceptionV3(resize_input=False,
// normalize_input=False) expects exactly this).
class TorchScriptExtractor : public Extractor {
 public:
  TorchScriptExtractor(const std::string& path, int64_t size, const at::Device& device)
      : size_(size), device_(device) {
    identify_file(id_, path);  // also: a missing file is a plain "cannot read"
    module_ = load_script(path, device);
    module_.eval();
    id_.kind = "torchscript";
    id_.size = size;
    id_.preprocessing = fmt::format("RGB (grayscale replicated), x/255, bilinear resize to {0}x{0} "
                                    "(align_corners=false), 2x-1 (range [-1, 1]), NCHW float32", size);
    // One black image tells the feature width before any table is read.
    id_.features = (*this)(at::zeros({1, size, size, 3}, at::kByte)).size(1);
  }

  void check(const ImageTable& table, const std::string& path) const override {
    if (table.channels() != 1 && table.channels() != 3)
      throw Error(fmt::format("'{}' holds {}-channel images; the extractor '{}' takes RGB (tables of 1 or 3 "
                              "channels)", path, table.channels(), id_.path));
  }

  at::Tensor operator()(const at::Tensor& images) override {
    const int64_t B = images.size(0);
    at::Tensor x = images.to(device_).permute({0, 3, 1, 2}).contiguous().to(at::kFloat).div(255.0);
    if (x.size(1) == 1) x = x.repeat({1, 3, 1, 1});
    namespace F = torch::nn::functional;
    x = F::interpolate(x, F::InterpolateFuncOptions()
                              .size(std::vector<int64_t>{size_, size_})
                              .mode(torch::kBilinear)
                              .align_corners(false));
    x = x.mul(2.0).sub(1.0);
    c10::IValue out;
    try {
      out = module_.forward({x});
    } catch (const c10::Error& e) {
      throw Error(fmt::format("the module '{}' failed on input [{},3,{},{}]: {}", id_.path, B, size_, size_,
                              raised_message(e.what_without_backtrace())));
    } catch (const std::exception& e) {  // an exception raised by the module's code (JITException)
      throw Error(fmt::format("the module '{}' failed on input [{},3,{},{}]: {}", id_.path, B, size_, size_,
                              raised_message(e.what())));
    }
    // pytorch-fid's InceptionV3 returns a list of blocks; take the first.
    if (out.isTuple() && !out.toTupleRef().elements().empty()) out = out.toTupleRef().elements()[0];
    else if (out.isList() && out.toListRef().size() > 0) out = out.toListRef()[0];
    if (!out.isTensor())
      throw Error(fmt::format("the module '{}' returned a {}; expected a tensor [B,F] (or a tuple or list whose "
                              "first element is one)", id_.path, out.tagKind()));
    at::Tensor f = out.toTensor();
    const bool pooled = f.dim() == 4 && f.size(2) == 1 && f.size(3) == 1;
    if (!(f.dim() == 2 || pooled) || f.size(0) != B || f.size(1) == 0)
      throw Error(fmt::format("the module '{}' returned features of shape [{}] for {} images; expected [{},F] or "
                              "[{},F,1,1]", id_.path, fmt::join(f.sizes(), ","), B, B, B));
    return f.reshape({B, -1}).to(at::kCPU, at::kFloat);
  }

 private:
  int64_t size_;
  at::Device device_;
  torch::jit::Module module_;
};

class EncoderExtractor : public Extractor {
 public:
  EncoderExtractor(const std::string& path, const std::string& pool, Weights weights, const at::Device& device,
                   bool bf16)
      : model_(load_trained_model(path, weights, device)), encoder_(model_, parse_pool(pool)) {
    model_.bf16 = bf16;
    identify_file(id_, path);
    id_.kind = "mdx-encoder";
    id_.step = model_.step;
    id_.pool = pool;
    id_.weights = model_.ema ? "ema" : "raw";
    id_.features = encoder_.dim();
    const ModelConfig& c = model_.config;
    id_.preprocessing = fmt::format("the model's own: {}x{}x{} images at [-1, 1], clean and unmasked (time index "
                                    "0), {} pooling", c.height, c.width, c.channels, pool);
  }

  void check(const ImageTable& table, const std::string& path) const override {
    const ModelConfig& c = model_.config;
    if (table.height() != c.height || table.width() != c.width || table.channels() != c.channels)
      throw Error(fmt::format("'{}' holds {}x{}x{} images; the encoder of '{}' takes {}x{}x{}", path, table.height(),
                              table.width(), table.channels(), id_.path, c.height, c.width, c.channels));
  }

  at::Tensor operator()(const at::Tensor& images) override { return encoder_(images); }
  const std::vector<std::string>& history() const { return model_.history; }

 private:
  TrainedModel model_;
  FeatureEncoder encoder_;
};

// One side of the comparison: an image table, or statistics saved earlier.
struct Side {
  std::string path;
  std::unique_ptr<ImageTable> table;
  FeatureStats stats;  // loaded, or computed from the table
};

Side open_side(const std::string& path) {
  Side s;
  s.path = path;
  bool images = false, mu = false;
  {
    h5::Handle f = h5::open_file(path);
    images = h5::has(f, "images");
    mu = h5::has(f, "mu") && h5::has(f, "sigma");
  }
  if (images) {
    s.table = std::make_unique<ImageTable>(std::vector<std::string>{path});
    if (s.table->size() < 2)
      throw Error(fmt::format("'{}' holds {} image{}; a covariance needs at least 2", path, s.table->size(),
                              s.table->size() == 1 ? "" : "s"));
  } else if (mu) {
    s.stats = FeatureStats::load(path);
  } else {
    throw Error(fmt::format("'{}' is neither an image table (dataset 'images') nor FID statistics (datasets 'mu' "
                            "and 'sigma')", path));
  }
  return s;
}

FeatureStats table_stats(const Side& side, Extractor& extract, int64_t batch) {
  const ImageTable& t = *side.table;
  const int64_t n = t.size(), F = extract.identity().features;
  log("'{}': {} images of {}x{}x{} -> {} features", side.path, n, t.height(), t.width(), t.channels(), F);
  CovarianceAccumulator acc(F);
  at::Tensor images = at::empty({batch, t.height(), t.width(), t.channels()}, at::kByte);
  Progress progress(fmt::format("features of {}", side.path), n, "images");
  for (int64_t start = 0; start < n; start += batch) {
    const int64_t b = std::min(batch, n - start);
    t.read(start, b, images.data_ptr<uint8_t>(), nullptr);
    at::Tensor f = extract(images.slice(0, 0, b));
    if (f.size(1) != F)
      throw Error(fmt::format("the extractor gave {} features for rows {}..{} of '{}', {} before", f.size(1), start,
                              start + b - 1, side.path, F));
    if (!at::isfinite(f).all().item<bool>())
      throw Error(fmt::format("the extractor '{}' gives NaN or infinite features for rows {}..{} of '{}'",
                              extract.identity().path, start, start + b - 1, side.path));
    acc.add(f);
    progress.advance(b);
  }
  progress.finish();
  FeatureStats s;
  s.mu = acc.mean();
  s.sigma = acc.covariance(true);
  s.count = acc.count();
  s.extractor = extract.identity();
  return s;
}

FidInput report_input(const Side& s) { return {s.path, s.table ? "images" : "stats", s.stats.count}; }

std::string input_json(const FidInput& in) {
  return fmt::format("{{\"path\": {}, \"type\": {}, \"count\": {}}}", json_string(in.path), json_string(in.type),
                     in.count);
}

}  // namespace

std::string FidReport::to_json() const {
  std::string inputs_json;
  for (size_t i = 0; i < inputs.size(); ++i) inputs_json += (i ? ", " : "") + input_json(inputs[i]);
  std::string s = "{";
  if (fid)
    s += fmt::format("\"fid\": {}, \"inputs\": [{}]", *fid, inputs_json);
  else
    s += fmt::format("\"fid\": null, \"note\": {}, \"inputs\": [{}]",
                     json_string("one input: statistics saved, no distance computed"), inputs_json);
  if (!stats.empty()) s += fmt::format(", \"stats\": {}", json_string(stats));
  s += fmt::format(", \"extractor\": {}, \"device\": {}, \"mdx_version\": {}, \"mdx_commit\": {}}}", extractor.json(),
                   json_string(device), json_string(mdx_version), json_string(mdx_commit));
  return s;
}

FidReport fid(const FidOptions& opt, Provenance& prov) {
  opt.validate();
  FilePlan().read(opt.inputs).read(opt.extractor, "--extractor").read(opt.encoder, "--encoder")
      .write(opt.save_stats, "--save-stats").check();
  torch::NoGradGuard no_grad;
  std::unique_ptr<AtomicOutput> out;
  if (!opt.save_stats.empty()) out = std::make_unique<AtomicOutput>(opt.save_stats, opt.inputs);

  // Everything that can be refused is checked before any image goes through a network.
  std::vector<Side> sides;
  for (const auto& path : opt.inputs) sides.push_back(open_side(path));
  std::vector<const Side*> tables;
  for (const auto& s : sides)
    if (s.table) tables.push_back(&s);
  const bool has_extractor = !opt.extractor.empty() || !opt.encoder.empty();
  if (!tables.empty() && !has_extractor)
    throw UsageError(fmt::format("'{}' is an image table: give --extractor FILE.pt (Inception for standard FID) or "
                                 "--encoder CHECKPOINT", tables[0]->path));
  if (!opt.save_stats.empty() && tables.size() != 1)
    throw UsageError(fmt::format("--save-stats saves the statistics of one image-table input; {} given",
                                 tables.size()));
  if (sides.size() == 2 && !sides[0].table && !sides[1].table) {
    const ExtractorIdentity &a = sides[0].stats.extractor, &b = sides[1].stats.extractor;
    if (a.features != b.features)
      throw Error(fmt::format("'{}' holds statistics of {} features, '{}' of {}", sides[0].path, a.features,
                              sides[1].path, b.features));
    const std::string why = a.mismatch(b);
    if (!why.empty())
      throw Error(fmt::format("'{}' comes from {}, '{}' from {} ({}): features of different extractors cannot be "
                              "compared", sides[0].path, a.describe(), sides[1].path, b.describe(), why));
  }

  std::unique_ptr<Extractor> extract;
  const at::Device device(prov.device);
  if (!opt.extractor.empty()) {
    extract = std::make_unique<TorchScriptExtractor>(opt.extractor, opt.size, device);
    prov.add_input(opt.extractor);
  } else if (!opt.encoder.empty()) {
    auto e = std::make_unique<EncoderExtractor>(opt.encoder, opt.pool, opt.weights, device, prov.precision == "bf16");
    prov.add_input(opt.encoder, e->history());
    extract = std::move(e);
  }
  if (extract) {
    const ExtractorIdentity& id = extract->identity();
    log("extractor: {}", id.describe());
    for (const auto& s : sides) {
      if (s.table) {
        extract->check(*s.table, s.path);
        continue;
      }
      if (s.stats.extractor.features != id.features)
        throw Error(fmt::format("'{}' holds statistics of {} features; {} gives {}", s.path,
                                s.stats.extractor.features, id.describe(), id.features));
      const std::string why = s.stats.extractor.mismatch(id);
      if (!why.empty())
        throw Error(fmt::format("'{}' comes from {}, but the extractor now given is {} ({}): features of different "
                                "extractors cannot be compared", s.path, s.stats.extractor.describe(), id.describe(),
                                why));
    }
  }

  for (auto& s : sides) {
    if (s.table) {
      prov.add_input(s.path, s.table->history());
      if (&s != &sides[0] && sides[0].table && same_file(sides[0].path, s.path)) {
        s.stats = sides[0].stats;  // a table against itself: its features once
        continue;
      }
      s.stats = table_stats(s, *extract, opt.batch);
    } else {
      h5::Handle f = h5::open_file(s.path);
      prov.add_input(s.path, h5::read_history(f));
    }
  }
  const ExtractorIdentity& id = extract ? extract->identity() : sides[0].stats.extractor;

  if (out) {
    const Side& s = *tables[0];
    h5::Handle f = h5::create_file(out->temp_path());
    s.stats.save(f);
    h5::write_attr(f, "source", s.path);
    h5::write_provenance(f, prov);
    h5::close_output(f, opt.save_stats);
    out->commit();
    log("wrote {} ({} images, {} features)", opt.save_stats, s.stats.count, id.features);
  }

  FidReport report;
  if (sides.size() == 2) {
    // A distance: rounding can leave it a hair below 0 (-1e-14 for identical statistics).
    const double d = std::max(0.0, frechet_distance(sides[0].stats.mu, sides[0].stats.sigma, sides[1].stats.mu,
                                                    sides[1].stats.sigma));
    log("Fréchet distance {:.6f} ({} vs {} images)", d, sides[0].stats.count, sides[1].stats.count);
    report.fid = d;
  }
  for (const auto& s : sides) report.inputs.push_back(report_input(s));
  report.stats = opt.save_stats;
  report.extractor = id;
  report.device = prov.device;
  report.mdx_version = version(), report.mdx_commit = git_commit();
  return report;
}

}  // namespace mdx
