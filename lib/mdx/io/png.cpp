#include "mdx/io/png.h"

#include <png.h>

#include <cerrno>
#include <csetjmp>
#include <cstdio>
#include <cstring>

#include "mdx/util/error.h"

namespace mdx {

namespace {

struct PngError {
  char message[256];
};

void on_png_error(png_structp png, png_const_charp msg) {
  auto* err = static_cast<PngError*>(png_get_error_ptr(png));
  std::snprintf(err->message, sizeof err->message, "%s", msg);
  longjmp(png_jmpbuf(png), 1);
}
void on_png_warning(png_structp, png_const_charp) {}

// libpng reports errors by longjmp: this function holds no C++ object that a jump could skip.
bool write_png_file(FILE* fp, const uint8_t* pixels, png_uint_32 height, png_uint_32 width, int channels, int color,
                    png_text* text, int n_text, PngError* err) {
  png_structp png = png_create_write_struct(PNG_LIBPNG_VER_STRING, err, on_png_error, on_png_warning);
  if (!png) return false;
  png_infop info = png_create_info_struct(png);
  if (!info || setjmp(png_jmpbuf(png))) {
    png_destroy_write_struct(&png, &info);
    return false;
  }
  png_init_io(png, fp);
  png_set_IHDR(png, info, width, height, 8, color, PNG_INTERLACE_NONE, PNG_COMPRESSION_TYPE_DEFAULT,
               PNG_FILTER_TYPE_DEFAULT);
  if (n_text > 0) png_set_text(png, info, text, n_text);
  png_write_info(png, info);
  for (png_uint_32 y = 0; y < height; ++y)
    png_write_row(png, const_cast<png_bytep>(pixels + static_cast<size_t>(y) * width * channels));
  png_write_end(png, info);
  png_destroy_write_struct(&png, &info);
  return true;
}

}  // namespace

void write_png(const std::string& path, const uint8_t* pixels, int64_t height, int64_t width, int64_t channels,
               const std::vector<std::pair<std::string, std::string>>& text) {
  int color = channels == 1 ? PNG_COLOR_TYPE_GRAY
              : channels == 3 ? PNG_COLOR_TYPE_RGB
              : channels == 4 ? PNG_COLOR_TYPE_RGBA
                              : -1;
  if (color < 0) throw Error("cannot write PNG with " + std::to_string(channels) + " channels");
  std::vector<std::string> keys;
  std::vector<png_text> chunks(text.size());
  for (const auto& kv : text) keys.push_back(kv.first.substr(0, 79));  // PNG keywords: at most 79 bytes
  for (size_t i = 0; i < text.size(); ++i) {
    std::memset(&chunks[i], 0, sizeof(png_text));
    // Long values (history, options) are compressed (zTXt); short ones stay plain tEXt.
    chunks[i].compression = text[i].second.size() > 1024 ? PNG_TEXT_COMPRESSION_zTXt : PNG_TEXT_COMPRESSION_NONE;
    chunks[i].key = const_cast<char*>(keys[i].c_str());
    chunks[i].text = const_cast<char*>(text[i].second.c_str());
    chunks[i].text_length = text[i].second.size();
  }
  FILE* fp = std::fopen(path.c_str(), "wb");
  if (!fp) throw Error("cannot write '" + path + "': " + std::strerror(errno));
  PngError err{"out of memory"};
  bool ok = write_png_file(fp, pixels, static_cast<png_uint_32>(height), static_cast<png_uint_32>(width),
                           static_cast<int>(channels), color, chunks.data(), static_cast<int>(chunks.size()), &err);
  bool closed = std::fclose(fp) == 0;
  if (!ok) throw Error("cannot write PNG '" + path + "': " + err.message);
  if (!closed) throw Error("cannot write '" + path + "': " + std::strerror(errno));
}

}  // namespace mdx
