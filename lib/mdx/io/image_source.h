// Where images come from: IDX files, HDF5 image tables and image files or class folders, read
// in increasing ranges and conformed to one geometry (mdx-tokenize's inputs).
#pragma once
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "mdx/io/decode.h"

namespace mdx {

struct ImageGeometry {
  int64_t height = 0, width = 0, channels = 0;
};

struct SourceItem {
  Image image;
  int64_t label = -1;
  std::string error;  // non-empty: the item could not be read
  bool fatal = false; // the error is not a bad file (--skip-bad does not apply)
  std::string name;   // file name for messages
};

// Where images come from: reads ranges in increasing order.
class ImageSource {
 public:
  virtual ~ImageSource() = default;
  virtual int64_t size() const = 0;
  virtual bool labelled() const = 0;
  virtual std::vector<std::string> label_names() const { return {}; }
  virtual std::vector<std::string> history() const { return {}; }
  virtual const char* kind() const = 0;
  // The native geometry (channels already resolved against `channels`, 0 = natural).
  virtual ImageGeometry probe(int channels) = 0;
  virtual void read(int64_t start, int64_t count, const ImageGeometry& g, bool resize, Fit fit, std::vector<SourceItem>& out) = 0;
  // Whether read() may run while the main thread writes HDF5 (the serial HDF5 library is not
  // thread-safe, so table sources may not).
  virtual bool reads_beside_writer() const { return true; }
};

// The source of `inputs`: one IDX images file (with its `labels` file), HDF5 tables (read as
// one), or image files and folders (one sub-folder per class; `jobs` decoding threads, 0: one per
// core but one; `skip_bad`: undecodable files are reported as items, not thrown).
std::unique_ptr<ImageSource> open_image_source(const std::vector<std::string>& inputs, const std::string& labels,
                                               int jobs, bool skip_bad);

}  // namespace mdx
