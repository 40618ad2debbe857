// HDF5 I/O: round trips for every dtype, row-range reads, attributes, strings, error messages,
// atomic writes, and h5py reading what we write.
#include <catch2/catch.hpp>
#include <torch/torch.h>

#include <cmath>
#include <cstring>
#include <filesystem>
#include <fstream>

#include "io/h5.h"
#include "io/half.h"
#include "io/mapped_file.h"
#include "io/tensor_io.h"
#include "test_util.h"
#include "util/error.h"

using namespace mlfd;
using mlfd_test::TempDir;

TEST_CASE("h5: tensors of every dtype round-trip exactly", "[unit][h5]") {
  TempDir tmp;
  torch::manual_seed(1);
  std::vector<std::pair<std::string, torch::Tensor>> cases = {
      {"u8", torch::randint(0, 256, {5, 3, 4}, torch::kUInt8)},
      {"i64", torch::randint(-1000000000000LL, 1000000000000LL, {7}, torch::kInt64)},
      {"f16", torch::randn({4, 2, 3, 3}).to(torch::kFloat16)},
      {"f32", torch::randn({6, 5})},
      {"f64", torch::randn({3}, torch::kFloat64)},
  };
  {
    h5::File f = h5::File::Create(tmp / "t.h5");
    for (auto& [name, t] : cases) WriteTensor(f, "group/" + name, t, {2, 4});
  }
  h5::File f = h5::File::Open(tmp / "t.h5");
  for (auto& [name, t] : cases) {
    torch::Tensor back = ReadTensor(f, "group/" + name);
    INFO(name);
    CHECK(back.scalar_type() == t.scalar_type());
    CHECK(back.sizes() == t.sizes());
    CHECK(torch::equal(back, t));
  }
  CHECK(f.List("group") == std::vector<std::string>{"f16", "f32", "f64", "i64", "u8"});
}

TEST_CASE("h5: row ranges are read and written without touching other rows", "[unit][h5]") {
  TempDir tmp;
  torch::Tensor t = torch::arange(10 * 3 * 2, torch::kFloat32).reshape({10, 3, 2});
  {
    h5::File f = h5::File::Create(tmp / "r.h5");
    f.CreateDataset("x", h5::DType::kFloat32, {10, 3, 2}, {1, 0});
    WriteTensorRows(f, "x", 0, t.slice(0, 0, 4));
    WriteTensorRows(f, "x", 4, t.slice(0, 4, 10));
    CHECK_THROWS_WITH(WriteTensorRows(f, "x", 8, t.slice(0, 0, 4)), Catch::Contains("outside"));
    CHECK_THROWS_WITH(WriteTensorRows(f, "x", 0, torch::zeros({2, 3, 3})),
                      Catch::Contains("cannot write rows"));
  }
  h5::File f = h5::File::Open(tmp / "r.h5");
  CHECK(torch::equal(ReadTensorRows(f, "x", 3, 4), t.slice(0, 3, 7)));
  CHECK(torch::equal(ReadTensor(f, "x"), t));
  // Conversion on read: float16 stored, float32 requested.
  h5::File g = h5::File::Create(tmp / "h.h5");
  torch::Tensor half = torch::tensor({0.5f, -2.0f, 1024.0f}).to(torch::kFloat16);
  WriteTensor(g, "h", half);
  std::vector<float> as_float(3);
  g.Read("h", as_float.data(), h5::DType::kFloat32);
  CHECK(as_float == std::vector<float>{0.5f, -2.0f, 1024.0f});
}

