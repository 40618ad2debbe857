// MATLAB level-5 MAT-file reader (format: "MAT-File Format", The MathWorks, sections 1-4).
#include "io/mat5.h"

#include <zlib.h>

#include <cstring>
#include <fstream>
#include <sstream>

#include "util/error.h"

namespace mlfd {
namespace mat5 {

namespace {

// Data types of data elements.
enum : uint32_t {
  kInt8 = 1,
  kUInt8 = 2,
  kInt16 = 3,
  kUInt16 = 4,
  kInt32 = 5,
  kUInt32 = 6,
  kSingle = 7,
  kDouble = 9,
  kInt64 = 12,
  kUInt64 = 13,
  kMatrix = 14,
  kCompressed = 15,
};

const char* ClassName(uint32_t cls, bool logical) {
  static const char* names[] = {"unknown", "cell",   "struct", "object", "char",     "sparse",
                                "double",  "single", "int8",   "uint8",  "int16",    "uint16",
                                "int32",   "uint32", "int64",  "uint64", "function", "opaque"};
  if (logical) return "logical";
  return cls < sizeof(names) / sizeof(names[0]) ? names[cls] : "unknown";
}

bool HostIsBigEndian() {
  const uint16_t one = 1;
  uint8_t first;
  std::memcpy(&first, &one, 1);
  return first == 0;
}

// A bounds-checked view of bytes in the file's byte order. `where` prefixes messages ("file" or
// "file: variable 3 (compressed)").
class Bytes {
 public:
  // `base` is where p lies in the enclosing buffer, so messages give whole-buffer offsets.
  Bytes(const uint8_t* p, size_t n, bool swap, std::string where, size_t base = 0)
      : p_(p), n_(n), swap_(swap), where_(std::move(where)), base_(base) {}
  size_t size() const { return n_; }
  const uint8_t* data() const { return p_; }
  bool swap() const { return swap_; }
  const std::string& where() const { return where_; }
  size_t base() const { return base_; }

  [[noreturn]] void Fail(size_t off, const std::string& what) const {
    throw Error(
        Msg(where_, ": byte ", base_ + off, ": ", what, " (corrupt or truncated MAT-file?)"));
  }
  void Need(size_t off, size_t len, const char* what) const {
    if (off > n_ || len > n_ - off)
      Fail(off, Msg(what, " needs ", len, " bytes but only ", off > n_ ? 0 : n_ - off, " remain"));
  }
  // Reads a value of type T at `off`, swapping bytes if the file's order differs from ours.
  template <typename T>
  T Get(size_t off) const {
    Need(off, sizeof(T), "value");
    uint8_t b[sizeof(T)];
    std::memcpy(b, p_ + off, sizeof(T));
    if (swap_)
      for (size_t i = 0; i < sizeof(T) / 2; ++i) std::swap(b[i], b[sizeof(T) - 1 - i]);
    T v;
    std::memcpy(&v, b, sizeof(T));
    return v;
  }

