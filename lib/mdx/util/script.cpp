#include "mdx/util/script.h"

#include <fmt/format.h>

#include "mdx/util/error.h"

namespace mdx {

std::string first_line(const std::string& s) { return s.substr(0, s.find('\n')); }

std::string raised_message(const std::string& what) {
  std::string last;
  size_t begin = 0;
  while (begin < what.size()) {
    size_t end = what.find('\n', begin);
    if (end == std::string::npos) end = what.size();
    std::string line = what.substr(begin, end - begin);
    if (line.find_first_not_of(" \t") != std::string::npos) last = line;
    begin = end + 1;
  }
  const bool traceback = what.find("Traceback of TorchScript") != std::string::npos;
  return traceback && !last.empty() ? last.substr(last.find_first_not_of(" \t")) : first_line(what);
}

namespace {

Error not_a_module(const std::string& what, const c10::Error& e) {
  return Error(fmt::format("{} is not a TorchScript module (one saved by torch.jit.save with LibTorch {} or "
                           "older): {}",
                           what, TORCH_VERSION_MAJOR, first_line(e.what_without_backtrace())));
}

}  // namespace

torch::jit::Module load_script(const std::string& path, const at::Device& device) {
  try {
    return torch::jit::load(path, device);
  } catch (const c10::Error& e) {
    throw not_a_module("'" + path + "'", e);
  }
}

torch::jit::Module load_script(std::istream& bytes, const std::string& what) {
  try {
    return torch::jit::load(bytes);
  } catch (const c10::Error& e) {
    throw not_a_module(what, e);
  }
}

}  // namespace mdx
