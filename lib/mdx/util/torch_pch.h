// Precompiled header of the mdx library, its tools and its tests: LibTorch and CLI11 are the
// expensive includes. The torch-free I/O and utility units are compiled without it (CMakeLists.txt).
#pragma once
#include <CLI/CLI.hpp>
#include <torch/torch.h>
