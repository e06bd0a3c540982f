#include "mdx/io/idx.h"

#include <fmt/format.h>
#include <sys/stat.h>

#include "mdx/util/error.h"

namespace mdx {

IdxReader::IdxReader(const std::string& path, int rank) : path_(path) {
  struct stat st;
  if (stat(path.c_str(), &st) != 0) throw Error("cannot open '" + path + "': no such file");
  gz_ = gzopen(path.c_str(), "rb");  // reads plain files too
  if (!gz_) throw Error("cannot open '" + path + "'");
  gzbuffer(gz_, 1 << 18);
  unsigned char magic[4];
  if (gzread(gz_, magic, 4) != 4) {
    gzclose(gz_);
    throw Error("'" + path + "' is not an IDX file: shorter than its 4-byte magic number");
  }
  int expected = rank;
  if (magic[0] != 0 || magic[1] != 0 || magic[2] != 0x08 || magic[3] != expected) {
    gzclose(gz_);
    throw Error(fmt::format("'{}' is not an IDX file of uint8 rank {}: magic number 0x{:02x}{:02x}{:02x}{:02x}, "
                            "expected 0x000008{:02x}",
                            path, rank, magic[0], magic[1], magic[2], magic[3], expected));
  }
  for (int i = 0; i < rank; ++i) {
    unsigned char b[4];
    if (gzread(gz_, b, 4) != 4) {
      gzclose(gz_);
      throw Error("'" + path + "' is truncated: the IDX header ends early");
    }
    dims_.push_back((int64_t{b[0]} << 24) | (int64_t{b[1]} << 16) | (int64_t{b[2]} << 8) | b[3]);
  }
  // An item of 0 bytes, or one of more than 2^24 (a 4096x4096 image), is a damaged header, not an
  // allocation to attempt.
  int64_t item = 1;
  for (size_t i = 1; i < dims_.size(); ++i) item *= dims_[i];
  if (rank > 1 && (item == 0 || item > (int64_t{1} << 24))) {
    gzclose(gz_);
    gz_ = nullptr;
    throw Error(fmt::format("'{}': its IDX header gives items of {} bytes ({}); the file is damaged", path, item,
                            fmt::join(dims_.begin() + 1, dims_.end(), "x")));
  }
}

IdxReader::~IdxReader() {
  if (gz_) gzclose(gz_);
}

int64_t IdxReader::item_bytes() const {
  int64_t n = 1;
  for (size_t i = 1; i < dims_.size(); ++i) n *= dims_[i];
  return n;
}

void IdxReader::read(int64_t count, uint8_t* out) {
  int64_t bytes = count * item_bytes();
  int64_t got = 0;
  while (got < bytes) {
    unsigned chunk = static_cast<unsigned>(std::min<int64_t>(bytes - got, 1 << 30));
    int r = gzread(gz_, out + got, chunk);
    if (r <= 0) {
      int err = 0;
      const char* msg = gzerror(gz_, &err);
      throw Error(fmt::format("'{}' is truncated or corrupt: item {} of {} ends early{}", path_,
                              read_items_ + got / std::max<int64_t>(1, item_bytes()), items(),
                              err < 0 && msg ? std::string(" (") + msg + ")" : std::string()));
    }
    got += r;
  }
  read_items_ += count;
}

}  // namespace mdx
