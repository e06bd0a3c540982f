#include "mdx/train/checkpoint.h"

#include <fmt/format.h>
#include <fmt/ranges.h>

#include "mdx/corrupt/objective.h"
#include "mdx/io/hdf5.h"
#include "mdx/io/tensors.h"
#include "mdx/model/config.h"
#include "mdx/tokenize/tokenizer.h"
#include "mdx/util/error.h"
#include "mdx/util/output.h"

namespace mdx {

namespace {

herr_t collect_attribute(hid_t, const char* name, const H5A_info_t*, void* data) {
  static_cast<std::vector<std::string>*>(data)->emplace_back(name);
  return 0;
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
  // A tokenizer fit's checkpoint (config `fit`) holds no model: its learner checks its own keys.
  try {
    if (!s.config.count("fit")) {
      (void)ModelConfig::from_map(s.config);
      (void)objective_from_config(s.config);
    }
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
  // Buffers that carry state (a VQ codebook and its EMA statistics) come back too; those the
  // checkpoint lacks (fixed tables a configuration recomputes) keep their values.
  for (auto& b : module.named_buffers()) {
    auto it = weights.find(b.key());
    if (it == weights.end()) continue;
    if (it->second.sizes() != b.value().sizes()) {
      if (!strict) continue;
      throw Error(fmt::format("'{}': '{}' has shape [{}], the configuration implies [{}]", path, b.key(),
                              fmt::join(it->second.sizes(), ","), fmt::join(b.value().sizes(), ",")));
    }
    b.value().copy_(it->second);
  }
  return left;
}

}  // namespace mdx
