// HDF5 I/O without LibTorch: RAII handles, N-D datasets of uint8/int64/float16/float32/float64
// with chunking and gzip, row-range reads and writes along the first dimension, string datasets,
// string/number/JSON attributes, and atomic file creation. Every HDF5 failure becomes mlfd::Error
// naming the file and object path; HDF5's own error-stack printing is silenced.
#pragma once

#include <hdf5.h>

#include <cstdint>
#include <memory>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

namespace mlfd {

struct Provenance;  // util/provenance.h
namespace h5 {

enum class DType { kUInt8, kInt64, kFloat16, kFloat32, kFloat64 };
size_t DTypeSize(DType t);
std::string DTypeName(DType t);  // "uint8", "int64", "float16", "float32", "float64"

using Shape = std::vector<int64_t>;
std::string ShapeStr(const Shape& s);  // "[3, 28, 28]"
int64_t NumElements(const Shape& s);

// Owns one hid_t and closes it with the matching H5*close.
class Handle {
 public:
  enum Kind { kFile, kGroup, kDataset, kDataspace, kDatatype, kAttribute, kPlist, kObject };
  Handle() = default;
  Handle(hid_t id, Kind kind) : id_(id), kind_(kind) {}
  Handle(const Handle&) = delete;
  Handle& operator=(const Handle&) = delete;
  Handle(Handle&& o) noexcept : id_(o.id_), kind_(o.kind_) { o.id_ = -1; }
  Handle& operator=(Handle&& o) noexcept;
  ~Handle() { Close(); }
  hid_t get() const { return id_; }
  bool valid() const { return id_ >= 0; }
  void Close();

 private:
  hid_t id_ = -1;
  Kind kind_ = kFile;
};

struct DatasetOptions {
  int64_t chunk_rows = 0;  // rows of dim 0 per chunk; 0 = automatic (about 1 MiB a chunk)
  int gzip = 0;            // 0 = no compression, 1..9 = gzip level (with the shuffle filter)
  bool extendable = false; // dim 0 may grow or shrink later with File::Resize
};

struct DatasetInfo {
  DType dtype;
  Shape shape;
};

// HDF5's Fletcher32 checksum (the value its filter stores after each chunk), computed here so
// rows read without the library can still be verified.
uint32_t Fletcher32(const void* data, size_t bytes);
// Whether a chunk of `data_bytes` followed by its stored 4-byte checksum (little-endian) holds
// that checksum, as HDF5's filter decides (which also accepts the halves' bytes swapped, as
// libraries before 1.6.3 wrote them).
bool ChunkChecksumMatches(const void* chunk, size_t data_bytes);

// Where every row of a dataset stored one row per chunk lies in the file: what File::ReadChunkRows
// needs to read rows with pread instead of HDF5's selections (about 50 us a row in libhdf5 1.10,
// 50-100x below the disk's speed for the feature cache's shuffled batches).
struct RowChunks {
  std::string name;
  DType dtype;
  Shape shape;
  size_t row_bytes = 0;        // data bytes of one row
  bool fletcher32 = false;     // each chunk ends with its 4-byte checksum
  std::vector<uint64_t> addr;  // byte offset of row i's chunk in the file
};
// The file offset of the chunk of each of `rows` (any order, repeats allowed) of an indexed
// dataset; Error naming `file` and the dataset if a row is outside it.
std::vector<uint64_t> RowChunkAddresses(const RowChunks& index, const std::vector<int64_t>& rows,
                                        const std::string& file);
// The error of a row whose chunk does not hold its checksum: the same line as a read through HDF5.
[[noreturn]] void ThrowChunkChecksumMismatch(const std::string& file, const std::string& dataset, int64_t row);

class AtomicFile;

class File {
 public:
  // Creates (truncating) a file for writing. Prefer AtomicFile for outputs.
  static File Create(const std::string& path);
  // Creates the temporary of an atomic output; errors name the final path.
  static File Create(const AtomicFile& out);
  // Opens an existing file; fails with a clear error if missing or not HDF5.
  static File Open(const std::string& path, bool writable = false);

  File(File&&) = default;
  File& operator=(File&&) = default;
  const std::string& path() const { return path_; }
  void Close();
  void Flush();

  bool Exists(const std::string& object) const;  // dataset or group, nested paths allowed
  std::vector<std::string> List(const std::string& group = "/") const;  // child names, sorted