 private:
  const uint8_t* p_;
  size_t n_;
  bool swap_;
  std::string where_;
  size_t base_;
};

// One data element: its type, payload [data, data + nbytes) and where the next one starts.
struct Element {
  uint32_t type = 0;
  size_t nbytes = 0, data = 0, next = 0;
};

Element ReadElement(const Bytes& b, size_t off) {
  b.Need(off, 8, "data element tag");
  Element e;
  uint32_t w0 = b.Get<uint32_t>(off);
  if ((w0 >> 16) != 0) {  // small data element: type, size and up to 4 bytes in 8
    e.type = w0 & 0xffff;
    e.nbytes = w0 >> 16;
    if (e.nbytes > 4) b.Fail(off, Msg("small data element claims ", e.nbytes, " bytes (max 4)"));
    e.data = off + 4;
    e.next = off + 8;
    return e;
  }
  e.type = w0;
  e.nbytes = b.Get<uint32_t>(off + 4);
  e.data = off + 8;
  b.Need(e.data, e.nbytes, Msg("data element of type ", e.type).c_str());
  // Payloads are padded to 8 bytes, except compressed ones; a last element may lack padding.
  size_t padded = e.type == kCompressed ? e.nbytes : (e.nbytes + 7) / 8 * 8;
  e.next = std::min(e.data + padded, b.size());
  return e;
}

template <typename T>
std::vector<double> Convert(const Bytes& b, const Element& e, const std::string& var) {
  if (e.nbytes % sizeof(T) != 0)
    b.Fail(e.data, Msg("variable '", var, "': ", e.nbytes, " bytes is not a whole number of ",
                       sizeof(T), "-byte values"));
  std::vector<double> out(e.nbytes / sizeof(T));
  for (size_t i = 0; i < out.size(); ++i)
    out[i] = static_cast<double>(b.Get<T>(e.data + i * sizeof(T)));
  return out;
}

// MATLAB stores a class's values in any type that holds them (e.g. a double array of small
// integers as miUINT8), so convert by storage type, not by class.
std::vector<double> ToDoubles(const Bytes& b, const Element& e, const std::string& var) {
  switch (e.type) {
    case kInt8:
      return Convert<int8_t>(b, e, var);
    case kUInt8:
      return Convert<uint8_t>(b, e, var);
    case kInt16:
      return Convert<int16_t>(b, e, var);
    case kUInt16:
      return Convert<uint16_t>(b, e, var);
    case kInt32:
      return Convert<int32_t>(b, e, var);
    case kUInt32:
      return Convert<uint32_t>(b, e, var);
    case kSingle:
      return Convert<float>(b, e, var);
    case kDouble:
      return Convert<double>(b, e, var);
    case kInt64:
      return Convert<int64_t>(b, e, var);
    case kUInt64:
      return Convert<uint64_t>(b, e, var);
    default:
      throw Error(
          Msg(b.where(), ": variable '", var, "': unsupported numeric storage type ", e.type));
  }
}

// Parses the payload of an miMATRIX element: array flags, dimensions, name, real part.
Variable ParseMatrix(const Bytes& b, const Element& m) {
  Bytes p(b.data() + m.data, m.nbytes, b.swap(), b.where(), b.base() + m.data);
  Variable v;
  Element flags = ReadElement(p, 0);
  if (flags.type != kUInt32 || flags.nbytes != 8)
    p.Fail(0, "array flags sub-element expected (miUINT32, 8 bytes)");
  uint32_t f = p.Get<uint32_t>(flags.data);
  uint32_t cls = f & 0xff;
  v.complex = (f & 0x800) != 0;
  v.class_name = ClassName(cls, (f & 0x200) != 0);

  Element dims = ReadElement(p, flags.next);
  if (dims.type != kInt32 || dims.nbytes % 4 != 0 || dims.nbytes < 8)
    p.Fail(flags.next, "dimensions sub-element expected (miINT32, at least 2 values)");
  int64_t count = 1;
  for (size_t i = 0; i < dims.nbytes / 4; ++i) {
    int32_t d = p.Get<int32_t>(dims.data + 4 * i);
    if (d < 0) p.Fail(dims.data + 4 * i, Msg("negative dimension ", d));
    v.dims.push_back(d);
    if (__builtin_mul_overflow(count, int64_t{d}, &count))
      p.Fail(dims.data + 4 * i, "dimensions hold more than 2^63 elements");
  }

  Element name = ReadElement(p, dims.next);
  if (name.type != kInt8 && name.type != kUInt8)
    p.Fail(dims.next, "array name sub-element expected");
  v.name.assign(reinterpret_cast<const char*>(p.data() + name.data), name.nbytes);

  v.numeric = cls >= 6 && cls <= 15;  // double .. uint64 (char, cell, struct, sparse are not)
  if (!v.numeric) return v;
  Element real = ReadElement(p, name.next);
  v.data = ToDoubles(p, real, v.name);
  if (static_cast<int64_t>(v.data.size()) != count)
    throw Error(Msg(b.where(), ": variable '", v.name, "': ", v.data.size(),
                    " values for dimensions of ", count, " elements"));
  return v;
}

// Inflates an miCOMPRESSED payload (a zlib stream holding one uncompressed data element).
std::string Inflate(const Bytes& b, const Element& e) {
  z_stream z;
  std::memset(&z, 0, sizeof(z));
  if (inflateInit(&z) != Z_OK) throw Error(Msg(b.where(), ": zlib initialisation failed"));
  z.next_in = const_cast<Bytef*>(b.data() + e.data);
  z.avail_in = static_cast<uInt>(e.nbytes);
  std::string out;
  int rc = Z_OK;
  std::vector<char> buf(1 << 16);
  while (rc != Z_STREAM_END) {
    z.next_out = reinterpret_cast<Bytef*>(buf.data());
    z.avail_out = static_cast<uInt>(buf.size());
    rc = inflate(&z, Z_NO_FLUSH);
    out.append(buf.data(), buf.size() - z.avail_out);
    if (rc == Z_BUF_ERROR && z.avail_in == 0) break;  // input ended early: judged by the caller
    if (rc != Z_OK && rc != Z_STREAM_END) {
      std::string msg = z.msg ? z.msg : Msg("zlib error ", rc);
      inflateEnd(&z);
      b.Fail(e.data, "compressed variable cannot be inflated: " + msg);
    }
  }
  inflateEnd(&z);
  return out;
}

}  // namespace

std::vector<Variable> ReadAll(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) throw Error(Msg(path, ": cannot open"));
  std::ostringstream ss;
  ss << in.rdbuf();
  const std::string file = ss.str();
  if (file.size() < 128) throw Error(Msg(path, ": not a MAT-file (", file.size(), " bytes)"));
  if (std::memcmp(file.data(), "\0\0\0\0", 4) == 0)
    throw Error(Msg(path, ": a level-4 MAT-file; only level 5 (save -v6/-v7) is supported"));
  bool big;
  if (file[126] == 'I' && file[127] == 'M') {
    big = false;
  } else if (file[126] == 'M' && file[127] == 'I') {
    big = true;
  } else {
    throw Error(Msg(path, ": not a level-5 MAT-file (no endian indicator at byte 126)"));
  }
  const auto* bytes = reinterpret_cast<const uint8_t*>(file.data());
  Bytes b(bytes, file.size(), big != HostIsBigEndian(), path);
  if (b.Get<uint16_t>(124) == 0x0200)
    throw Error(Msg(path, ": a MAT 7.3 (HDF5) file; save it with -v7 to read it here"));

