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

struct MemoryReader {
  const uint8_t* data;
  size_t left;
};

void on_png_read(png_structp png, png_bytep out, png_size_t n) {
  auto* r = static_cast<MemoryReader*>(png_get_io_ptr(png));
  if (n > r->left) png_error(png, "file is truncated");
  std::memcpy(out, r->data, n);
  r->data += n;
  r->left -= n;
}

// The two phases of reading, each under its own setjmp and holding no C++ object a jump could
// skip: the header (and the transforms to 8-bit gray or RGB), then the rows into `rows`.
bool read_png_header(png_structp png, png_infop info, png_uint_32* height, png_uint_32* width, int* channels,
                     int* depth) {
  if (setjmp(png_jmpbuf(png))) return false;
  png_set_user_limits(png, 1u << 16, 1u << 16);
  png_read_info(png, info);
  int bit_depth = 0, color = 0;
  png_get_IHDR(png, info, width, height, &bit_depth, &color, nullptr, nullptr, nullptr);
  if (color == PNG_COLOR_TYPE_PALETTE) png_set_palette_to_rgb(png);
  if (color == PNG_COLOR_TYPE_GRAY && bit_depth < 8) png_set_expand_gray_1_2_4_to_8(png);
  if (color & PNG_COLOR_MASK_ALPHA) png_set_strip_alpha(png);
  png_set_interlace_handling(png);
  png_read_update_info(png, info);
  *channels = png_get_channels(png, info);
  *depth = png_get_bit_depth(png, info);
  return true;
}

bool read_png_rows(png_structp png, png_infop info, png_bytepp rows) {
  if (setjmp(png_jmpbuf(png))) return false;
  png_read_image(png, rows);
  png_read_end(png, info);
  return true;
}

}  // namespace

bool is_png(const uint8_t* data, size_t size) {
  static const uint8_t sig[8] = {0x89, 'P', 'N', 'G', 0x0d, 0x0a, 0x1a, 0x0a};
  return size >= 8 && std::memcmp(data, sig, 8) == 0;
}

Image decode_png(const uint8_t* data, size_t size, const std::string& path) {
  PngError err{"out of memory"};
  png_structp png = png_create_read_struct(PNG_LIBPNG_VER_STRING, &err, on_png_error, on_png_warning);
  png_infop info = png ? png_create_info_struct(png) : nullptr;
  struct Guard {
    png_structp* png;
    png_infop* info;
    ~Guard() { png_destroy_read_struct(png, info, nullptr); }
  } guard{&png, &info};
  if (!info) throw Error("cannot decode '" + path + "': out of memory");
  MemoryReader reader{data, size};
  png_set_read_fn(png, &reader, on_png_read);
  png_uint_32 height = 0, width = 0;
  int channels = 0, depth = 0;
  if (!read_png_header(png, info, &height, &width, &channels, &depth))
    throw Error("cannot decode '" + path + "': PNG " + err.message);
  if (static_cast<uint64_t>(height) * width > (uint64_t{1} << 28))
    throw Error("cannot decode '" + path + "': " + std::to_string(width) + "x" + std::to_string(height) +
                " pixels is more than mdx reads (2^28)");
  if ((channels != 1 && channels != 3) || (depth != 8 && depth != 16))
    throw Error("cannot decode '" + path + "': PNG with " + std::to_string(channels) + " channel(s) of " +
                std::to_string(depth) + " bits after expansion");
  const size_t row_bytes = static_cast<size_t>(width) * channels * (depth / 8);
  std::vector<uint8_t> raw(row_bytes * height);
  std::vector<png_bytep> rows(height);
  for (png_uint_32 y = 0; y < height; ++y) rows[y] = raw.data() + y * row_bytes;
  if (!read_png_rows(png, info, rows.data())) throw Error("cannot decode '" + path + "': PNG " + err.message);
  Image img;
  img.height = height;
  img.width = width;
  img.channels = channels;
  if (depth == 8) {
    img.pixels = std::move(raw);
  } else {
    const size_t n = raw.size() / 2;
    img.pixels.resize(n);
    for (size_t i = 0; i < n; ++i) {
      const unsigned v = raw[2 * i] << 8 | raw[2 * i + 1];  // PNG samples are big-endian
      img.pixels[i] = static_cast<uint8_t>((v + 128) / 257);  // round(v / 257): v / 257 is never a tie
    }
  }
  return img;
}

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