  // ---- datasets ----
  void CreateDataset(const std::string& name, DType dtype, const Shape& shape,
                     const DatasetOptions& opts = {});
  // Writes `n` rows starting at `row` (dim 0) from a contiguous buffer of the dataset's dtype.
  void WriteRows(const std::string& name, int64_t row, int64_t n, const void* data);
  // Create + write the whole array.
  void Write(const std::string& name, DType dtype, const Shape& shape, const void* data,
             const DatasetOptions& opts = {});
  DatasetInfo Info(const std::string& name) const;
  // Changes dim 0 of an extendable dataset (rows beyond the new size are dropped).
  void Resize(const std::string& name, int64_t rows);
  // Reads rows [row, row+n) converted to `as` into `out` (contiguous). Rank-0 datasets: row=0,n=1.
  void ReadRows(const std::string& name, int64_t row, int64_t n, void* out, DType as) const;
  // Reads the rows `rows` (ascending, distinct) converted to `as` into `out` (contiguous, in that
  // order) with one selection and one read: what a shuffled batch of a chunked dataset needs.
  void ReadRowList(const std::string& name, const std::vector<int64_t>& rows, void* out, DType as) const;
  // The chunk of every row when the dataset can be read directly: chunked one row per chunk, no
  // filter but Fletcher32, every chunk written, stored in the host's own byte order and type, in a
  // file opened with HDF5's default (sec2) driver. Null otherwise (read it with ReadRowList).
  // Looks every chunk up once (25-35 us a row in libhdf5 1.10: docs/performance.md).
  std::unique_ptr<RowChunks> IndexRowChunks(const std::string& name) const;
  // Reads rows `rows` (any order, repeats allowed) of an indexed dataset in its stored type into
  // `out` (contiguous, in that order) with pread on the file's own descriptor, adjacent chunks in
  // one call, and verifies each row's Fletcher32 checksum as HDF5 would (a mismatch is the same
  // "checksum mismatch" error as a read through HDF5).
  void ReadChunkRows(const RowChunks& index, const std::vector<int64_t>& rows, void* out) const;
  // Reads the whole dataset converted to `as`.
  void Read(const std::string& name, void* out, DType as) const;
  template <typename T>
  std::vector<T> ReadVector(const std::string& name) const;

  // Variable-length UTF-8 strings, written with their sha256 in the dataset's attribute "sha256"
  // and verified on read (HDF5 has no checksum of its own for them).
  void WriteStrings(const std::string& name, const std::vector<std::string>& values);
  std::vector<std::string> ReadStrings(const std::string& name) const;

  // ---- attributes on an object ("/" = root) ----
  void SetAttr(const std::string& object, const std::string& key, const std::string& value);
  void SetAttr(const std::string& object, const std::string& key, const char* value) {
    SetAttr(object, key, std::string(value));
  }
  void SetAttr(const std::string& object, const std::string& key, int64_t value);
  void SetAttr(const std::string& object, const std::string& key, double value);
  void SetAttr(const std::string& object, const std::string& key, const std::vector<double>& value);
  // JSON values are stored as their compact text (a string attribute).
  void SetJsonAttr(const std::string& object, const std::string& key, const nlohmann::json& v);
  bool HasAttr(const std::string& object, const std::string& key) const;
  std::string GetStringAttr(const std::string& object, const std::string& key) const;
  int64_t GetIntAttr(const std::string& object, const std::string& key) const;
  double GetDoubleAttr(const std::string& object, const std::string& key) const;
  std::vector<double> GetDoublesAttr(const std::string& object, const std::string& key) const;
  nlohmann::json GetJsonAttr(const std::string& object, const std::string& key) const;

  hid_t id() const { return file_.get(); }

 private:
  File(Handle h, std::string path) : file_(std::move(h)), path_(std::move(path)) {}
  Handle OpenDataset(const std::string& name) const;
  std::vector<std::string> ReadStringsUnchecked(const std::string& name) const;
  Handle OpenObject(const std::string& object) const;
  Handle OpenAttr(const std::string& object, const std::string& key) const;
  void ReplaceAttr(const std::string& object, const std::string& key, hid_t type, hid_t space,
                   const void* data);
  [[noreturn]] void Fail(const std::string& object, const std::string& what) const;
  // The name errors give the file: an atomic output's final path rather than its temporary.
  const std::string& shown() const { return shown_as_.empty() ? path_ : shown_as_; }
  Handle file_;
  std::string path_;
  std::string shown_as_;  // the name errors use (an atomic output's final path), if not path_
};

// Writes an output file under a temporary name in the same directory; Commit() renames it onto
// the final path. If Commit() is never reached (exception, kill), the destructor deletes the
// temporary, so make never sees a half-written file as up to date.
class AtomicFile {
 public:
  explicit AtomicFile(std::string final_path);
  ~AtomicFile();
  AtomicFile(const AtomicFile&) = delete;
  AtomicFile& operator=(const AtomicFile&) = delete;
  const std::string& temp_path() const { return temp_path_; }
  const std::string& final_path() const { return final_path_; }
  // Renames the temporary onto the final path (atomic on POSIX within one filesystem).
  void Commit();

 private:
  std::string final_path_, temp_path_;
  bool committed_ = false;
  int slot_ = -1;  // entry in the signal handler's list of temporaries
};

// Fails before heavy work if `path` cannot be written: its directory is missing or not writable,
// or it exists and is not a file this project wrote (`expected_format` is checked against the
// root attribute "format"; users' own files are never overwritten).
void CheckOutputPath(const std::string& path, const std::string& expected_format);

// Turns off HDF5's automatic error printing (idempotent; done by every File call anyway).
void SilenceErrors();

// True if `path` is an HDF5 file.
bool IsHdf5(const std::string& path);

}  // namespace h5

// Stores a provenance record as the JSON attribute "provenance" of the file root.
void WriteProvenance(h5::File& f, const Provenance& p);

}  // namespace mlfd
