// Precompiled header of the mdx library: LibTorch is the expensive include.
#pragma once
#include <torch/torch.h>
