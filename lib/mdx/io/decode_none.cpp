// mdx built without OpenCV (MDX_WITH_OPENCV=OFF): tables and IDX files only.
#include "mdx/io/decode.h"
#include "mdx/util/error.h"

namespace mdx {

Image decode_image(const std::string& path, int) {
  throw Error("cannot decode '" + path + "': this mdx was built without OpenCV (MDX_WITH_OPENCV=OFF); "
              "convert images to an HDF5 table on a machine with it");
}

Image fit_image(const Image& in, int64_t height, int64_t width, Fit) {
  if (in.height == height && in.width == width) return in;
  throw Error("resizing needs OpenCV; this mdx was built without it (MDX_WITH_OPENCV=OFF)");
}

}  // namespace mdx
