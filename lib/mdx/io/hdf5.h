// Thin RAII over the HDF5 C API: handles that close themselves, errors that name the file and
// dataset, appendable chunked datasets for streaming writes, and provenance attributes.
#pragma once
#include <hdf5.h>

#include <cstdint>
#include <mutex>
#include <string>
#include <vector>

#include "mdx/util/provenance.h"

namespace mdx::h5 {

class Handle {
 public:
  Handle() = default;
  explicit Handle(hid_t id) : id_(id) {}
  ~Handle() { reset(); }
  Handle(Handle&& o) noexcept : id_(o.id_) { o.id_ = -1; }
  Handle& operator=(Handle&& o) noexcept {
    if (this != &o) { reset(); id_ = o.id_; o.id_ = -1; }
    return *this;
  }
  Handle(const Handle&) = delete;
  Handle& operator=(const Handle&) = delete;
  hid_t get() const { return id_; }
  operator hid_t() const { return id_; }
  void reset();
  hid_t release() { hid_t id = id_; id_ = -1; return id; }

 private:
  hid_t id_ = -1;
};

// The serial HDF5 library is not thread-safe: code that uses it from a second thread (mdx-train's
// read-ahead of a streamed table) and the code it could overlap with hold this lock.
class LockGuard {
 public:
  LockGuard();
 private:
  std::lock_guard<std::recursive_mutex> lock_;
};

// The innermost message of the current HDF5 error stack ("" when empty).
std::string last_error();

Handle open_file(const std::string& path);    // read-only; clear error if missing/not HDF5/corrupt
Handle create_file(const std::string& path);  // truncates
// Closes an output file, reporting a failed final flush (a full disk) as an Error.
void close_output(Handle& file, const std::string& path);
bool has(hid_t loc, const std::string& name);
Handle open_dataset(hid_t file, const std::string& name, const std::string& path_for_errors);

struct DatasetInfo {
  std::vector<hsize_t> dims;
  H5T_class_t type_class = H5T_NO_CLASS;
  size_t type_size = 0;
  bool is_signed = false;
};
DatasetInfo info(hid_t dataset);

// Reads rows [start, start+count) along the first axis, converting to `mem_type`.
void read_rows(hid_t dataset, hsize_t start, hsize_t count, hid_t mem_type, void* out, const std::string& what);
void read_all(hid_t dataset, hid_t mem_type, void* out, const std::string& what);

// Writes a whole dataset (contiguous, or chunked+deflated when `compress`).
void write(hid_t file, const std::string& name, hid_t mem_type, const std::vector<hsize_t>& dims,
           const void* data, bool compress = false);
void write_strings(hid_t file, const std::string& name, const std::vector<std::string>& values);
std::vector<std::string> read_strings(hid_t file, const std::string& name, const std::string& path_for_errors);

// A dataset that grows along its first axis; chunked along it and deflated.
class RowWriter {
 public:
  RowWriter(hid_t file, const std::string& name, hid_t mem_type, std::vector<hsize_t> row_dims,
            hsize_t chunk_rows, int deflate_level);
  void append(const void* data, hsize_t rows);
  hsize_t rows() const { return rows_; }
  hid_t id() const { return ds_; }

 private:
  Handle ds_;
  hid_t mem_type_;
  std::vector<hsize_t> row_dims_;
  hsize_t rows_ = 0;
  std::string name_;
};

// Rows per chunk so that a chunk holds about `target_bytes` (at least 1 row).
hsize_t chunk_rows_for(hsize_t row_bytes, hsize_t target_bytes = 1 << 20);

void write_attr(hid_t obj, const std::string& name, const std::string& value);
void write_attr(hid_t obj, const std::string& name, int64_t value);
void write_attr(hid_t obj, const std::string& name, double value);
bool has_attr(hid_t obj, const std::string& name);
std::string read_attr_string(hid_t obj, const std::string& name);
int64_t read_attr_int(hid_t obj, const std::string& name);
double read_attr_double(hid_t obj, const std::string& name);

// Provenance as root attributes (mdx_tool, ..., history).
void write_provenance(hid_t file, const Provenance& prov);
// The `history` lines of a file ("" lines dropped); empty when it has none.
std::vector<std::string> read_history(hid_t file);

}  // namespace mdx::h5
