#include "mdx/io/hdf5.h"

#include <sys/stat.h>

#include <sstream>

#include "mdx/util/error.h"

namespace mdx::h5 {

void Handle::reset() {
  if (id_ < 0) return;
  switch (H5Iget_type(id_)) {
    case H5I_FILE: H5Fclose(id_); break;
    case H5I_DATASET: H5Dclose(id_); break;
    case H5I_DATASPACE: H5Sclose(id_); break;
    case H5I_DATATYPE: H5Tclose(id_); break;
    case H5I_ATTR: H5Aclose(id_); break;
    case H5I_GROUP: H5Gclose(id_); break;
    case H5I_GENPROP_LST: H5Pclose(id_); break;
    default: break;
  }
  id_ = -1;
}

namespace {
herr_t innermost(unsigned n, const H5E_error2_t* err, void* data) {
  if (n == 0 && err->desc) *static_cast<std::string*>(data) = err->desc;
  return 0;
}
std::string detail() {
  std::string e = last_error();
  return e.empty() ? "" : " (HDF5: " + e + ")";
}
}  // namespace

namespace {
std::recursive_mutex& library_mutex() {
  static std::recursive_mutex m;
  return m;
}
}  // namespace

LockGuard::LockGuard() : lock_(library_mutex()) {}

std::string last_error() {
  std::string msg;
  H5Ewalk2(H5E_DEFAULT, H5E_WALK_DOWNWARD, innermost, &msg);
  return msg;
}

Handle open_file(const std::string& path) {
  struct stat st;
  if (stat(path.c_str(), &st) != 0) throw Error("cannot open '" + path + "': no such file");
  if (S_ISDIR(st.st_mode)) throw Error("cannot open '" + path + "': is a directory, expected an HDF5 file");
  if (H5Fis_hdf5(path.c_str()) <= 0)
    throw Error("'" + path + "' is not an HDF5 file (or is truncated or corrupt)");
  hid_t f = H5Fopen(path.c_str(), H5F_ACC_RDONLY, H5P_DEFAULT);
  if (f < 0) throw Error("cannot open HDF5 file '" + path + "': truncated or corrupt" + detail());
  return Handle(f);
}

Handle create_file(const std::string& path) {
  hid_t f = H5Fcreate(path.c_str(), H5F_ACC_TRUNC, H5P_DEFAULT, H5P_DEFAULT);
  if (f < 0) throw Error("cannot create HDF5 file '" + path + "'" + detail());
  return Handle(f);
}

void close_output(Handle& file, const std::string& path) {
  if (file.get() < 0) return;
  H5Eclear2(H5E_DEFAULT);
  herr_t flushed = H5Fflush(file, H5F_SCOPE_LOCAL);
  std::string why = detail();
  herr_t closed = H5Fclose(file.release());
  if (flushed < 0 || closed < 0) throw Error("cannot write '" + path + "' (disk full?)" + why);
}

bool has(hid_t loc, const std::string& name) { return H5Lexists(loc, name.c_str(), H5P_DEFAULT) > 0; }

Handle open_dataset(hid_t file, const std::string& name, const std::string& path) {
  if (!has(file, name)) throw Error("'" + path + "' has no dataset '" + name + "'");
  hid_t d = H5Dopen2(file, name.c_str(), H5P_DEFAULT);
  if (d < 0) throw Error("cannot open dataset '" + name + "' in '" + path + "'" + detail());
  return Handle(d);
}

DatasetInfo info(hid_t dataset) {
  DatasetInfo i;
  Handle space(H5Dget_space(dataset));
  int rank = H5Sget_simple_extent_ndims(space);
  i.dims.resize(rank > 0 ? rank : 0);
  if (rank > 0) H5Sget_simple_extent_dims(space, i.dims.data(), nullptr);
  Handle type(H5Dget_type(dataset));
  i.type_class = H5Tget_class(type);
  i.type_size = H5Tget_size(type);
  i.is_signed = i.type_class == H5T_INTEGER && H5Tget_sign(type) == H5T_SGN_2;
  return i;
}

void read_rows(hid_t dataset, hsize_t start, hsize_t count, hid_t mem_type, void* out, const std::string& what) {
  if (count == 0) return;
  Handle fspace(H5Dget_space(dataset));
  int rank = H5Sget_simple_extent_ndims(fspace);
  std::vector<hsize_t> dims(rank), off(rank, 0), cnt(rank);
  H5Sget_simple_extent_dims(fspace, dims.data(), nullptr);
  off[0] = start;
  cnt = dims;
  cnt[0] = count;
  H5Sselect_hyperslab(fspace, H5S_SELECT_SET, off.data(), nullptr, cnt.data(), nullptr);
  Handle mspace(H5Screate_simple(rank, cnt.data(), nullptr));
  if (H5Dread(dataset, mem_type, mspace, fspace, H5P_DEFAULT, out) < 0)
    throw Error("cannot read " + what + ": file truncated or corrupt" + detail());
}

void read_all(hid_t dataset, hid_t mem_type, void* out, const std::string& what) {
  if (H5Dread(dataset, mem_type, H5S_ALL, H5S_ALL, H5P_DEFAULT, out) < 0)
    throw Error("cannot read " + what + ": file truncated or corrupt" + detail());
}

void write(hid_t file, const std::string& name, hid_t mem_type, const std::vector<hsize_t>& dims,
           const void* data, bool compress) {
  Handle space(H5Screate_simple(static_cast<int>(dims.size()), dims.data(), nullptr));
  Handle dcpl(H5Pcreate(H5P_DATASET_CREATE));
  hsize_t total = 1;
  for (auto d : dims) total *= d;
  if (compress && total > 0 && !dims.empty()) {
    std::vector<hsize_t> chunk = dims;
    hsize_t row = H5Tget_size(mem_type);
    for (size_t i = 1; i < dims.size(); ++i) row *= dims[i];
    chunk[0] = std::min<hsize_t>(dims[0], chunk_rows_for(row));
    H5Pset_chunk(dcpl, static_cast<int>(chunk.size()), chunk.data());
    H5Pset_shuffle(dcpl);
    H5Pset_deflate(dcpl, 4);
  }
  Handle ds(H5Dcreate2(file, name.c_str(), mem_type, space, H5P_DEFAULT, dcpl, H5P_DEFAULT));
  if (ds.get() < 0) throw Error("cannot create dataset '" + name + "'" + detail());
  if (total > 0 && H5Dwrite(ds, mem_type, H5S_ALL, H5S_ALL, H5P_DEFAULT, data) < 0)
    throw Error("cannot write dataset '" + name + "' (disk full?)" + detail());
}

void write_strings(hid_t file, const std::string& name, const std::vector<std::string>& values) {
  Handle type(H5Tcopy(H5T_C_S1));
  H5Tset_size(type, H5T_VARIABLE);
  H5Tset_cset(type, H5T_CSET_UTF8);
  std::vector<const char*> ptrs;
  for (const auto& v : values) ptrs.push_back(v.c_str());
  hsize_t n = values.size();
  Handle space(H5Screate_simple(1, &n, nullptr));
  Handle ds(H5Dcreate2(file, name.c_str(), type, space, H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT));
  if (ds.get() < 0 || (n > 0 && H5Dwrite(ds, type, H5S_ALL, H5S_ALL, H5P_DEFAULT, ptrs.data()) < 0))
    throw Error("cannot write dataset '" + name + "'" + detail());
}

std::vector<std::string> read_strings(hid_t file, const std::string& name, const std::string& path) {
  Handle ds = open_dataset(file, name, path);
  DatasetInfo i = info(ds);
  if (i.type_class != H5T_STRING || i.dims.size() != 1)
    throw Error("dataset '" + name + "' in '" + path + "' is not a 1-D string dataset");
  Handle ftype(H5Dget_type(ds));
  std::vector<std::string> out;
  if (H5Tis_variable_str(ftype) > 0) {
    Handle type(H5Tcopy(H5T_C_S1));
    H5Tset_size(type, H5T_VARIABLE);
    H5Tset_cset(type, H5Tget_cset(ftype));
    std::vector<char*> ptrs(i.dims[0]);
    read_all(ds, type, ptrs.data(), "'" + name + "' in '" + path + "'");
    for (char* p : ptrs) out.emplace_back(p ? p : "");
    Handle space(H5Dget_space(ds));
    H5Dvlen_reclaim(type, space, H5P_DEFAULT, ptrs.data());
  } else {
    size_t len = H5Tget_size(ftype);
    std::vector<char> buf(len * i.dims[0]);
    read_all(ds, ftype, buf.data(), "'" + name + "' in '" + path + "'");
    for (hsize_t k = 0; k < i.dims[0]; ++k) {
      std::string s(buf.data() + k * len, len);
      out.push_back(s.substr(0, s.find('\0')));
    }
  }
  return out;
}

hsize_t chunk_rows_for(hsize_t row_bytes, hsize_t target_bytes) {
  return std::max<hsize_t>(1, target_bytes / std::max<hsize_t>(1, row_bytes));
}

RowWriter::RowWriter(hid_t file, const std::string& name, hid_t mem_type, std::vector<hsize_t> row_dims,
                     hsize_t chunk_rows, int deflate_level)
    : mem_type_(mem_type), row_dims_(std::move(row_dims)), name_(name) {
  std::vector<hsize_t> dims{0}, maxdims{H5S_UNLIMITED}, chunk{chunk_rows};
  for (auto d : row_dims_) {
    dims.push_back(d);
    maxdims.push_back(d);
    chunk.push_back(d);
  }
  Handle space(H5Screate_simple(static_cast<int>(dims.size()), dims.data(), maxdims.data()));
  Handle dcpl(H5Pcreate(H5P_DATASET_CREATE));
  H5Pset_chunk(dcpl, static_cast<int>(chunk.size()), chunk.data());
  if (deflate_level > 0) {
    H5Pset_shuffle(dcpl);
    H5Pset_deflate(dcpl, deflate_level);
  }
  ds_ = Handle(H5Dcreate2(file, name.c_str(), mem_type, space, H5P_DEFAULT, dcpl, H5P_DEFAULT));
  if (ds_.get() < 0) throw Error("cannot create dataset '" + name + "'" + detail());
}

void RowWriter::append(const void* data, hsize_t rows) {
  if (rows == 0) return;
  std::vector<hsize_t> dims{rows_ + rows}, off{rows_}, cnt{rows};
  for (auto d : row_dims_) {
    dims.push_back(d);
    off.push_back(0);
    cnt.push_back(d);
  }
  if (H5Dset_extent(ds_, dims.data()) < 0) throw Error("cannot extend dataset '" + name_ + "'" + detail());
  Handle fspace(H5Dget_space(ds_));
  H5Sselect_hyperslab(fspace, H5S_SELECT_SET, off.data(), nullptr, cnt.data(), nullptr);
  Handle mspace(H5Screate_simple(static_cast<int>(cnt.size()), cnt.data(), nullptr));
  if (H5Dwrite(ds_, mem_type_, mspace, fspace, H5P_DEFAULT, data) < 0)
    throw Error("cannot write dataset '" + name_ + "' (disk full?)" + detail());
  rows_ += rows;
}

void write_attr(hid_t obj, const std::string& name, const std::string& value) {
  Handle type(H5Tcopy(H5T_C_S1));
  H5Tset_size(type, H5T_VARIABLE);
  H5Tset_cset(type, H5T_CSET_UTF8);
  Handle space(H5Screate(H5S_SCALAR));
  if (H5Aexists(obj, name.c_str()) > 0) H5Adelete(obj, name.c_str());
  Handle a(H5Acreate2(obj, name.c_str(), type, space, H5P_DEFAULT, H5P_DEFAULT));
  const char* p = value.c_str();
  if (a.get() < 0 || H5Awrite(a, type, &p) < 0) throw Error("cannot write attribute '" + name + "'" + detail());
}

namespace {
template <typename T>
void write_scalar_attr(hid_t obj, const std::string& name, hid_t type, T value) {
  Handle space(H5Screate(H5S_SCALAR));
  if (H5Aexists(obj, name.c_str()) > 0) H5Adelete(obj, name.c_str());
  Handle a(H5Acreate2(obj, name.c_str(), type, space, H5P_DEFAULT, H5P_DEFAULT));
  if (a.get() < 0 || H5Awrite(a, type, &value) < 0) throw Error("cannot write attribute '" + name + "'" + detail());
}
template <typename T>
T read_scalar_attr(hid_t obj, const std::string& name, hid_t type) {
  if (H5Aexists(obj, name.c_str()) <= 0) throw Error("missing attribute '" + name + "'");
  Handle a(H5Aopen(obj, name.c_str(), H5P_DEFAULT));
  T v{};
  if (H5Aread(a, type, &v) < 0) throw Error("cannot read attribute '" + name + "' as a number" + detail());
  return v;
}
}  // namespace

void write_attr(hid_t obj, const std::string& name, int64_t value) {
  write_scalar_attr(obj, name, H5T_NATIVE_INT64, value);
}
void write_attr(hid_t obj, const std::string& name, double value) {
  write_scalar_attr(obj, name, H5T_NATIVE_DOUBLE, value);
}
bool has_attr(hid_t obj, const std::string& name) { return H5Aexists(obj, name.c_str()) > 0; }
int64_t read_attr_int(hid_t obj, const std::string& name) {
  return read_scalar_attr<int64_t>(obj, name, H5T_NATIVE_INT64);
}
double read_attr_double(hid_t obj, const std::string& name) {
  return read_scalar_attr<double>(obj, name, H5T_NATIVE_DOUBLE);
}

std::string read_attr_string(hid_t obj, const std::string& name) {
  if (H5Aexists(obj, name.c_str()) <= 0) throw Error("missing attribute '" + name + "'");
  Handle a(H5Aopen(obj, name.c_str(), H5P_DEFAULT));
  Handle ftype(H5Aget_type(a));
  if (H5Tget_class(ftype) != H5T_STRING) throw Error("attribute '" + name + "' is not a string");
  if (H5Tis_variable_str(ftype) > 0) {
    Handle type(H5Tcopy(H5T_C_S1));
    H5Tset_size(type, H5T_VARIABLE);
    H5Tset_cset(type, H5Tget_cset(ftype));  // HDF5 does not convert between ASCII and UTF-8
    char* p = nullptr;
    if (H5Aread(a, type, &p) < 0) throw Error("cannot read attribute '" + name + "'" + detail());
    std::string s = p ? p : "";
    H5free_memory(p);
    return s;
  }
  std::string s(H5Tget_size(ftype), '\0');
  if (H5Aread(a, ftype, s.data()) < 0) throw Error("cannot read attribute '" + name + "'" + detail());
  return s.substr(0, s.find('\0'));
}

void write_provenance(hid_t file, const Provenance& prov) {
  for (const auto& [k, v] : prov.fields()) write_attr(file, k, v);
}

std::vector<std::string> read_history(hid_t file) {
  std::vector<std::string> lines;
  if (!has_attr(file, "history")) return lines;
  std::istringstream in(read_attr_string(file, "history"));
  for (std::string l; std::getline(in, l);)
    if (!l.empty()) lines.push_back(l);
  return lines;
}

}  // namespace mdx::h5