TEST_CASE("h5: a row list is read with one selection in the asked order of the file", "[unit][h5]") {
  TempDir tmp;
  torch::Tensor t = torch::arange(12 * 2 * 3, torch::kFloat32).reshape({12, 2, 3}).to(torch::kFloat16);
  {
    h5::File f = h5::File::Create(tmp / "l.h5");
    f.CreateDataset("x", h5::DType::kFloat16, {12, 2, 3}, {1, 0});  // one chunk per row, as caches
    WriteTensorRows(f, "x", 0, t);
  }
  h5::File f = h5::File::Open(tmp / "l.h5");
  const std::vector<int64_t> rows{0, 1, 2, 5, 7, 8, 11};  // runs 0-2, 5, 7-8, 11
  torch::Tensor got = torch::empty({7, 2, 3}, torch::kFloat16);
  f.ReadRowList("x", rows, got.data_ptr(), h5::DType::kFloat16);
  CHECK(torch::equal(got, t.index_select(0, torch::tensor(rows))));
  std::vector<float> as_float(7 * 6);  // with conversion
  f.ReadRowList("x", rows, as_float.data(), h5::DType::kFloat32);
  CHECK(as_float[3 * 6] == 5 * 6);
  CHECK(as_float[6 * 6 + 5] == 11 * 6 + 5);
  f.ReadRowList("x", {}, nullptr, h5::DType::kFloat16);  // nothing asked, nothing read
  CHECK_THROWS_WITH(f.ReadRowList("x", {3, 2}, got.data_ptr(), h5::DType::kFloat16),
                    Catch::Contains("rows must be ascending, distinct and below 12"));
  CHECK_THROWS_WITH(f.ReadRowList("x", {1, 12}, got.data_ptr(), h5::DType::kFloat16),
                    Catch::Contains("row 12: rows must be ascending"));
}