  std::vector<Variable> vars;
  for (size_t off = 128; off + 8 <= file.size();) {
    Element e = ReadElement(b, off);
    if (e.type == kCompressed) {
      std::string raw = Inflate(b, e);
      Bytes z(reinterpret_cast<const uint8_t*>(raw.data()), raw.size(), b.swap(),
              Msg(path, ": inside the compressed element at byte ", off));
      Element inner = ReadElement(z, 0);  // also checks the inflated data is complete
      if (inner.type == kMatrix && inner.nbytes > 0) vars.push_back(ParseMatrix(z, inner));
    } else if (e.type == kMatrix && e.nbytes > 0) {
      vars.push_back(ParseMatrix(b, e));
    }  // other top-level elements (subsystem data, empty arrays) hold no variable we read
    off = e.next;
  }
  return vars;
}

std::vector<double> ReadNumeric(const std::string& path, const std::string& name,
                                std::vector<int64_t>* dims) {
  auto vars = ReadAll(path);
  std::string names;
  for (auto& v : vars) {
    if (v.name == name) {
      if (!v.numeric)
        throw Error(
            Msg(path, ": variable '", name, "' is a ", v.class_name, " array, not a numeric one"));
      if (dims) *dims = v.dims;
      return std::move(v.data);
    }
    names += (names.empty() ? "" : ", ") + v.name;
  }
  throw Error(Msg(path, ": no variable '", name,
                  "' (the file has: ", names.empty() ? "no variables" : names, ")"));
}

}  // namespace mat5
}  // namespace mlfd
