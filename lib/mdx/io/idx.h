// IDX files (the MNIST format, plain or gzip-compressed): a big-endian header of magic
// 0x0000TTRR (T: element type, 0x08 = uint8; R: rank) and R dimension sizes, then the data.
#pragma once
#include <zlib.h>

#include <cstdint>
#include <string>
#include <vector>

namespace mdx {

class IdxReader {
 public:
  // Opens `path` and checks the header: uint8 elements, `rank` dimensions.
  IdxReader(const std::string& path, int rank);
  ~IdxReader();
  IdxReader(const IdxReader&) = delete;
  IdxReader& operator=(const IdxReader&) = delete;

  const std::vector<int64_t>& dims() const { return dims_; }
  int64_t items() const { return dims_[0]; }
  int64_t item_bytes() const;
  // Reads the next `count` items (throws if the file ends early: truncated).
  void read(int64_t count, uint8_t* out);

 private:
  std::string path_;
  gzFile gz_ = nullptr;
  std::vector<int64_t> dims_;
  int64_t read_items_ = 0;
};

}  // namespace mdx
