#include "mdx/train/checkpoint.h"

#include <fmt/format.h>
#include <fmt/ranges.h>

#include "mdx/corrupt/objective.h"
#include "mdx/io/hdf5.h"
#include "mdx/model/config.h"
#include "mdx/tokenize/tokenizer.h"
#include "mdx/util/error.h"
#include "mdx/util/output.h"

namespace mdx {

namespace {

void write_tensors(hid_t file, const std::string& group, const std::map<std::string, at::Tensor>& tensors) {
  h5::Handle g(H5Gcreate2(file, group.c_str(), H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT));
  if (g.get() < 0) throw Error("cannot create group '" + group + "'");
  for (const auto& [name, t] : tensors) {
    at::Tensor c = t.detach().to(at::kCPU).to(at::kFloat).contiguous();
    std::vector<hsize_t> dims(c.sizes().begin(), c.sizes().end());
    h5::write(g, name, H5T_NATIVE_FLOAT, dims, c.data_ptr<float>());
  }
}

// Names of a group's members, by index: the same calls in HDF5 1.10 and 1.12+.
std::vector<std::string> member_names(hid_t group) {
  H5G_info_t info;
  H5Gget_info(group, &info);
  std::vector<std::string> names;
  for (hsize_t i = 0; i < info.nlinks; ++i) {
    ssize_t n = H5Lget_name_by_idx(group, ".", H5_INDEX_NAME, H5_ITER_INC, i, nullptr, 0, H5P_DEFAULT);
    std::string name(static_cast<size_t>(n), '\0');
    H5Lget_name_by_idx(group, ".", H5_INDEX_NAME, H5_ITER_INC, i, name.data(), name.size() + 1, H5P_DEFAULT);
    names.push_back(name);
  }
  return names;
}

herr_t collect_attribute(hid_t, const char* name, const H5A_info_t*, void* data) {
  static_cast<std::vector<std::string>*>(data)->emplace_back(name);
  return 0;
}

std::map<std::string, at::Tensor> read_tensors(hid_t file, const std::string& group, const std::string& path) {
  std::map<std::string, at::Tensor> out;
  if (!h5::has(file, group)) return out;
  h5::Handle g(H5Gopen2(file, group.c_str(), H5P_DEFAULT));
  for (const auto& name : member_names(g)) {
    h5::Handle ds = h5::open_dataset(g, name, path);
    h5::DatasetInfo i = h5::info(ds);
    if (i.type_class != H5T_FLOAT) throw Error(fmt::format("'{}': {}/{} is not a float dataset", path, group, name));
    std::vector<int64_t> shape(i.dims.begin(), i.dims.end());
    at::Tensor t = at::empty(shape, at::kFloat);
    h5::read_all(ds, H5T_NATIVE_FLOAT, t.data_ptr<float>(), "'" + group + "/" + name + "' in '" + path + "'");
    // Training stops at a non-finite loss before it saves, so NaN here is damage; carried through
    // --resume it would poison every later step, through mdx-embed every embedding.
    if (!at::isfinite(t).all().item<bool>())
      throw Error(fmt::format("'{}': {}/{} holds NaN or infinite values; the file is damaged", path, group, name));
    out[name] = t;
  }
  return out;
}

}  // namespace

void save_checkpoint(const std::string& path, const CheckpointState& s, const Provenance& prov,
                     const std::vector<std::string>& inputs) {
  AtomicOutput out(path, inputs);
  h5::LockGuard lock;  // a streamed table may be read ahead meanwhile
  h5::Handle f = h5::create_file(out.temp_path());
  write_tensors(f, "model", s.model);
  write_tensors(f, "ema", s.ema);
  {
    h5::Handle g(H5Gcreate2(f, "optimizer", H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT));
    write_tensors(g, "exp_avg", s.exp_avg);
    write_tensors(g, "exp_avg_sq", s.exp_avg_sq);
    h5::Handle steps(H5Gcreate2(g, "step", H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT));
    for (const auto& [name, v] : s.adam_steps) h5::write_attr(steps, name, v);
  }
  {
    h5::Handle g(H5Gcreate2(f, "config", H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT));
    for (const auto& [k, v] : s.config) h5::write_attr(g, k, v);
  }
  if (s.tokenizer) save_tokenizer(f, "tokenizer", *s.tokenizer);
  if (s.latent) save_tokenizer(f, "latent_tokenizer", *s.latent);
  if (s.rng.defined()) {
    at::Tensor r = s.rng.contiguous();
    h5::write(f, "rng", H5T_NATIVE_UINT8, {static_cast<hsize_t>(r.numel())}, r.data_ptr<uint8_t>());
  }
  h5::write_attr(f, "step", s.step);
  h5::write_provenance(f, prov);
  h5::close_output(f, path);
  out.commit(true);  // a checkpoint is complete state, also (especially) when written on a signal
}

CheckpointState load_checkpoint(const std::string& path, bool weights_only) {
  h5::Handle f = h5::open_file(path);
  if (!h5::has(f, "config") || !h5::has(f, "model"))
    throw Error("'" + path + "' is not an mdx checkpoint (no 'config' and 'model' groups)");
  CheckpointState s;
  s.model = read_tensors(f, "model", path);
  s.ema = read_tensors(f, "ema", path);
  s.step = h5::read_attr_int(f, "step");
  if (s.step < 0) throw Error(fmt::format("'{}': its step is {}; the file is damaged", path, s.step));
  s.history = h5::read_history(f);
  {
    h5::Handle g(H5Gopen2(f, "config", H5P_DEFAULT));
    std::vector<std::string> names;
    H5Aiterate2(g, H5_INDEX_NAME, H5_ITER_INC, nullptr, collect_attribute, &names);
    for (const auto& name : names) s.config[name] = h5::read_attr_string(g, name);
  }
  // The configuration is the checkpoint's data: inconsistent, it is a damaged file (exit 1, naming
  // it), not a usage error of the command that reads it.
  try {
    (void)ModelConfig::from_map(s.config);
    (void)objective_from_config(s.config);
  } catch (const std::runtime_error& e) {
    throw Error(fmt::format("'{}': its configuration is damaged: {}", path, e.what()));
  }
  for (auto [name, into] : {std::pair{"tokenizer", &s.tokenizer}, std::pair{"latent_tokenizer", &s.latent}}) {
    if (!h5::has(f, name)) continue;
    h5::Handle g(H5Gopen2(f, name, H5P_DEFAULT));
    *into = load_tokenizer(g, fmt::format("the {} of '{}'", name, path));
  }
  if (weights_only) return s;
  if (h5::has(f, "optimizer")) {
    h5::Handle g(H5Gopen2(f, "optimizer", H5P_DEFAULT));
    s.exp_avg = read_tensors(g, "exp_avg", path);
    s.exp_avg_sq = read_tensors(g, "exp_avg_sq", path);
    h5::Handle steps(H5Gopen2(g, "step", H5P_DEFAULT));
    for (const auto& [name, _] : s.exp_avg) s.adam_steps[name] = h5::read_attr_int(steps, name);
  }
  if (h5::has(f, "rng")) {
    h5::Handle ds = h5::open_dataset(f, "rng", path);
    h5::DatasetInfo i = h5::info(ds);
    s.rng = at::empty({static_cast<int64_t>(i.dims[0])}, at::kByte);
    h5::read_all(ds, H5T_NATIVE_UINT8, s.rng.data_ptr<uint8_t>(), "'rng' in '" + path + "'");
  }
  return s;
}

std::vector<std::string> copy_weights(torch::nn::Module& module, const std::map<std::string, at::Tensor>& weights,
                                      const std::string& path, bool strict) {
  at::NoGradGuard no_grad;
  std::vector<std::string> left;
  for (auto& p : module.named_parameters()) {
    auto it = weights.find(p.key());
    if (it == weights.end() || it->second.sizes() != p.value().sizes()) {
      if (!strict) {
        left.push_back(p.key());
        continue;
      }
      if (it == weights.end()) throw Error(fmt::format("'{}' lacks the weights '{}'", path, p.key()));
      throw Error(fmt::format("'{}': '{}' has shape [{}], the configuration implies [{}]", path, p.key(),
                              fmt::join(it->second.sizes(), ","), fmt::join(p.value().sizes(), ",")));
    }
    p.value().copy_(it->second);
  }
  return left;
}

}  // namespace mdx
