// PNG output through libpng, with text metadata (tEXt chunks): the provenance and the parameters
// of what the picture shows travel inside the file.
#pragma once
#include <cstdint>
#include <string>
#include <utility>
#include <vector>

namespace mdx {

// Writes an 8-bit image of 1 (gray), 3 (RGB) or 4 (RGBA) channels, rows top to bottom.
void write_png(const std::string& path, const uint8_t* pixels, int64_t height, int64_t width, int64_t channels,
               const std::vector<std::pair<std::string, std::string>>& text);

}  // namespace mdx
