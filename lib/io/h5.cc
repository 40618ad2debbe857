// HDF5 I/O implementation. Every call's status is checked; failures carry the file, the object
// path and HDF5's innermost error description.
#include "io/h5.h"

#include <fcntl.h>
#include <signal.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <atomic>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <map>
#include <mutex>

#include "util/error.h"
#include "util/file_roles.h"
#include "util/fs.h"
#include "util/provenance.h"
#include "util/sha256.h"

namespace mlfd {
namespace h5 {
namespace {

std::once_flag g_silence_once;

herr_t WalkCb(unsigned n, const H5E_error2_t* err, void* data) {
  auto* out = static_cast<std::string*>(data);
  if (n == 0 && err->desc) *out = err->desc;  // innermost (downward walk: first = API call)
  if (err->desc && std::strlen(err->desc) > 0) *out = err->desc;  // keep the deepest
  return 0;
}

// HDF5's deepest error description on one line, then clears the stack. A failed system write
// ("file write failed: time = ..., errno = 28, error message = 'No space left on device', ...")
// is shortened to the system's reason.
std::string Hdf5Message() {
  std::string msg;
  H5Ewalk2(H5E_DEFAULT, H5E_WALK_DOWNWARD, WalkCb, &msg);
  H5Eclear2(H5E_DEFAULT);
  const std::string key = "error message = '";
  auto k = msg.find(key);
  if (k != std::string::npos) {
    auto end = msg.find('\'', k + key.size());
    std::string what = msg.substr(0, msg.find(':'));
    msg = what + ": " + msg.substr(k + key.size(), end == std::string::npos ? std::string::npos : end - k - key.size());
  }
  for (char& c : msg)
    if (c == '\n' || c == '\r') c = ' ';
  return msg;
}

// The error of a failed dataset read: a Fletcher32 mismatch is named as corrupt data.
[[noreturn]] void ThrowReadError(const std::string& file, const std::string& name) {
  std::string detail = Hdf5Message();
  if (detail.find("Fletcher32") != std::string::npos || detail.find("checksum") != std::string::npos)
    throw Error(Msg(file, ":", name, ": checksum mismatch: the stored data is corrupt (", detail, ")"));
  throw Error(Msg(file, ":", name, ": read failed (corrupt file?)", detail.empty() ? "" : " (" + detail + ")"));
}

// HDF5 closes what is still open at exit. After a failed write (a full disk) a file it could not
// close is left half torn down, and closing it again at exit crashes inside HDF5: every file is
// closed explicitly, so the exit-time clean-up is turned off before the library starts.
[[maybe_unused]] const bool g_no_atexit = [] {
  H5dont_atexit();
  return true;
}();

hid_t Float16Type() {
  static hid_t t = [] {
    hid_t x = H5Tcopy(H5T_IEEE_F32LE);
    H5Tset_fields(x, 15, 10, 5, 0, 10);
    H5Tset_size(x, 2);
    H5Tset_ebias(x, 15);
    return x;
  }();
  return t;
}

hid_t MemType(DType t) {
  switch (t) {
    case DType::kUInt8: return H5T_NATIVE_UINT8;
    case DType::kInt64: return H5T_NATIVE_INT64;
    case DType::kFloat16: return Float16Type();
    case DType::kFloat32: return H5T_NATIVE_FLOAT;
    case DType::kFloat64: return H5T_NATIVE_DOUBLE;
  }
  return -1;
}

hid_t FileType(DType t) {
  switch (t) {
    case DType::kUInt8: return H5T_STD_U8LE;
    case DType::kInt64: return H5T_STD_I64LE;
    case DType::kFloat16: return Float16Type();
    case DType::kFloat32: return H5T_IEEE_F32LE;
    case DType::kFloat64: return H5T_IEEE_F64LE;
  }
  return -1;
}

std::vector<hsize_t> ToH(const Shape& s) { return std::vector<hsize_t>(s.begin(), s.end()); }

// Temp files of live AtomicFiles, removed by the SIGINT/SIGTERM handler.
constexpr int kMaxTemps = 64;
char g_temps[kMaxTemps][4096];
std::atomic<bool> g_temp_used[kMaxTemps];
std::once_flag g_signal_once;

void OnSignal(int sig) {
  for (int i = 0; i < kMaxTemps; ++i)
    if (g_temp_used[i].load()) unlink(g_temps[i]);
  signal(sig, SIG_DFL);
  raise(sig);
}

int RegisterTemp(const std::string& path) {
  std::call_once(g_signal_once, [] {
    signal(SIGINT, OnSignal);
    signal(SIGTERM, OnSignal);
  });
  for (int i = 0; i < kMaxTemps; ++i) {
    bool expected = false;
    if (path.size() < sizeof(g_temps[i]) && !g_temp_used[i].load()) {
      std::strcpy(g_temps[i], path.c_str());
      if (g_temp_used[i].compare_exchange_strong(expected, true)) return i;
    }
  }
  return -1;
}

}  // namespace

size_t DTypeSize(DType t) {
  switch (t) {
    case DType::kUInt8: return 1;
    case DType::kInt64: return 8;
    case DType::kFloat16: return 2;
    case DType::kFloat32: return 4;
    case DType::kFloat64: return 8;
  }
  return 0;
}

std::string DTypeName(DType t) {
  switch (t) {
    case DType::kUInt8: return "uint8";
    case DType::kInt64: return "int64";
    case DType::kFloat16: return "float16";
    case DType::kFloat32: return "float32";
    case DType::kFloat64: return "float64";
  }
  return "?";
}

std::string ShapeStr(const Shape& s) {
  std::string out = "[";
  for (size_t i = 0; i < s.size(); ++i) out += (i ? ", " : "") + std::to_string(s[i]);
  return out + "]";
}

int64_t NumElements(const Shape& s) {
  int64_t n = 1;
  for (auto d : s) n *= d;
  return n;
}

void SilenceErrors() {
  std::call_once(g_silence_once, [] { H5Eset_auto2(H5E_DEFAULT, nullptr, nullptr); });
}

Handle& Handle::operator=(Handle&& o) noexcept {
  if (this != &o) {
    Close();
    id_ = o.id_;
    kind_ = o.kind_;
    o.id_ = -1;
  }
  return *this;
}

void Handle::Close() {
  if (id_ < 0) return;
  switch (kind_) {
    case kFile: H5Fclose(id_); break;
    case kGroup: H5Gclose(id_); break;
    case kDataset: H5Dclose(id_); break;
    case kDataspace: H5Sclose(id_); break;
    case kDatatype: H5Tclose(id_); break;
    case kAttribute: H5Aclose(id_); break;
    case kPlist: H5Pclose(id_); break;
    case kObject: H5Oclose(id_); break;
  }
  id_ = -1;
}

bool IsHdf5(const std::string& path) {
  SilenceErrors();
  struct stat st;
  if (stat(path.c_str(), &st) != 0 || !S_ISREG(st.st_mode)) return false;
  htri_t r = H5Fis_hdf5(path.c_str());
  H5Eclear2(H5E_DEFAULT);
  return r > 0;
}

File File::Create(const std::string& path) {
  SilenceErrors();
  // The 1.8 file format: object headers and other metadata carry checksums of their own.
  Handle fapl(H5Pcreate(H5P_FILE_ACCESS), Handle::kPlist);
  H5Pset_libver_bounds(fapl.get(), H5F_LIBVER_V18, H5F_LIBVER_V18);
  hid_t id = H5Fcreate(path.c_str(), H5F_ACC_TRUNC, H5P_DEFAULT, fapl.get());
  if (id < 0) throw Error(Msg(path, ": cannot create HDF5 file (", Hdf5Message(), ")"));
  return File(Handle(id, Handle::kFile), path);
}

File File::Open(const std::string& path, bool writable) {
  SilenceErrors();
  struct stat st;
  if (stat(path.c_str(), &st) != 0) throw Error(Msg(path, ": no such file"));
  if (!S_ISREG(st.st_mode)) throw Error(Msg(path, ": not a regular file"));
  if (!IsHdf5(path)) throw Error(Msg(path, ": not an HDF5 file (corrupt or wrong file?)"));
  hid_t id = H5Fopen(path.c_str(), writable ? H5F_ACC_RDWR : H5F_ACC_RDONLY, H5P_DEFAULT);
  if (id < 0) throw Error(Msg(path, ": cannot open HDF5 file (", Hdf5Message(), ")"));
  return File(Handle(id, Handle::kFile), path);
}

void File::Close() {
  if (!file_.valid()) return;
  if (H5Fflush(file_.get(), H5F_SCOPE_LOCAL) < 0) Fail("/", "flush failed");
  file_.Close();
}

void File::Flush() {
  if (H5Fflush(file_.get(), H5F_SCOPE_LOCAL) < 0) Fail("/", "flush failed");
}

File File::Create(const AtomicFile& out) {
  try {
    File f = Create(out.temp_path());
    f.shown_as_ = out.final_path();
    return f;
  } catch (const Error& e) {  // name the output, not its temporary
    std::string what = e.what();
    if (what.compare(0, out.temp_path().size(), out.temp_path()) == 0)
      throw Error(out.final_path() + what.substr(out.temp_path().size()));
    throw;
  }
}

void File::Fail(const std::string& object, const std::string& what) const {
  std::string detail = Hdf5Message();
  if (detail.find("checksum") != std::string::npos || detail.find("Fletcher32") != std::string::npos)
    throw Error(Msg(shown(), ":", object, ": checksum mismatch: the file's metadata is corrupt (", what, ": ",
                    detail, ")"));
  throw Error(Msg(shown(), ":", object, ": ", what,
                  detail.empty() ? "" : " (" + detail + ")"));
}

bool File::Exists(const std::string& object) const {
  if (object == "/" || object.empty()) return true;
  std::string cur;
  size_t pos = object[0] == '/' ? 1 : 0;
  while (pos <= object.size()) {
    size_t next = object.find('/', pos);
    if (next == std::string::npos) next = object.size();
    cur += "/" + object.substr(pos, next - pos);
    htri_t r = H5Lexists(file_.get(), cur.c_str(), H5P_DEFAULT);
    if (r <= 0) {
      H5Eclear2(H5E_DEFAULT);
      return false;
    }
    pos = next + 1;
  }
  return true;
}

std::vector<std::string> File::List(const std::string& group) const {
  Handle g(H5Gopen2(file_.get(), group.c_str(), H5P_DEFAULT), Handle::kGroup);
  if (!g.valid()) Fail(group, "no such group");
  std::vector<std::string> names;
  H5Literate(
      g.get(), H5_INDEX_NAME, H5_ITER_INC, nullptr,
      [](hid_t, const char* name, const H5L_info_t*, void* data) -> herr_t {
        static_cast<std::vector<std::string>*>(data)->push_back(name);
        return 0;
      },
      &names);
  std::sort(names.begin(), names.end());
  return names;
}

Handle File::OpenDataset(const std::string& name) const {
  if (!Exists(name)) Fail(name, "no such dataset");
  Handle d(H5Dopen2(file_.get(), name.c_str(), H5P_DEFAULT), Handle::kDataset);
  if (!d.valid()) Fail(name, "cannot open dataset");
  return d;
}

Handle File::OpenObject(const std::string& object) const {
  if (!Exists(object)) Fail(object, "no such object");
  Handle o(H5Oopen(file_.get(), object.c_str(), H5P_DEFAULT), Handle::kObject);
  if (!o.valid()) Fail(object, "cannot open object");
  return o;
}

void File::CreateDataset(const std::string& name, DType dtype, const Shape& shape,
                         const DatasetOptions& opts) {
  for (auto d : shape)
    if (d < 0) Fail(name, "negative dimension in shape " + ShapeStr(shape));
  auto dims = ToH(shape);
  std::vector<hsize_t> maxdims = dims;
  if (opts.extendable && !maxdims.empty()) maxdims[0] = H5S_UNLIMITED;
  Handle space(shape.empty() ? H5Screate(H5S_SCALAR)
                             : H5Screate_simple(static_cast<int>(dims.size()), dims.data(),
                                                maxdims.data()),
               Handle::kDataspace);
  if (!space.valid()) Fail(name, "cannot create dataspace");
  Handle lcpl(H5Pcreate(H5P_LINK_CREATE), Handle::kPlist);
  H5Pset_create_intermediate_group(lcpl.get(), 1);
  Handle dcpl(H5Pcreate(H5P_DATASET_CREATE), Handle::kPlist);
  if (!shape.empty() && (shape[0] > 0 || opts.extendable)) {
    int64_t row_elems = 1;
    for (size_t i = 1; i < shape.size(); ++i) row_elems *= shape[i];
    int64_t row_bytes = std::max<int64_t>(1, row_elems * static_cast<int64_t>(DTypeSize(dtype)));
    int64_t rows = opts.chunk_rows > 0 ? opts.chunk_rows : std::max<int64_t>(1, (1 << 20) / row_bytes);
    if (!opts.extendable) rows = std::min(rows, shape[0]);
    std::vector<hsize_t> chunk = dims;
    chunk[0] = static_cast<hsize_t>(rows);
    if (row_elems > 0) {
      if (H5Pset_chunk(dcpl.get(), static_cast<int>(chunk.size()), chunk.data()) < 0)
        Fail(name, "cannot set chunking");
      if (opts.gzip > 0) {
        H5Pset_shuffle(dcpl.get());
        if (H5Pset_deflate(dcpl.get(), static_cast<unsigned>(std::min(opts.gzip, 9))) < 0)
          Fail(name, "cannot set gzip");
      }
      // A checksum per chunk (last filter: over the stored bytes, checked first on read): a flipped
      // byte fails the read naming the dataset, instead of feeding wrong weights or images on.
      // h5py and h5dump verify it too.
      if (H5Pset_fletcher32(dcpl.get()) < 0) Fail(name, "cannot set the Fletcher32 checksum");
    }
  }
  Handle d(H5Dcreate2(file_.get(), name.c_str(), FileType(dtype), space.get(), lcpl.get(),
                      dcpl.get(), H5P_DEFAULT),
           Handle::kDataset);
  if (!d.valid()) Fail(name, "cannot create dataset " + DTypeName(dtype) + " " + ShapeStr(shape));
}

void File::Resize(const std::string& name, int64_t rows) {
  Handle d = OpenDataset(name);
  DatasetInfo info = Info(name);
  if (info.shape.empty()) Fail(name, "cannot resize a scalar dataset");
  std::vector<hsize_t> dims = ToH(info.shape);
  dims[0] = static_cast<hsize_t>(rows);
  if (H5Dset_extent(d.get(), dims.data()) < 0) Fail(name, "cannot resize (not extendable?)");
}

void File::WriteRows(const std::string& name, int64_t row, int64_t n, const void* data) {
  Handle d = OpenDataset(name);
  Handle fspace(H5Dget_space(d.get()), Handle::kDataspace);
  DatasetInfo info = Info(name);
  if (info.shape.empty()) {
    if (row != 0 || n != 1) Fail(name, "scalar dataset: write row 0, count 1");
    if (H5Dwrite(d.get(), MemType(info.dtype), H5S_ALL, H5S_ALL, H5P_DEFAULT, data) < 0)
      Fail(name, "write failed");
    return;
  }
  if (row < 0 || n < 0 || row + n > info.shape[0])
    Fail(name, Msg("rows [", row, ", ", row + n, ") outside the dataset's ", info.shape[0], " rows"));
  if (n == 0) return;
  std::vector<hsize_t> start(info.shape.size(), 0), count = ToH(info.shape);
  start[0] = static_cast<hsize_t>(row);
  count[0] = static_cast<hsize_t>(n);
  H5Sselect_hyperslab(fspace.get(), H5S_SELECT_SET, start.data(), nullptr, count.data(), nullptr);
  Handle mspace(H5Screate_simple(static_cast<int>(count.size()), count.data(), nullptr),
                Handle::kDataspace);
  if (H5Dwrite(d.get(), MemType(info.dtype), mspace.get(), fspace.get(), H5P_DEFAULT, data) < 0)
    Fail(name, "write failed");
}

void File::Write(const std::string& name, DType dtype, const Shape& shape, const void* data,
                 const DatasetOptions& opts) {
  CreateDataset(name, dtype, shape, opts);
  WriteRows(name, 0, shape.empty() ? 1 : shape[0], data);
}

DatasetInfo File::Info(const std::string& name) const {
  Handle d = OpenDataset(name);
  Handle type(H5Dget_type(d.get()), Handle::kDatatype);
  Handle space(H5Dget_space(d.get()), Handle::kDataspace);
  int rank = H5Sget_simple_extent_ndims(space.get());
  if (rank < 0) Fail(name, "cannot read dataspace");
  std::vector<hsize_t> dims(static_cast<size_t>(rank));
  H5Sget_simple_extent_dims(space.get(), dims.data(), nullptr);
  DatasetInfo info;
  info.shape.assign(dims.begin(), dims.end());
  H5T_class_t cls = H5Tget_class(type.get());
  size_t size = H5Tget_size(type.get());
  if (cls == H5T_INTEGER) {
    info.dtype = (size == 1 && H5Tget_sign(type.get()) == H5T_SGN_NONE) ? DType::kUInt8 : DType::kInt64;
  } else if (cls == H5T_FLOAT) {
    info.dtype = size == 2 ? DType::kFloat16 : size == 4 ? DType::kFloat32 : DType::kFloat64;
  } else {
    Fail(name, "dataset is not numeric");
  }
  return info;
}

void File::ReadRows(const std::string& name, int64_t row, int64_t n, void* out, DType as) const {
  Handle d = OpenDataset(name);
  DatasetInfo info = Info(name);
  if (info.shape.empty()) {
    if (row != 0 || n != 1) Fail(name, "scalar dataset: read row 0, count 1");
    if (H5Dread(d.get(), MemType(as), H5S_ALL, H5S_ALL, H5P_DEFAULT, out) < 0)
      Fail(name, "read failed");
    return;
  }
  if (row < 0 || n < 0 || row + n > info.shape[0])
    Fail(name, Msg("rows [", row, ", ", row + n, ") outside the dataset's ", info.shape[0], " rows"));
  if (n == 0) return;
  Handle fspace(H5Dget_space(d.get()), Handle::kDataspace);
  std::vector<hsize_t> start(info.shape.size(), 0), count = ToH(info.shape);
  start[0] = static_cast<hsize_t>(row);
  count[0] = static_cast<hsize_t>(n);
  H5Sselect_hyperslab(fspace.get(), H5S_SELECT_SET, start.data(), nullptr, count.data(), nullptr);
  Handle mspace(H5Screate_simple(static_cast<int>(count.size()), count.data(), nullptr),
                Handle::kDataspace);
  if (H5Dread(d.get(), MemType(as), mspace.get(), fspace.get(), H5P_DEFAULT, out) < 0)
    ThrowReadError(shown(), name);
}

void File::ReadRowList(const std::string& name, const std::vector<int64_t>& rows, void* out, DType as) const {
  Handle d = OpenDataset(name);
  Handle fspace(H5Dget_space(d.get()), Handle::kDataspace);
  const int rank = H5Sget_simple_extent_ndims(fspace.get());
  if (rank < 1) Fail(name, "scalar dataset has no rows");
  std::vector<hsize_t> dims(static_cast<size_t>(rank));
  H5Sget_simple_extent_dims(fspace.get(), dims.data(), nullptr);
  if (rows.empty()) return;
  // One read per run of consecutive rows, on one open dataset and dataspace. (A single read of
  // the runs OR-ed into one selection is several times slower in libhdf5 1.10: its span trees.)
  const size_t row_bytes = [&] {
    size_t b = DTypeSize(as);
    for (size_t k = 1; k < dims.size(); ++k) b *= static_cast<size_t>(dims[k]);
    return b;
  }();
  std::vector<hsize_t> start(dims.size(), 0), count = dims;
  for (size_t i = 0; i < rows.size();) {
    if (rows[i] < 0 || static_cast<hsize_t>(rows[i]) >= dims[0] || (i > 0 && rows[i] <= rows[i - 1]))
      Fail(name, Msg("row ", rows[i], ": rows must be ascending, distinct and below ", dims[0]));
    size_t j = i + 1;
    while (j < rows.size() && rows[j] == rows[j - 1] + 1 && static_cast<hsize_t>(rows[j]) < dims[0]) ++j;
    start[0] = static_cast<hsize_t>(rows[i]);
    count[0] = static_cast<hsize_t>(j - i);
    if (H5Sselect_hyperslab(fspace.get(), H5S_SELECT_SET, start.data(), nullptr, count.data(), nullptr) < 0)
      Fail(name, "cannot select the rows");
    Handle mspace(H5Screate_simple(rank, count.data(), nullptr), Handle::kDataspace);
    if (H5Dread(d.get(), MemType(as), mspace.get(), fspace.get(), H5P_DEFAULT,
                static_cast<char*>(out) + i * row_bytes) < 0)
      ThrowReadError(shown(), name);
    i = j;
  }
}

uint32_t Fletcher32(const void* bytes_in, size_t bytes) {
  // HDF5's H5_checksum_fletcher32: big-endian 16-bit words, both sums folded to 16 bits after
  // every block of 360 words. Within a block its running sums are written in closed form
  // (sum2 += n * sum1 + sum of (n - i) * w_i, sum1 += sum of w_i), which the compiler vectorises;
  // uint32 arithmetic wraps exactly as HDF5's loop does, so the value is the same to the bit.
  const uint8_t* data = static_cast<const uint8_t*>(bytes_in);
  size_t len = bytes / 2;
  uint32_t sum1 = 0, sum2 = 0;
  while (len) {
    const size_t n = len > 360 ? 360 : len;
    len -= n;
    uint32_t s = 0, w = 0;
    for (size_t i = 0; i < n; ++i) {
      const uint32_t v = (static_cast<uint32_t>(data[2 * i]) << 8) | data[2 * i + 1];
      s += v;
      w += static_cast<uint32_t>(n - i) * v;
    }
    data += 2 * n;
    sum2 += static_cast<uint32_t>(n) * sum1 + w;
    sum1 += s;
    sum1 = (sum1 & 0xffff) + (sum1 >> 16);
    sum2 = (sum2 & 0xffff) + (sum2 >> 16);
  }
  if (bytes % 2) {
    sum1 += static_cast<uint32_t>(*data) << 8;
    sum2 += sum1;
    sum1 = (sum1 & 0xffff) + (sum1 >> 16);
    sum2 = (sum2 & 0xffff) + (sum2 >> 16);
  }
  sum1 = (sum1 & 0xffff) + (sum1 >> 16);
  sum2 = (sum2 & 0xffff) + (sum2 >> 16);
  return (sum2 << 16) | sum1;
}

bool ChunkChecksumMatches(const void* chunk, size_t data_bytes) {
  const uint32_t sum = Fletcher32(chunk, data_bytes);
  const auto* c = static_cast<const uint8_t*>(chunk) + data_bytes;
  const uint32_t kept = c[0] | (uint32_t{c[1]} << 8) | (uint32_t{c[2]} << 16) | (uint32_t{c[3]} << 24);
  const uint32_t swapped = ((sum & 0x00ff00ffu) << 8) | ((sum & 0xff00ff00u) >> 8);
  return kept == sum || kept == swapped;
}

std::unique_ptr<RowChunks> File::IndexRowChunks(const std::string& name) const {
#if !defined(__BYTE_ORDER__) || __BYTE_ORDER__ != __ORDER_LITTLE_ENDIAN__
  return nullptr;  // the stored types are little-endian
#endif
  Handle d = OpenDataset(name);
  const DatasetInfo info = Info(name);
  const int rank = static_cast<int>(info.shape.size());
  if (rank == 0 || info.shape[0] == 0) return nullptr;
  Handle dcpl(H5Dget_create_plist(d.get()), Handle::kPlist);
  if (!dcpl.valid()) Fail(name, "cannot read the dataset's creation properties");
  if (H5Pget_layout(dcpl.get()) != H5D_CHUNKED) return nullptr;
  std::vector<hsize_t> chunk(static_cast<size_t>(rank));
  if (H5Pget_chunk(dcpl.get(), rank, chunk.data()) != rank || chunk[0] != 1) return nullptr;
  for (int k = 1; k < rank; ++k)
    if (chunk[static_cast<size_t>(k)] != static_cast<hsize_t>(info.shape[static_cast<size_t>(k)])) return nullptr;
  auto index = std::make_unique<RowChunks>();
  const int nfilters = H5Pget_nfilters(dcpl.get());
  for (int i = 0; i < nfilters; ++i) {
    unsigned flags = 0;
    size_t nvalues = 0;
    H5Z_filter_t f = H5Pget_filter2(dcpl.get(), static_cast<unsigned>(i), &flags, &nvalues, nullptr, 0, nullptr, nullptr);
    if (f != H5Z_FILTER_FLETCHER32) return nullptr;
    index->fletcher32 = true;
  }
  Handle type(H5Dget_type(d.get()), Handle::kDatatype);
  if (!type.valid() || H5Tequal(type.get(), MemType(info.dtype)) <= 0) {
    H5Eclear2(H5E_DEFAULT);
    return nullptr;
  }
  Handle fapl(H5Fget_access_plist(file_.get()), Handle::kPlist);
  if (!fapl.valid() || H5Pget_driver(fapl.get()) != H5FD_SEC2) {
    H5Eclear2(H5E_DEFAULT);
    return nullptr;
  }
  index->name = name;
  index->dtype = info.dtype;
  index->shape = info.shape;
  index->row_bytes = DTypeSize(info.dtype);
  for (int k = 1; k < rank; ++k) index->row_bytes *= static_cast<size_t>(info.shape[static_cast<size_t>(k)]);
  const hsize_t stored = index->row_bytes + (index->fletcher32 ? 4 : 0);
  index->addr.resize(static_cast<size_t>(info.shape[0]));
  std::vector<hsize_t> offset(static_cast<size_t>(rank), 0);
  for (int64_t r = 0; r < info.shape[0]; ++r) {
    offset[0] = static_cast<hsize_t>(r);
    unsigned mask = 0;
    haddr_t addr = HADDR_UNDEF;
    hsize_t size = 0;
    if (H5Dget_chunk_info_by_coord(d.get(), offset.data(), &mask, &addr, &size) < 0)
      Fail(name, Msg("cannot look up the chunk of row ", r));
    if (addr == HADDR_UNDEF || mask != 0 || size != stored) return nullptr;  // unwritten or not as expected
    index->addr[static_cast<size_t>(r)] = static_cast<uint64_t>(addr);
  }
  return index;
}

std::vector<uint64_t> RowChunkAddresses(const RowChunks& index, const std::vector<int64_t>& rows,
                                        const std::string& file) {
  const int64_t n_rows = static_cast<int64_t>(index.addr.size());
  std::vector<uint64_t> addrs(rows.size());
  for (size_t k = 0; k < rows.size(); ++k) {
    if (rows[k] < 0 || rows[k] >= n_rows)
      throw Error(Msg(file, ":", index.name, ": row ", rows[k], " outside the dataset's ", n_rows, " rows"));
    addrs[k] = index.addr[static_cast<size_t>(rows[k])];
  }
  return addrs;
}

void ThrowChunkChecksumMismatch(const std::string& file, const std::string& dataset, int64_t row) {
  throw Error(Msg(file, ":", dataset, ": checksum mismatch: the stored data is corrupt (row ", row,
                  ": data error detected by Fletcher32 checksum)"));
}

void File::ReadChunkRows(const RowChunks& index, const std::vector<int64_t>& rows, void* out) const {
  const std::vector<uint64_t> addrs = RowChunkAddresses(index, rows, shown());
  if (rows.empty()) return;
  void* handle = nullptr;
  if (H5Fget_vfd_handle(file_.get(), H5P_DEFAULT, &handle) < 0 || handle == nullptr)
    Fail(index.name, "cannot reach the file's descriptor");
  const int fd = *static_cast<int*>(handle);
  const size_t stored = index.row_bytes + (index.fletcher32 ? 4 : 0);
  std::vector<size_t> order(rows.size());
  for (size_t k = 0; k < order.size(); ++k) order[k] = k;
  std::sort(order.begin(), order.end(), [&](size_t a, size_t b) { return addrs[a] < addrs[b]; });
  constexpr size_t kMaxRunBytes = size_t{32} << 20;
  std::vector<char> buf;
  char* dst = static_cast<char*>(out);
  for (size_t i = 0; i < order.size();) {
    // A run of chunks that follow each other in the file (a repeated row is the same chunk).
    const uint64_t first = addrs[order[i]];
    uint64_t last = first;
    size_t j = i + 1;
    while (j < order.size()) {
      const uint64_t a = addrs[order[j]];
      if (a != last && (a != last + stored || a + stored - first > kMaxRunBytes)) break;
      last = a;
      ++j;
    }
    const size_t span = static_cast<size_t>(last - first) + stored;
    if (buf.size() < span) buf.resize(span);
    for (size_t got = 0; got < span;) {
      ssize_t r = pread(fd, buf.data() + got, span - got, static_cast<off_t>(first + got));
      if (r < 0 && errno == EINTR) continue;
      if (r <= 0)
        throw Error(Msg(shown(), ":", index.name, ": read failed (", r < 0 ? std::strerror(errno) : "the file ends early: truncated?", ")"));
      got += static_cast<size_t>(r);
    }
    uint64_t checked = UINT64_MAX;
    for (size_t k = i; k < j; ++k) {
      const uint64_t a = addrs[order[k]];
      const char* chunk = buf.data() + (a - first);
      if (index.fletcher32 && a != checked) {
        if (!ChunkChecksumMatches(chunk, index.row_bytes)) ThrowChunkChecksumMismatch(shown(), index.name, rows[order[k]]);
        checked = a;
      }
      std::memcpy(dst + order[k] * index.row_bytes, chunk, index.row_bytes);
    }
    i = j;
  }
}

void File::Read(const std::string& name, void* out, DType as) const {
  DatasetInfo info = Info(name);
  ReadRows(name, 0, info.shape.empty() ? 1 : info.shape[0], out, as);
}

template <typename T>
std::vector<T> File::ReadVector(const std::string& name) const {
  DType as;
  if constexpr (std::is_same_v<T, uint8_t>) as = DType::kUInt8;
  else if constexpr (std::is_same_v<T, int64_t>) as = DType::kInt64;
  else if constexpr (std::is_same_v<T, float>) as = DType::kFloat32;
  else as = DType::kFloat64;
  std::vector<T> out(static_cast<size_t>(NumElements(Info(name).shape)));
  Read(name, out.data(), as);
  return out;
}
template std::vector<uint8_t> File::ReadVector<uint8_t>(const std::string&) const;
template std::vector<int64_t> File::ReadVector<int64_t>(const std::string&) const;
template std::vector<float> File::ReadVector<float>(const std::string&) const;
template std::vector<double> File::ReadVector<double>(const std::string&) const;

namespace {

// HDF5 keeps variable-length strings in its global heap, which has no checksum: a flipped byte in
// a class name would be read as another name. The sha256 of the list (each string with its length,
// so that no two lists collide by concatenation) is kept in an attribute of the dataset, whose
// object header is checksummed.
constexpr const char* kStringsSha256 = "sha256";

std::string StringsDigest(const std::vector<std::string>& values) {
  Sha256 h;
  for (const auto& v : values) {
    const std::string len = std::to_string(v.size()) + ":";
    h.Update(len.data(), len.size());
    h.Update(v.data(), v.size());
  }
  return h.HexDigest();
}

}  // namespace

void File::WriteStrings(const std::string& name, const std::vector<std::string>& values) {
  Handle type(H5Tcopy(H5T_C_S1), Handle::kDatatype);
  H5Tset_size(type.get(), H5T_VARIABLE);
  H5Tset_cset(type.get(), H5T_CSET_UTF8);
  hsize_t n = values.size();
  Handle space(H5Screate_simple(1, &n, nullptr), Handle::kDataspace);
  Handle lcpl(H5Pcreate(H5P_LINK_CREATE), Handle::kPlist);
  H5Pset_create_intermediate_group(lcpl.get(), 1);
  Handle d(H5Dcreate2(file_.get(), name.c_str(), type.get(), space.get(), lcpl.get(), H5P_DEFAULT,
                      H5P_DEFAULT),
           Handle::kDataset);
  if (!d.valid()) Fail(name, "cannot create string dataset");
  std::vector<const char*> ptrs;
  for (auto& v : values) ptrs.push_back(v.c_str());
  if (n > 0 && H5Dwrite(d.get(), type.get(), H5S_ALL, H5S_ALL, H5P_DEFAULT, ptrs.data()) < 0)
    Fail(name, "write failed");
  SetAttr(name, kStringsSha256, StringsDigest(values));
}

std::vector<std::string> File::ReadStrings(const std::string& name) const {
  std::vector<std::string> out = ReadStringsUnchecked(name);
  // Files written before the digest existed are read unverified.
  if (HasAttr(name, kStringsSha256) && GetStringAttr(name, kStringsSha256) != StringsDigest(out))
    throw Error(Msg(shown(), ":", name, ": checksum mismatch: the stored strings are corrupt (their sha256 differs "
                    "from the one recorded when they were written)"));
  return out;
}

std::vector<std::string> File::ReadStringsUnchecked(const std::string& name) const {
  Handle d = OpenDataset(name);
  Handle ftype(H5Dget_type(d.get()), Handle::kDatatype);
  if (H5Tget_class(ftype.get()) != H5T_STRING) Fail(name, "not a string dataset");
  Handle space(H5Dget_space(d.get()), Handle::kDataspace);
  hssize_t n = H5Sget_simple_extent_npoints(space.get());
  std::vector<std::string> out;
  if (n <= 0) return out;
  if (H5Tis_variable_str(ftype.get()) > 0) {
    Handle mtype(H5Tcopy(H5T_C_S1), Handle::kDatatype);
    H5Tset_size(mtype.get(), H5T_VARIABLE);
    H5Tset_cset(mtype.get(), H5Tget_cset(ftype.get()));
    std::vector<char*> ptrs(static_cast<size_t>(n), nullptr);
    if (H5Dread(d.get(), mtype.get(), H5S_ALL, H5S_ALL, H5P_DEFAULT, ptrs.data()) < 0)
      Fail(name, "read failed");
    for (auto* p : ptrs) out.emplace_back(p ? p : "");
    H5Dvlen_reclaim(mtype.get(), space.get(), H5P_DEFAULT, ptrs.data());
  } else {
    size_t len = H5Tget_size(ftype.get());
    std::vector<char> buf(len * static_cast<size_t>(n));
    if (H5Dread(d.get(), ftype.get(), H5S_ALL, H5S_ALL, H5P_DEFAULT, buf.data()) < 0)
      Fail(name, "read failed");
    for (hssize_t i = 0; i < n; ++i) {
      const char* s = buf.data() + i * len;
      out.emplace_back(s, strnlen(s, len));
    }
  }
  return out;
}

void File::ReplaceAttr(const std::string& object, const std::string& key, hid_t type, hid_t space,
                       const void* data) {
  Handle obj = OpenObject(object);
  if (H5Aexists(obj.get(), key.c_str()) > 0) H5Adelete(obj.get(), key.c_str());
  Handle a(H5Acreate2(obj.get(), key.c_str(), type, space, H5P_DEFAULT, H5P_DEFAULT),
           Handle::kAttribute);
  if (!a.valid()) Fail(object, "cannot create attribute '" + key + "'");
  if (H5Awrite(a.get(), type, data) < 0) Fail(object, "cannot write attribute '" + key + "'");
}

void File::SetAttr(const std::string& object, const std::string& key, const std::string& value) {
  Handle type(H5Tcopy(H5T_C_S1), Handle::kDatatype);
  H5Tset_size(type.get(), H5T_VARIABLE);
  H5Tset_cset(type.get(), H5T_CSET_UTF8);
  Handle space(H5Screate(H5S_SCALAR), Handle::kDataspace);
  const char* p = value.c_str();
  ReplaceAttr(object, key, type.get(), space.get(), &p);
}

void File::SetAttr(const std::string& object, const std::string& key, int64_t value) {
  Handle space(H5Screate(H5S_SCALAR), Handle::kDataspace);
  ReplaceAttr(object, key, H5T_NATIVE_INT64, space.get(), &value);
}

void File::SetAttr(const std::string& object, const std::string& key, double value) {
  Handle space(H5Screate(H5S_SCALAR), Handle::kDataspace);
  ReplaceAttr(object, key, H5T_NATIVE_DOUBLE, space.get(), &value);
}

void File::SetAttr(const std::string& object, const std::string& key,
                   const std::vector<double>& value) {
  hsize_t n = value.size();
  Handle space(H5Screate_simple(1, &n, nullptr), Handle::kDataspace);
  ReplaceAttr(object, key, H5T_NATIVE_DOUBLE, space.get(), value.data());
}

void File::SetJsonAttr(const std::string& object, const std::string& key, const nlohmann::json& v) {
  SetAttr(object, key, v.dump());
}

bool File::HasAttr(const std::string& object, const std::string& key) const {
  if (!Exists(object)) return false;
  Handle obj = OpenObject(object);
  htri_t r = H5Aexists(obj.get(), key.c_str());
  // An error is not "no such attribute": a corrupt object header must not read as another kind of file.
  if (r < 0) Fail(object, "cannot read its attributes");
  return r > 0;
}

Handle File::OpenAttr(const std::string& object, const std::string& key) const {
  Handle obj = OpenObject(object);
  if (H5Aexists(obj.get(), key.c_str()) <= 0) Fail(object, "missing attribute '" + key + "'");
  Handle a(H5Aopen(obj.get(), key.c_str(), H5P_DEFAULT), Handle::kAttribute);
  if (!a.valid()) Fail(object, "cannot open attribute '" + key + "'");
  return a;
}

std::string File::GetStringAttr(const std::string& object, const std::string& key) const {
  Handle a = OpenAttr(object, key);
  Handle ftype(H5Aget_type(a.get()), Handle::kDatatype);
  if (H5Tget_class(ftype.get()) != H5T_STRING) Fail(object, "attribute '" + key + "' is not a string");
  if (H5Tis_variable_str(ftype.get()) > 0) {
    Handle mtype(H5Tcopy(H5T_C_S1), Handle::kDatatype);
    H5Tset_size(mtype.get(), H5T_VARIABLE);
    H5Tset_cset(mtype.get(), H5Tget_cset(ftype.get()));
    char* p = nullptr;
    if (H5Aread(a.get(), mtype.get(), &p) < 0) Fail(object, "cannot read attribute '" + key + "'");
    std::string s = p ? p : "";
    H5free_memory(p);
    return s;
  }
  size_t len = H5Tget_size(ftype.get());
  std::vector<char> buf(len + 1, 0);
  if (H5Aread(a.get(), ftype.get(), buf.data()) < 0) Fail(object, "cannot read attribute '" + key + "'");
  return std::string(buf.data(), strnlen(buf.data(), len));
}

int64_t File::GetIntAttr(const std::string& object, const std::string& key) const {
  Handle a = OpenAttr(object, key);
  int64_t v = 0;
  if (H5Aread(a.get(), H5T_NATIVE_INT64, &v) < 0) Fail(object, "attribute '" + key + "' is not an integer");
  return v;
}

double File::GetDoubleAttr(const std::string& object, const std::string& key) const {
  Handle a = OpenAttr(object, key);
  double v = 0;
  if (H5Aread(a.get(), H5T_NATIVE_DOUBLE, &v) < 0) Fail(object, "attribute '" + key + "' is not a number");
  return v;
}

std::vector<double> File::GetDoublesAttr(const std::string& object, const std::string& key) const {
  Handle a = OpenAttr(object, key);
  Handle space(H5Aget_space(a.get()), Handle::kDataspace);
  std::vector<double> v(static_cast<size_t>(H5Sget_simple_extent_npoints(space.get())));
  if (!v.empty() && H5Aread(a.get(), H5T_NATIVE_DOUBLE, v.data()) < 0)
    Fail(object, "attribute '" + key + "' is not numeric");
  return v;
}

nlohmann::json File::GetJsonAttr(const std::string& object, const std::string& key) const {
  std::string s = GetStringAttr(object, key);
  try {
    return nlohmann::json::parse(s);
  } catch (const nlohmann::json::exception& e) {
    throw Error(Msg(path_, ":", object, ": attribute '", key, "' is not valid JSON"));
  }
}

// ---------------------------------------------------------------------------------------------

AtomicFile::AtomicFile(std::string final_path) : final_path_(std::move(final_path)) {
  static std::atomic<int> counter{0};
  RemoveOrphanTemps(final_path_);
  temp_path_ = HiddenSibling(final_path_, Msg(".tmp-", getpid(), "-", counter++));
  slot_ = RegisterTemp(temp_path_);
}

AtomicFile::~AtomicFile() {
  if (!committed_) std::remove(temp_path_.c_str());
  if (slot_ >= 0) g_temp_used[slot_] = false;
}

void AtomicFile::Commit() {
  if (std::rename(temp_path_.c_str(), final_path_.c_str()) != 0)
    throw Error(Msg(final_path_, ": cannot move finished output into place: ", std::strerror(errno)));
  committed_ = true;
}

namespace {

// The output locks this process holds: lock file path -> descriptor. Released (and the files
// removed) when the process exits; a killed process's lock is released by the kernel, and its
// file is reused by the next writer.
std::mutex g_output_locks_mu;
std::map<std::string, int> g_output_locks;

void RemoveOutputLocks() {
  std::lock_guard<std::mutex> guard(g_output_locks_mu);
  for (auto& [file, fd] : g_output_locks) {
    unlink(file.c_str());  // while still holding it: a waiting opener then sees a stale inode
    close(fd);
  }
  g_output_locks.clear();
}

// Takes the exclusive lock of output `path` (the file .<name>.lock beside it) for the rest of
// the process, or fails naming the process that holds it. Taking it again is a no-op.
void LockOutput(const std::string& path) {
  const std::string lock = HiddenSibling(path, ".lock");
  std::lock_guard<std::mutex> guard(g_output_locks_mu);
  if (g_output_locks.count(lock)) return;
  static std::once_flag at_exit_once;
  std::call_once(at_exit_once, [] { std::atexit(RemoveOutputLocks); });
  for (int attempt = 0; attempt < 10; ++attempt) {
    int fd = open(lock.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0644);
    if (fd < 0) throw Error(Msg(path, ": cannot create its lock file ", lock, ": ", std::strerror(errno)));
    if (flock(fd, LOCK_EX | LOCK_NB) != 0) {
      char buf[32] = {0};
      ssize_t n = pread(fd, buf, sizeof(buf) - 1, 0);
      close(fd);
      std::string pid = n > 0 ? std::string(buf, static_cast<size_t>(n)) : "";
      pid.erase(std::remove_if(pid.begin(), pid.end(), [](char c) { return c < '0' || c > '9'; }), pid.end());
      throw Error(Msg(path, ": another process", pid.empty() ? "" : " (pid " + pid + ")",
                      " is writing this output; wait for it to finish or choose another output path"));
    }
    // The holder may have removed the file between our open and our lock: lock the file that is
    // there now.
    struct stat held, now;
    if (fstat(fd, &held) == 0 && stat(lock.c_str(), &now) == 0 && held.st_ino == now.st_ino &&
        held.st_dev == now.st_dev) {
      const std::string me = std::to_string(getpid()) + "\n";
      if (ftruncate(fd, 0) != 0 || pwrite(fd, me.data(), me.size(), 0) < 0) {
        // The pid is only for the message of a second writer; the lock holds without it.
      }
      g_output_locks[lock] = fd;
      return;
    }
    close(fd);
  }
  throw Error(Msg(path, ": could not take its lock file ", lock, " (it keeps being replaced)"));
}

}  // namespace

void CheckOutputPath(const std::string& path, const std::string& expected_format) {
  if (path.empty()) throw UsageError("output path is empty");
  CheckOutputDirectory(path);
  DeclareOutput("", path);  // never an input of this command, nor another of its outputs
  LockOutput(path);  // one writer per output (before looking at what is there)
  struct stat st;
  if (stat(path.c_str(), &st) == 0) {
    if (!S_ISREG(st.st_mode)) throw Error(Msg(path, ": exists and is not a regular file"));
    std::string found;  // what the file is, for the message
    if (IsHdf5(path)) {
      try {
        File f = File::Open(path);
        if (f.HasAttr("/", "format")) {
          found = f.GetStringAttr("/", "format");
          if (found == expected_format) return;
          found = "a " + found + " file, not a " + expected_format + " file";
        } else {
          found = "an HDF5 file without this tool's \"format\" attribute (not written by it)";
        }
      } catch (const Error&) {
        found = "an unreadable HDF5 file (truncated or corrupt)";
      }
    } else {
      char magic[8] = {0};
      FILE* fp = std::fopen(path.c_str(), "rb");
      size_t n = fp ? std::fread(magic, 1, sizeof(magic), fp) : 0;
      if (fp) std::fclose(fp);
      if (n == 8 && std::memcmp(magic, "\211HDF\r\n\032\n", 8) == 0)
        found = "an unreadable HDF5 file (truncated or corrupt)";
      else if (st.st_size == 0)
        found = "an empty file";
      else
        found = "not an HDF5 file";
    }
    throw Error(Msg(path, ": exists and is ", found, "; refusing to overwrite it (delete or move it if it is "
                    "an old output)"));
  }
}

}  // namespace h5

void WriteProvenance(h5::File& f, const Provenance& p) { f.SetJsonAttr("/", "provenance", p.json); }

}  // namespace mlfd
