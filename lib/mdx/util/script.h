// TorchScript modules as mdx loads them (mdx-fid's extractors, --tokenizer FILE.pt): the one place
// that turns LibTorch's loader and interpreter errors into one-line messages.
#pragma once
#include <torch/script.h>

#include <istream>
#include <string>

namespace mdx {

// The first line of a message.
std::string first_line(const std::string& s);
// What a TorchScript module raised: its interpreter's message is a traceback whose last line is
// the exception with the module's own message ("RuntimeError: ..."); otherwise the first line.
std::string raised_message(const std::string& what);
// torch::jit::load of a file, or of bytes (a module copied into a checkpoint); Error naming `what`
// when it is not a TorchScript module (or was saved by a newer LibTorch).
torch::jit::Module load_script(const std::string& path, const at::Device& device);
torch::jit::Module load_script(std::istream& bytes, const std::string& what);

}  // namespace mdx
