#include "mdx/io/tensors.h"

#include <fmt/format.h>
#include <torch/torch.h>

#include "mdx/io/hdf5.h"
#include "mdx/util/error.h"

namespace mdx {

void write_tensors(hid_t file, const std::string& group, const std::map<std::string, at::Tensor>& tensors) {
  h5::Handle g(H5Gcreate2(file, group.c_str(), H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT));
  if (g.get() < 0) throw Error("cannot create group '" + group + "'");
  for (const auto& [name, t] : tensors) {
    at::Tensor c = t.detach().to(at::kCPU).to(at::kFloat).contiguous();
    std::vector<hsize_t> dims(c.sizes().begin(), c.sizes().end());
    h5::write(g, name, H5T_NATIVE_FLOAT, dims, c.data_ptr<float>());
  }
}

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

}  // namespace mdx
