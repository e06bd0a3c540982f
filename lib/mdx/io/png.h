// PNG through libpng. Output with text metadata (tEXt chunks): the provenance and the parameters
// of what the picture shows travel inside the file. Input decoded here rather than by OpenCV, whose
// PNG reader leaves libpng's own handlers to print "libpng error: ..." on standard error.
#pragma once
#include <cstdint>
#include <string>
#include <utility>
#include <vector>

#include "mdx/io/decode.h"

namespace mdx {

// True when `data` starts with the PNG signature.
bool is_png(const uint8_t* data, size_t size);
// Decodes a PNG held in memory to 8-bit gray (1 channel) or RGB (3): palettes and low bit depths
// expanded, alpha (and tRNS) dropped, 16-bit samples rounded to the nearest 8-bit value (v / 257).
// Throws Error("cannot decode '<path>': PNG <libpng's message>"); libpng prints nothing.
Image decode_png(const uint8_t* data, size_t size, const std::string& path);

// Writes an 8-bit image of 1 (gray), 3 (RGB) or 4 (RGBA) channels, rows top to bottom.
void write_png(const std::string& path, const uint8_t* pixels, int64_t height, int64_t width, int64_t channels,
               const std::vector<std::pair<std::string, std::string>>& text);

}  // namespace mdx
