#include "mdx/tokenize/pca.h"

#include <CLI/CLI.hpp>
#include <fmt/format.h>
#include <torch/torch.h>

#include <random>

#include "mdx/io/hdf5.h"
#include "mdx/io/image_table.h"
#include "mdx/tokenize/pca_fit.h"
#include "mdx/util/error.h"
#include "mdx/util/log.h"
#include "mdx/util/output.h"
#include "mdx/util/progress.h"

namespace mdx {

double PcaTokenizer::explained_ratio(int64_t d) const {
  double total = explained_variance.sum().item<double>();
  return total > 0 ? explained_variance.slice(0, 0, d).sum().item<double>() / total : 0.0;
}

at::Tensor PcaTokenizer::to_latent(const at::Tensor& patches) const {
  auto v = components.slice(0, 0, dim).to(at::kFloat);
  return at::matmul(patches.to(at::kFloat) - mean.to(at::kFloat), v.t());
}

at::Tensor PcaTokenizer::from_latent(const at::Tensor& latents) const {
  auto v = components.slice(0, 0, dim).to(at::kFloat);
  return at::matmul(latents.to(at::kFloat), v) + mean.to(at::kFloat);
}

std::string PcaTokenizer::describe() const {
  return fmt::format("pca (patch {}, {} channels, d = {} of {}, {:.4f} of the variance)", patch, channels, dim,
                     token_dim(), explained_ratio(dim));
}

TokenGeometry PcaTokenizer::geometry(int64_t height, int64_t width, int64_t image_channels) const {
  if (image_channels != channels)
    throw Error(fmt::format("the PCA tokenizer is for {} channels, the images have {}", channels, image_channels));
  TokenGeometry g = PixelTokenizer(patch).geometry(height, width, image_channels);
  g.values = dim;
  return g;
}

at::Tensor PcaTokenizer::encode(const at::Tensor& images) const {
  return to_latent(PixelTokenizer(patch).encode(images));
}

at::Tensor PcaTokenizer::decode(const at::Tensor& tokens, const TokenGeometry& g) const {
  TokenGeometry pixels = g;
  pixels.values = token_dim();
  return PixelTokenizer(patch).decode(from_latent(tokens), pixels);
}

void PcaTokenizer::hash_contents(const std::function<void(const void*, size_t)>& add) const {
  for (int64_t v : {patch, channels, dim}) add(&v, sizeof v);
  for (const at::Tensor* t : {&mean, &components, &explained_variance}) {
    at::Tensor c = t->to(at::kDouble).contiguous();
    add(c.data_ptr<double>(), static_cast<size_t>(c.numel()) * sizeof(double));
  }
}

std::shared_ptr<const PcaTokenizer> PcaTokenizer::load(hid_t f, const std::string& path) {
  auto t = std::make_shared<PcaTokenizer>();
  for (const char* a : {"patch", "channels", "dim"})
    if (!h5::has_attr(f, a)) throw Error(path + " is not a PCA tokenizer: no attribute '" + a + "'");
  t->patch = h5::read_attr_int(f, "patch");
  t->channels = h5::read_attr_int(f, "channels");
  t->dim = h5::read_attr_int(f, "dim");
  const int64_t D = t->token_dim();
  if (t->patch < 1 || t->channels < 1 || t->dim < 1 || t->dim > D || t->patch > 4096 || t->channels > 4096)
    throw Error(fmt::format("{}: inconsistent tokenizer attributes patch={} channels={} dim={}", path, t->patch,
                            t->channels, t->dim));
  auto read = [&](const char* name, std::vector<int64_t> shape) {
    h5::Handle ds = h5::open_dataset(f, name, path);
    h5::DatasetInfo i = h5::info(ds);
    std::vector<int64_t> dims(i.dims.begin(), i.dims.end());
    if (dims != shape || i.type_class != H5T_FLOAT)
      throw Error(fmt::format("{}: dataset '{}' has shape [{}], expected float [{}]", path, name,
                              fmt::join(dims, ","), fmt::join(shape, ",")));
    at::Tensor out = at::empty(shape, at::kDouble);
    h5::read_all(ds, H5T_NATIVE_DOUBLE, out.data_ptr<double>(), std::string("'") + name + "' in " + path);
    if (!at::isfinite(out).all().item<bool>()) throw Error(fmt::format("{}: dataset '{}' is not finite", path, name));
    return out;
  };
  t->mean = read("mean", {D});
  t->components = read("components", {D, D});
  t->explained_variance = read("explained_variance", {D});
  return t;
}

void PcaTokenizer::save(hid_t file) const {
  const auto D = static_cast<hsize_t>(token_dim());
  at::Tensor m = mean.contiguous(), c = components.contiguous(), e = explained_variance.contiguous();
  h5::write(file, "mean", H5T_NATIVE_DOUBLE, {D}, m.data_ptr<double>());
  h5::write(file, "components", H5T_NATIVE_DOUBLE, {D, D}, c.data_ptr<double>());
  h5::write(file, "explained_variance", H5T_NATIVE_DOUBLE, {D}, e.data_ptr<double>());
  h5::write_attr(file, "kind", kind());
  h5::write_attr(file, "patch", patch);
  h5::write_attr(file, "channels", channels);
  h5::write_attr(file, "dim", dim);
  h5::write_attr(file, "explained_variance_ratio", explained_ratio(dim));
  h5::write_attr(file, "pixel_scale", std::string("[-1, 1]: x / 127.5 - 1"));
  h5::write_attr(file, "patch_layout", std::string("row-major (y, x, channel) within a p x p patch"));
}

PcaTokenizer fit_pca(const CovarianceAccumulator& acc, bool center, int64_t patch, int64_t channels, int64_t dim,
                     double variance) {
  at::Tensor cov = acc.covariance(center);
  auto [values, vectors] = at::linalg_eigh(cov);  // ascending, columns
  values = values.flip(0).clamp_min(0.0);          // rounding can leave tiny negative values
  at::Tensor comps = vectors.flip(1).t().contiguous();
  // Deterministic sign: the largest-magnitude entry of each component is positive.
  at::Tensor idx = comps.abs().argmax(1, true);
  at::Tensor sign = comps.gather(1, idx).sign();
  sign.masked_fill_(sign == 0, 1.0);
  comps.mul_(sign);
  PcaTokenizer t;
  t.patch = patch;
  t.channels = channels;
  t.mean = center ? acc.mean() : at::zeros({patch * patch * channels}, at::kDouble);
  t.components = comps;
  t.explained_variance = values.contiguous();
  const int64_t D = t.token_dim();
  if (dim > 0) {
    t.dim = std::min(dim, D);
  } else {
    at::Tensor cum = values.cumsum(0) / values.sum().clamp_min(1e-300);
    t.dim = std::min<int64_t>(D, (cum < variance - 1e-12).sum().item<int64_t>() + 1);
  }
  return t;
}

void PcaFitOptions::add_to(CLI::App& app) {
  app.add_option("inputs", inputs, "image table(s) (HDF5), read as one table")->required();
  app.add_option("-o,--output", output, "tokenizer file to write (HDF5)")->required();
  app.add_option("--patch", patch, "patch size p: a token is p x p x C pixels")->capture_default_str();
  app.add_option("--dim", dim, "latent dimension d (0: the smallest d reaching --variance)")->capture_default_str();
  app.add_option("--variance", variance, "explained-variance ratio that chooses d when --dim is 0")
      ->capture_default_str();
  app.add_option("--samples", samples, "random patches to fit on (0: every patch of every image)")
      ->capture_default_str();
  app.add_flag("--no-center", no_center, "do not subtract the mean patch (uncentred second moments)");
  app.add_option("--chunk", chunk, "images read per step")->capture_default_str();
}

void PcaFitOptions::validate() const {
  if (patch < 1) throw UsageError("--patch must be at least 1");
  if (dim < 0) throw UsageError("--dim must be >= 0");
  if (!(variance > 0 && variance <= 1)) throw UsageError("--variance must be in (0, 1]");
  if (samples < 0 || samples == 1) throw UsageError("--samples must be 0 (every patch) or at least 2");
  if (chunk < 1) throw UsageError("--chunk must be at least 1");
}

void pca_fit(const PcaFitOptions& opt, Provenance& prov) {
  opt.validate();
  FilePlan().read(opt.inputs).write(opt.output).check();
  ImageTable table(opt.inputs);
  prov.inputs = opt.inputs;
  prov.merge_history(table.history());
  PixelTokenizer(opt.patch).geometry(table.height(), table.width(), table.channels());
  if (table.size() == 0) throw Error(fmt::format("'{}' holds no images", fmt::join(table.paths(), "', '")));
  AtomicOutput out(opt.output, opt.inputs);

  const int64_t L = (table.height() / opt.patch) * (table.width() / opt.patch);
  const int64_t D = opt.patch * opt.patch * table.channels();
  if (opt.dim > D)
    throw Error(fmt::format("--dim {} exceeds the {} values of a {}x{}x{} patch", opt.dim, D, opt.patch, opt.patch,
                            table.channels()));
  const int64_t total = table.size() * L;
  const bool all = opt.samples == 0 || opt.samples >= total;
  int64_t wanted = all ? total : opt.samples, seen = 0, taken = 0;
  log("fitting PCA of {} patches of {}x{}x{} (D = {}) from {} images{}", wanted, opt.patch, opt.patch,
      table.channels(), D, table.size(), all ? " (all)" : ", sampled uniformly without replacement");

  // Selection sampling (Knuth's algorithm S): one pass, in table order, exactly `wanted` patches.
  std::mt19937_64 rng(prov.seed);
  std::uniform_real_distribution<double> uniform(0.0, 1.0);
  CovarianceAccumulator acc(D);
  std::vector<uint8_t> buf(static_cast<size_t>(opt.chunk * table.image_bytes()));
  Progress progress("reading", table.size(), "images");
  for (int64_t start = 0; start < table.size(); start += opt.chunk) {
    int64_t n = std::min(opt.chunk, table.size() - start);
    table.read(start, n, buf.data(), nullptr);
    at::Tensor images = at::from_blob(buf.data(), {n, table.height(), table.width(), table.channels()}, at::kByte);
    at::Tensor patches = PixelTokenizer(opt.patch).encode_as(images, at::kDouble).reshape({n * L, D});
    if (!all) {
      std::vector<int64_t> rows;
      for (int64_t i = 0; i < n * L; ++i, ++seen)
        if (static_cast<double>(total - seen) * uniform(rng) < static_cast<double>(wanted - taken)) {
          rows.push_back(i);
          ++taken;
        }
      patches = patches.index_select(0, at::tensor(rows, at::kLong));
    }
    acc.add(patches);
    progress.advance(n);
  }
  progress.finish();

  PcaTokenizer tok = fit_pca(acc, !opt.no_center, opt.patch, table.channels(), opt.dim, opt.variance);
  log("explained variance at d = {}: {:.4f} of the total ({} of {} components)", tok.dim, tok.explained_ratio(tok.dim),
      tok.dim, D);
  {
    h5::Handle f = h5::create_file(out.temp_path());
    tok.save(f);
    h5::write_attr(f, "samples", acc.count());
    h5::write_attr(f, "centered", static_cast<int64_t>(!opt.no_center));
    h5::write_provenance(f, prov);
    h5::close_output(f, opt.output);
  }
  out.commit();
}

}  // namespace mdx