namespace {
// HDF5's own Fletcher32 loop (H5_checksum_fletcher32), word by word.
uint32_t ReferenceFletcher32(const uint8_t* data, size_t bytes) {
  size_t len = bytes / 2;
  uint32_t sum1 = 0, sum2 = 0;
  while (len) {
    size_t n = len > 360 ? 360 : len;
    len -= n;
    do {
      sum1 += (static_cast<uint32_t>(data[0]) << 8) | data[1];
      data += 2;
      sum2 += sum1;
    } while (--n);
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
}  // namespace

TEST_CASE("h5: Fletcher32 is HDF5's checksum to the bit", "[unit][h5]") {
  std::vector<uint8_t> bytes(100003);
  uint32_t x = 7;
  for (auto& b : bytes) b = static_cast<uint8_t>((x = x * 1664525u + 1013904223u) >> 24);
  for (size_t n : {0, 1, 2, 3, 719, 720, 721, 722, 6272, 100003}) {
    INFO(n);
    CHECK(h5::Fletcher32(bytes.data(), n) == ReferenceFletcher32(bytes.data(), n));
  }
  std::vector<uint8_t> ones(9999, 0xff);  // the largest words: the sums wrap as HDF5's do
  CHECK(h5::Fletcher32(ones.data(), ones.size()) == ReferenceFletcher32(ones.data(), ones.size()));
  // By hand: words 0x6162, 0x6364 and the odd byte as 0x6500; sum1 = 0x129c6 -> 0x29c7,
  // sum2 = 0x6162 + 0xc4c6 -> 0x2629, + 0x129c6 = 0x14fef -> 0x4ff0.
  const uint8_t abcde[] = {'a', 'b', 'c', 'd', 'e'};
  CHECK(h5::Fletcher32(abcde, 5) == 0x4ff029c7);
}

TEST_CASE("h5: rows stored one per chunk are read directly, in any order, checksums verified", "[unit][h5]") {
  TempDir tmp;
  torch::manual_seed(3);
  torch::Tensor half = torch::randn({9, 3, 5}).to(torch::kFloat16);
  torch::Tensor single = torch::randn({9, 4});
  torch::Tensor odd = torch::randint(0, 256, {9, 7}, torch::kUInt8);  // 7 bytes a row: the odd byte
  {
    h5::File f = h5::File::Create(tmp / "c.h5");
    auto put = [&](const std::string& name, const torch::Tensor& t, h5::DatasetOptions o) {
      std::vector<int64_t> shape(t.sizes().begin(), t.sizes().end());
      h5::DType dt = t.scalar_type() == torch::kFloat16 ? h5::DType::kFloat16
                     : t.scalar_type() == torch::kUInt8 ? h5::DType::kUInt8 : h5::DType::kFloat32;
      f.CreateDataset(name, dt, shape, o);
      WriteTensorRows(f, name, 0, t);
    };
    put("half", half, {1, 0});
    put("single", single, {1, 0});
    put("odd", odd, {1, 0});
    put("two_rows_a_chunk", single, {2, 0});
    put("gzip", single, {1, 4});
  }
  h5::File f = h5::File::Open(tmp / "c.h5");
  const std::vector<int64_t> rows{8, 0, 3, 3, 5, 4, 0};  // any order, repeats
  torch::Tensor idx = torch::tensor(rows);
  for (auto [name, t] : {std::pair<const char*, torch::Tensor>{"half", half}, {"single", single}, {"odd", odd}}) {
    INFO(name);
    auto index = f.IndexRowChunks(name);
    REQUIRE(index != nullptr);
    CHECK(index->fletcher32);
    CHECK(index->addr.size() == 9);
    auto shape = t.sizes().vec();
    shape[0] = 7;
    torch::Tensor got = torch::empty(shape, t.options());
    f.ReadChunkRows(*index, rows, got.data_ptr());
    CHECK(torch::equal(got, t.index_select(0, idx)));
    CHECK_THROWS_WITH(f.ReadChunkRows(*index, {9}, got.data_ptr()), Catch::Contains("row 9 outside the dataset's 9 rows"));
  }
  // Other layouts are left to HDF5's reader.
  CHECK(f.IndexRowChunks("two_rows_a_chunk") == nullptr);
  CHECK(f.IndexRowChunks("gzip") == nullptr);
  // A flipped bit in row 5's chunk: that row is refused, the others still read.
  auto index = f.IndexRowChunks("single");
  const uint64_t at = index->addr[5] + 9;
  f.Close();
  {
    std::fstream io(tmp / "c.h5", std::ios::in | std::ios::out | std::ios::binary);
    io.seekg(static_cast<std::streamoff>(at));
    char b = 0;
    io.read(&b, 1);
    b = static_cast<char>(b ^ 0x04);
    io.seekp(static_cast<std::streamoff>(at));
    io.write(&b, 1);
  }
  h5::File g = h5::File::Open(tmp / "c.h5");
  auto gi = g.IndexRowChunks("single");
  REQUIRE(gi != nullptr);
  torch::Tensor one = torch::empty({2, 4});
  g.ReadChunkRows(*gi, {4, 6}, one.data_ptr());
  CHECK(torch::equal(one, single.index_select(0, torch::tensor({4, 6}))));
  CHECK_THROWS_WITH(g.ReadChunkRows(*gi, {4, 5}, one.data_ptr()),
                    Catch::Contains("single: checksum mismatch: the stored data is corrupt (row 5"));
  // HDF5's reader agrees that the data is corrupt.
  CHECK_THROWS_WITH(ReadTensor(g, "single"), Catch::Contains("checksum mismatch"));
}

TEST_CASE("half: every float16 bit pattern converts to the float32 ATen gives, with F16C and without", "[unit][h5]") {
  std::vector<uint16_t> all(65536 + 5);  // + 5: a tail shorter than one 8-wide step
  for (size_t i = 0; i < all.size(); ++i) all[i] = static_cast<uint16_t>(i);
  torch::Tensor aten = torch::from_blob(all.data(), {static_cast<int64_t>(all.size())}, torch::kFloat16).to(torch::kFloat32);
  std::vector<float> fast(all.size());
  HalfToFloat(all.data(), fast.data(), all.size());
  const float* want = aten.data_ptr<float>();
  size_t differ = 0, nans = 0;
  for (size_t i = 0; i < all.size(); ++i) {
    const float slow = HalfBitsToFloat(all[i]);
    if (std::isnan(want[i])) {
      ++nans;
      if (!std::isnan(fast[i]) || !std::isnan(slow)) ++differ;
      continue;
    }
    uint32_t a, b, c;
    std::memcpy(&a, &want[i], 4);
    std::memcpy(&b, &fast[i], 4);
    std::memcpy(&c, &slow, 4);
    if (a != b || a != c) ++differ;
  }
  CHECK(differ == 0);
  CHECK(nans == 2 * 1023);  // exponent 31, mantissa != 0, both signs
  CHECK(HalfBitsToFloat(0x0001) == std::ldexp(1.0f, -24));  // the smallest subnormal
  CHECK(HalfBitsToFloat(0x7bff) == 65504.0f);
  CHECK(std::isinf(HalfBitsToFloat(0xfc00)));
}

TEST_CASE("mapped file: rows gathered from the mapping, checksums verified once, a corrupt row and a shrunk file refused",
          "[unit][h5]") {
  TempDir tmp;
  torch::manual_seed(4);
  torch::Tensor half = torch::randn({12, 16, 8, 8}).to(torch::kFloat16);
  {
    h5::File f = h5::File::Create(tmp / "m.h5");
    f.CreateDataset("half", h5::DType::kFloat16, {12, 16, 8, 8}, {1, 0});
    WriteTensorRows(f, "half", 0, half);
  }
  std::unique_ptr<h5::RowChunks> index;
  {
    h5::File f = h5::File::Open(tmp / "m.h5");
    index = f.IndexRowChunks("half");
  }
  REQUIRE(index != nullptr);
  REQUIRE(index->row_bytes == 2048);
  const std::vector<int64_t> rows{11, 0, 7, 7, 3};  // any order, repeats
  auto gather = [&](const MappedFile& m, const std::vector<int64_t>& which, std::vector<uint8_t>& verified,
                    torch::Tensor& out) {
    std::vector<uint64_t> offsets;
    for (int64_t r : which) offsets.push_back(index->addr[static_cast<size_t>(r)]);
    out = torch::empty({static_cast<int64_t>(which.size()), 16, 8, 8}, torch::kFloat16);
    return m.Gather(offsets.data(), which.data(), which.size(), index->row_bytes, true, verified.data(),
                    static_cast<char*>(out.data_ptr()));
  };
  std::vector<uint8_t> verified(12, 0);
  torch::Tensor got;
  {
    MappedFile m(tmp / "m.h5");
    CHECK(m.size() == std::filesystem::file_size(tmp / "m.h5"));
    CHECK(gather(m, rows, verified, got) == -1);
    CHECK(torch::equal(got, half.index_select(0, torch::tensor(rows))));
    CHECK(verified == std::vector<uint8_t>{1, 0, 0, 1, 0, 0, 0, 1, 0, 0, 0, 1});  // the rows read, once each
  }
  // A flipped byte in row 5: refused (the index of the first bad row in the request), its flag
  // stays clear, the other rows still read.
  {
    std::fstream io(tmp / "m.h5", std::ios::in | std::ios::out | std::ios::binary);
    io.seekg(static_cast<std::streamoff>(index->addr[5] + 700));
    char b = 0;
    io.read(&b, 1);
    b = static_cast<char>(b ^ 0x20);
    io.seekp(static_cast<std::streamoff>(index->addr[5] + 700));
    io.write(&b, 1);
  }
  {
    MappedFile m(tmp / "m.h5");
    CHECK(gather(m, {2, 5, 6}, verified, got) == 1);
    CHECK(verified[2] == 1);
    CHECK(verified[5] == 0);
    CHECK(gather(m, {6, 4}, verified, got) == -1);
    CHECK(torch::equal(got, half.index_select(0, torch::tensor({6, 4}))));
  }
  // The file shrinks under the mapping: the fault of the touched page is one Error, and the
  // process goes on (a later mapping of the short file refuses the row before touching it).
  {
    MappedFile m(tmp / "m.h5");
    const uint64_t last = index->addr[11];
    REQUIRE(last > 8192);
    std::filesystem::resize_file(tmp / "m.h5", 4096);
    std::vector<uint8_t> fresh(12, 0);
    CHECK_THROWS_WITH(gather(m, {11}, fresh, got), Catch::Contains("m.h5: read failed (the file shrank while it was read"));
    MappedFile again(tmp / "m.h5");
    CHECK_THROWS_WITH(gather(again, {11}, fresh, got), Catch::Contains("read failed (the file ends early at 4096 bytes"));
  }
  CHECK_THROWS_WITH(MappedFile(tmp / "none.h5"), Catch::Contains("none.h5: cannot open for reading"));
}

TEST_CASE("h5: attributes and strings", "[unit][h5]") {
  TempDir tmp;
  {
    h5::File f = h5::File::Create(tmp / "a.h5");
    f.SetAttr("/", "s", "héllo");
    f.SetAttr("/", "i", int64_t{-42});
    f.SetAttr("/", "d", 2.5);
    f.SetAttr("/", "v", std::vector<double>{1, 2, 3});
    f.SetJsonAttr("/", "j", nlohmann::json{{"k", {1, 2}}});
    f.WriteStrings("names", {"a", "", "T-shirt/top"});
    std::vector<int64_t> x{1, 2};
    f.Write("grp/x", h5::DType::kInt64, {2}, x.data());
    f.SetAttr("grp/x", "unit", "count");
    f.SetAttr("/", "s", "replaced");
  }
  h5::File f = h5::File::Open(tmp / "a.h5");
  CHECK(f.GetStringAttr("/", "s") == "replaced");
  CHECK(f.GetIntAttr("/", "i") == -42);
  CHECK(f.GetDoubleAttr("/", "d") == 2.5);
  CHECK(f.GetDoublesAttr("/", "v") == std::vector<double>{1, 2, 3});
  CHECK(f.GetJsonAttr("/", "j")["k"][1] == 2);
  CHECK(f.ReadStrings("names") == std::vector<std::string>{"a", "", "T-shirt/top"});
  CHECK(f.GetStringAttr("grp/x", "unit") == "count");
  CHECK(f.HasAttr("/", "i"));
  CHECK_FALSE(f.HasAttr("/", "nope"));
  CHECK(f.Exists("grp/x"));
  CHECK_FALSE(f.Exists("grp/y"));
  CHECK_FALSE(f.Exists("nope/y"));
}

TEST_CASE("h5: errors name the file and the object", "[unit][h5]") {
  TempDir tmp;
  CHECK_THROWS_WITH(h5::File::Open(tmp / "missing.h5"), Catch::Contains("missing.h5: no such file"));
  mlfd_test::WriteText(tmp / "junk.h5", "this is not hdf5");
  CHECK_THROWS_WITH(h5::File::Open(tmp / "junk.h5"), Catch::Contains("not an HDF5 file"));
  h5::File f = h5::File::Create(tmp / "e.h5");
  CHECK_THROWS_WITH(ReadTensor(f, "absent/x"), Catch::Contains("e.h5:absent/x: no such dataset"));
  CHECK_THROWS_WITH(f.GetStringAttr("/", "nokey"), Catch::Contains("missing attribute 'nokey'"));
  std::vector<uint8_t> b(4);
  f.Write("b", h5::DType::kUInt8, {4}, b.data());
  CHECK_THROWS_WITH(f.ReadRows("b", 2, 5, b.data(), h5::DType::kUInt8), Catch::Contains("outside"));
}

TEST_CASE("h5: a truncated file is reported, not crashed on", "[unit][h5]") {
  TempDir tmp;
  {
    h5::File f = h5::File::Create(tmp / "full.h5");
    WriteTensor(f, "x", torch::randn({2000, 64}), {100, 0});
  }
  std::string bytes = mlfd_test::ReadText(tmp / "full.h5");
  mlfd_test::WriteText(tmp / "cut.h5", bytes.substr(0, bytes.size() / 2));
  bool threw = false;
  try {
    h5::File f = h5::File::Open(tmp / "cut.h5");
    ReadTensor(f, "x");
  } catch (const Error& e) {
    threw = true;
    CHECK(std::string(e.what()).find("cut.h5") != std::string::npos);
  }
  CHECK(threw);
}

TEST_CASE("h5: atomic files appear only on commit", "[unit][h5]") {
  TempDir tmp;
  std::string final_path = tmp / "out.h5";
  {
    h5::AtomicFile a(final_path);
    h5::File f = h5::File::Create(a.temp_path());
    f.SetAttr("/", "format", "x");
    f.Close();
    CHECK(mlfd_test::FileExists(a.temp_path()));
    CHECK_FALSE(mlfd_test::FileExists(final_path));
    // no Commit(): an exception or early return
  }
  CHECK_FALSE(mlfd_test::FileExists(final_path));
  CHECK(std::filesystem::is_empty(tmp.path()));
  {
    h5::AtomicFile a(final_path);
    h5::File f = h5::File::Create(a.temp_path());
    f.SetAttr("/", "format", "x");
    f.Close();
    a.Commit();
  }
  CHECK(mlfd_test::FileExists(final_path));
}

TEST_CASE("h5: outputs never overwrite a user's file", "[unit][h5]") {
  TempDir tmp;
  mlfd_test::WriteText(tmp / "notes.h5", "my notes");
  CHECK_THROWS_WITH(h5::CheckOutputPath(tmp / "notes.h5", "mlfd.image_store"),
                    Catch::Contains("refusing to overwrite"));
  {
    h5::File f = h5::File::Create(tmp / "other.h5");
    f.SetAttr("/", "format", "mlfd.checkpoint");
  }
  CHECK_THROWS(h5::CheckOutputPath(tmp / "other.h5", "mlfd.image_store"));
  {
    h5::File f = h5::File::Create(tmp / "ours.h5");
    f.SetAttr("/", "format", "mlfd.image_store");
  }
  CHECK_NOTHROW(h5::CheckOutputPath(tmp / "ours.h5", "mlfd.image_store"));
  CHECK_NOTHROW(h5::CheckOutputPath(tmp / "new.h5", "mlfd.image_store"));
  CHECK_THROWS_WITH(h5::CheckOutputPath(tmp / "nodir/new.h5", "mlfd.image_store"),
                    Catch::Contains("does not exist"));
}

TEST_CASE("h5: h5py reads our float16, strings and attributes", "[stage][h5][python]") {
  TempDir tmp;
  {
    h5::File f = h5::File::Create(tmp / "p.h5");
    WriteTensor(f, "h", torch::tensor({0.25f, -3.5f, 65504.0f}).to(torch::kFloat16));
    f.WriteStrings("names", {"x", "y"});
    f.SetAttr("/", "format", "test");
    f.SetAttr("/", "v", std::vector<double>{0.5, 1.5});
  }
  auto r = mlfd_test::RunPython(tmp.path(),
                                "import sys, h5py, numpy as np\n"
                                "f = h5py.File(sys.argv[1], 'r')\n"
                                "h = f['h'][()]\n"
                                "assert h.dtype == np.float16, h.dtype\n"
                                "assert list(h) == [0.25, -3.5, 65504.0], h\n"
                                "names = [s.decode() if isinstance(s, bytes) else s for s in f['names'][()]]\n"
                                "assert names == ['x', 'y'], names\n"
                                "assert f.attrs['format'] == 'test'\n"
                                "assert list(f.attrs['v']) == [0.5, 1.5]\n"
                                "print('ok')\n",
                                tmp / "p.h5");
  INFO(r.err);
  CHECK(r.exit_code == 0);
  CHECK(r.out == "ok\n");
}
