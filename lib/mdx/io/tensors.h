// Named float32 tensors as the datasets of one HDF5 group: a checkpoint's `model/`, `ema/` and
// `optimizer/` groups, a learned tokenizer's `weights/`.
#pragma once
#include <hdf5.h>
#include <torch/types.h>

#include <map>
#include <string>
#include <vector>

namespace mdx {

// Creates `group` in `loc` and writes each tensor (as float32, on the CPU) as a dataset.
void write_tensors(hid_t loc, const std::string& group, const std::map<std::string, at::Tensor>& tensors);
// The float datasets of `group` (empty when there is none); `path` names the file in errors. A
// dataset that is not float, or holds NaN or infinite values, is damage: Error.
std::map<std::string, at::Tensor> read_tensors(hid_t loc, const std::string& group, const std::string& path);
// Names of a group's members, by index: the same calls in HDF5 1.10 and 1.12+.
std::vector<std::string> member_names(hid_t group);

}  // namespace mdx
