#include "mdx/io/decode.h"

#include <fmt/format.h>
#include <sys/stat.h>

#include <algorithm>
#include <cmath>
#include <fstream>
#include <opencv2/core.hpp>
#include <opencv2/core/utils/logger.hpp>
#include <opencv2/imgcodecs.hpp>
#include <opencv2/imgproc.hpp>

#include "mdx/io/png.h"
#include "mdx/util/error.h"

namespace mdx {

namespace {

std::vector<uint8_t> read_bytes(const std::string& path) {
  struct stat st;
  if (stat(path.c_str(), &st) != 0) throw Error("cannot open '" + path + "': no such file");
  if (S_ISDIR(st.st_mode)) throw Error("'" + path + "' is a directory, expected an image file");
  std::ifstream in(path, std::ios::binary);
  if (!in) throw Error("cannot read '" + path + "'");
  std::vector<uint8_t> bytes(static_cast<size_t>(st.st_size));
  if (!bytes.empty() && !in.read(reinterpret_cast<char*>(bytes.data()), bytes.size()))
    throw Error("cannot read '" + path + "'");
  return bytes;
}

// OpenCV's decoders accept some truncated files (libjpeg pads the missing rows with grey and
// prints a warning); catch the two common formats' truncation from their end markers instead.
void check_complete(const std::string& path, const std::vector<uint8_t>& b) {
  static const uint8_t png_sig[8] = {0x89, 'P', 'N', 'G', 0x0d, 0x0a, 0x1a, 0x0a};
  static const uint8_t png_iend[8] = {'I', 'E', 'N', 'D', 0xae, 0x42, 0x60, 0x82};
  if (b.size() >= 8 && std::equal(png_sig, png_sig + 8, b.begin())) {
    if (b.size() < 20 || std::search(b.end() - std::min<size_t>(b.size(), 64), b.end(), png_iend, png_iend + 8) == b.end())
      throw Error("cannot decode '" + path + "': PNG file is truncated (no IEND chunk)");
  } else if (b.size() >= 3 && b[0] == 0xff && b[1] == 0xd8 && b[2] == 0xff) {
    size_t tail = std::min<size_t>(b.size(), 4096);
    bool eoi = false;
    for (size_t i = b.size() - tail; i + 1 < b.size(); ++i)
      if (b[i] == 0xff && b[i + 1] == 0xd9) eoi = true;
    if (!eoi) throw Error("cannot decode '" + path + "': JPEG file is truncated (no end-of-image marker)");
  }
}

}  // namespace

Image decode_image(const std::string& path, int channels) {
  static const bool silenced = [] {
    cv::utils::logging::setLogLevel(cv::utils::logging::LOG_LEVEL_SILENT);
    cv::setNumThreads(0);  // callers decode in their own threads; OpenCV's would only spin
    return true;
  }();
  (void)silenced;
  std::vector<uint8_t> bytes = read_bytes(path);
  if (bytes.empty()) throw Error("cannot decode '" + path + "': empty file");
  check_complete(path, bytes);
  if (is_png(bytes.data(), bytes.size())) {
    Image img = decode_png(bytes.data(), bytes.size(), path);
    const int64_t want = channels == 0 ? img.channels : channels;
    return convert_channels(std::move(img), want);
  }
  cv::Mat raw;
  try {
    raw = cv::imdecode(cv::Mat(1, static_cast<int>(bytes.size()), CV_8U, bytes.data()), cv::IMREAD_UNCHANGED);
  } catch (const cv::Exception&) {
    raw.release();
  }
  if (raw.empty() || raw.dims != 2)
    throw Error("cannot decode '" + path + "': not a supported image (PNG, JPEG, BMP, TIFF, WebP) or corrupt");
  cv::Mat m8;
  if (raw.depth() == CV_8U) {
    m8 = raw;
  } else if (raw.depth() == CV_16U) {
    raw.convertTo(m8, CV_8U, 1.0 / 257.0);
  } else if (raw.depth() == CV_32F) {
    raw.convertTo(m8, CV_8U, 255.0);
  } else {
    throw Error("cannot decode '" + path + "': unsupported sample depth");
  }
  cv::Mat out;
  int in_c = m8.channels();
  if (channels == 0) channels = in_c == 1 ? 1 : 3;
  if (channels == 1) {
    if (in_c == 1) out = m8;
    else if (in_c == 3) cv::cvtColor(m8, out, cv::COLOR_BGR2GRAY);
    else if (in_c == 4) cv::cvtColor(m8, out, cv::COLOR_BGRA2GRAY);
    else throw Error(fmt::format("cannot decode '{}': {} channels", path, in_c));
  } else {
    if (in_c == 1) cv::cvtColor(m8, out, cv::COLOR_GRAY2RGB);
    else if (in_c == 3) cv::cvtColor(m8, out, cv::COLOR_BGR2RGB);
    else if (in_c == 4) cv::cvtColor(m8, out, cv::COLOR_BGRA2RGB);
    else throw Error(fmt::format("cannot decode '{}': {} channels", path, in_c));
  }
  Image img;
  img.height = out.rows;
  img.width = out.cols;
  img.channels = channels;
  img.pixels.resize(static_cast<size_t>(img.height * img.width * channels));
  cv::Mat dst(out.rows, out.cols, CV_8UC(channels), img.pixels.data());
  out.copyTo(dst);
  return img;
}

Image fit_image(const Image& in, int64_t height, int64_t width, Fit fit) {
  if (in.height == height && in.width == width) return in;
  const int type = CV_8UC(static_cast<int>(in.channels));
  cv::Mat src(static_cast<int>(in.height), static_cast<int>(in.width), type, const_cast<uint8_t*>(in.pixels.data()));
  double sy = static_cast<double>(height) / in.height, sx = static_cast<double>(width) / in.width;
  double s = fit == Fit::Crop ? std::max(sy, sx) : std::min(sy, sx);
  int rh = fit == Fit::Stretch ? static_cast<int>(height) : std::max(1, static_cast<int>(std::lround(in.height * s)));
  int rw = fit == Fit::Stretch ? static_cast<int>(width) : std::max(1, static_cast<int>(std::lround(in.width * s)));
  if (fit == Fit::Crop) rh = std::max<int>(rh, height), rw = std::max<int>(rw, width);
  if (fit == Fit::Pad) rh = std::min<int>(rh, height), rw = std::min<int>(rw, width);
  cv::Mat resized;
  bool shrink = rh * rw < in.height * in.width;
  cv::resize(src, resized, cv::Size(rw, rh), 0, 0, shrink ? cv::INTER_AREA : cv::INTER_LINEAR);
  Image out;
  out.height = height;
  out.width = width;
  out.channels = in.channels;
  out.pixels.assign(static_cast<size_t>(height * width * in.channels), 0);
  cv::Mat dst(static_cast<int>(height), static_cast<int>(width), type, out.pixels.data());
  if (fit == Fit::Pad) {
    resized.copyTo(dst(cv::Rect((static_cast<int>(width) - rw) / 2, (static_cast<int>(height) - rh) / 2, rw, rh)));
  } else {
    resized(cv::Rect((rw - static_cast<int>(width)) / 2, (rh - static_cast<int>(height)) / 2, static_cast<int>(width),
                     static_cast<int>(height)))
        .copyTo(dst);
  }
  return out;
}

}  // namespace mdx
