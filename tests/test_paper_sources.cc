// The paper datasets' source readers (CIFAR binary, CUB-200-2011, Flowers-102 with its MAT-files)
// and the shipped manifests: synthetic trees in each official layout are read through the shipped
// data_manifests/*.json, checked sample by sample, and prepared end to end into image stores. The
// MAT v5 reader is checked against files written here in both byte orders, with compressed
// (zlib) and packed small elements. Corrupt inputs must give an Error naming the file.
#include <zlib.h>

#include <algorithm>
#include <catch2/catch.hpp>
#include <cstring>
#include <filesystem>
#include <map>
#include <opencv2/imgcodecs.hpp>
#include <set>

#include "data/image_store.h"
#include "data/prepare.h"
#include "data/source_readers.h"
#include "io/mat5.h"
#include "test_util.h"
#include "util/error.h"
#include "util/json_view.h"
#include "util/provenance.h"

using namespace mlfd;
using Catch::Matchers::Contains;
using mlfd_test::TempDir;
using mlfd_test::WriteText;
namespace fs = std::filesystem;

namespace {

std::string ShippedManifest(const std::string& name) {
  return std::string(MLFD_SOURCE_DIR) + "/data_manifests/" + name + ".json";
}

// Every sample of every source of a manifest, as prepare_data lists them.
std::vector<RawSample> ReadSources(const Manifest& m, const std::string& data_root) {
  std::vector<RawSample> out;
  for (const auto& src : m.sources) {
    SourceContext ctx{m, src, data_root};
    for (auto& s : ReadSource(ctx)) out.push_back(std::move(s));
  }
  return out;
}

// The message of the Error that `f` throws ("" if it throws none).
template <typename F>
std::string ErrorOf(F&& f) {
  try {
    f();
  } catch (const Error& e) {
    return e.what();
  }
  return "";
}

// A small solid image (BGR, as OpenCV writes it) so stored pixels can be traced back.
void WriteImage(const std::string& path, int value) {
  fs::create_directories(fs::path(path).parent_path());
  cv::Mat img(6, 7, CV_8UC3, cv::Scalar(value, value + 1, value + 2));
  REQUIRE(cv::imwrite(path, img));
}

PrepareSummary Prepare(const std::string& manifest, const std::string& out,
                       const std::string& data_root) {
  PrepareOptions o;
  o.data_root = data_root;
  return PrepareData(manifest, out, o, Provenance{}, 2);
}

// ---- CIFAR binary records ----

// Channel c of pixel p of record i: distinct per record, plane and position.
uint8_t CifarPixel(int i, int c, int p) {
  return static_cast<uint8_t>((i * 31 + c * 85 + p) % 256);
}

std::string CifarRecords(const std::vector<std::vector<int>>& labels, int first_index = 0) {
  std::string out;
  for (size_t r = 0; r < labels.size(); ++r) {
    for (int b : labels[r]) out.push_back(static_cast<char>(b));
    for (int c = 0; c < 3; ++c)
      for (int p = 0; p < 1024; ++p)
        out.push_back(static_cast<char>(CifarPixel(first_index + static_cast<int>(r), c, p)));
  }
  return out;
}

// ---- MAT v5 writer (little or big endian; the layout of MATLAB's `save -v7`) ----

class MatWriter {
 public:
  enum Type : uint32_t {
    kInt8 = 1,
    kUInt8 = 2,
    kUInt16 = 4,
    kInt32 = 5,
    kUInt32 = 6,
    kDouble = 9,
    kMatrix = 14,
    kCompressed = 15
  };

  explicit MatWriter(bool big_endian = false) : big_(big_endian) {
    std::string text = "MATLAB 5.0 MAT-file, written by test_paper_sources";
    text.resize(116, ' ');
    out_ = text + std::string(8, '\0');
    out_ += Bytes<uint16_t>(0x0100);
    out_ += big_ ? "MI" : "IM";
  }

  // A double-class array stored as `storage` (MATLAB narrows integer-valued doubles like this).
  void AddNumeric(const std::string& name, std::vector<int32_t> dims,
                  const std::vector<double>& values, Type storage = kDouble,
                  bool compress = false) {
    std::string real;
    for (double v : values) {
      switch (storage) {
        case kUInt8:
          real += Bytes<uint8_t>(static_cast<uint8_t>(v));
          break;
        case kUInt16:
          real += Bytes<uint16_t>(static_cast<uint16_t>(v));
          break;
        case kInt32:
          real += Bytes<int32_t>(static_cast<int32_t>(v));
          break;
        default:
          real += Bytes<double>(v);
          break;
      }
    }
    AddMatrix(name, dims, /*cls=*/6, Element(storage, real), compress);
  }

  void AddChar(const std::string& name, const std::string& text) {
    std::string chars;
    for (char c : text) chars += Bytes<uint16_t>(static_cast<uint16_t>(c));
    AddMatrix(name, {1, static_cast<int32_t>(text.size())}, /*cls=*/4, Element(kUInt16, chars),
              false);
  }

  const std::string& bytes() const { return out_; }
  void Save(const std::string& path) const { WriteText(path, out_); }

 private:
  template <typename T>
  std::string Bytes(T v) const {
    std::string b(sizeof(T), '\0');
    std::memcpy(&b[0], &v, sizeof(T));
    const uint16_t one = 1;
    bool host_big = *reinterpret_cast<const uint8_t*>(&one) == 0;
    if (host_big != big_) std::reverse(b.begin(), b.end());
    return b;
  }

  // Tag + payload, padded to 8 bytes; payloads of up to 4 bytes use the packed small form.
  std::string Element(uint32_t type, const std::string& data, bool allow_small = false) const {
    if (allow_small && data.size() <= 4) {
      std::string e = Bytes<uint32_t>(static_cast<uint32_t>(data.size() << 16) | type) + data;
      e.resize(8, '\0');
      return e;
    }
    std::string e =
        Bytes<uint32_t>(type) + Bytes<uint32_t>(static_cast<uint32_t>(data.size())) + data;
    e.resize((e.size() + 7) / 8 * 8, '\0');
    return e;
  }

  void AddMatrix(const std::string& name, const std::vector<int32_t>& dims, uint32_t cls,
                 const std::string& real, bool compress) {
    std::string dim_bytes;
    for (int32_t d : dims) dim_bytes += Bytes<int32_t>(d);
    std::string payload =
        Element(kUInt32, Bytes<uint32_t>(cls) + Bytes<uint32_t>(0)) +  // array flags
        Element(kInt32, dim_bytes) + Element(kInt8, name, /*allow_small=*/true) + real;
    std::string matrix = Element(kMatrix, payload);
    if (!compress) {
      out_ += matrix;
      return;
    }
    uLongf n = compressBound(matrix.size());
    std::string z(n, '\0');
    REQUIRE(compress2(reinterpret_cast<Bytef*>(&z[0]), &n,
                      reinterpret_cast<const Bytef*>(matrix.data()), matrix.size(), 6) == Z_OK);
    z.resize(n);
    // Compressed elements are not padded.
    out_ += Bytes<uint32_t>(kCompressed) + Bytes<uint32_t>(static_cast<uint32_t>(n)) + z;
  }

  bool big_;
  std::string out_;
};

// ---- synthetic trees ----

// CUB_200_2011 with 2 classes: ids 1..n in images.txt order, class (id - 1) % 2 + 1, all in
// train except `test_ids`.
void WriteCubTree(const std::string& root, int n, const std::set<int>& test_ids) {
  const char* classes[] = {"001.Black_footed_Albatross", "002.Laysan_Albatross"};
  std::string images, labels, split;
  for (int id = 1; id <= n; ++id) {
    int cls = (id - 1) % 2 + 1;
    std::string rel = Msg(classes[cls - 1], "/bird_", id, ".jpg");
    WriteImage(root + "/images/" + rel, 10 * id);
    images += Msg(id, " ", rel, "\n");
    labels += Msg(id, " ", cls, "\n");
    split += Msg(id, " ", test_ids.count(id) ? 0 : 1, "\n");
  }
  WriteText(root + "/images.txt", images);
  WriteText(root + "/image_class_labels.txt", labels);
  WriteText(root + "/train_test_split.txt", split);
  WriteText(root + "/classes.txt", Msg("1 ", classes[0], "\n2 ", classes[1], "\n"));
}

// flowers102 with 9 images of 3 classes: trnid {1,4,7}, valid {2,5,8} (uint16 storage), tstid
// {9,6,3} (compressed); labels(id) = (id - 1) % 3 + 1.
void WriteFlowersTree(const std::string& root) {
  std::vector<double> labels;
  for (int id = 1; id <= 9; ++id) {
    labels.push_back((id - 1) % 3 + 1);
    WriteImage(Msg(root, "/jpg/image_0000", id, ".jpg"), 20 * id);
  }
  MatWriter lab;
  lab.AddNumeric("labels", {1, 9}, labels);
  lab.Save(root + "/imagelabels.mat");
  MatWriter set;
  set.AddNumeric("trnid", {1, 3}, {1, 4, 7});
  set.AddNumeric("valid", {1, 3}, {2, 5, 8}, MatWriter::kUInt16);
  set.AddNumeric("tstid", {1, 3}, {9, 6, 3}, MatWriter::kDouble, /*compress=*/true);
  set.Save(root + "/setid.mat");
}

}  // namespace

TEST_CASE("shipped manifests parse", "[unit][paper]") {
  struct Expect {
    const char* name;
    int size;
    size_t num_listed_classes;  // 0 = classes from folders or a file
    std::string split_mode;
  };
  const Expect expect[] = {
      {"cifar100", 32, 100, "official"},         {"tiny_imagenet", 64, 0, "official"},
      {"imagenet_sketch", 224, 0, "stratified"}, {"caltech101", 224, 0, "stratified"},
      {"flowers102", 224, 102, "official"},      {"cub200", 224, 0, "official"},
      {"oxford_pets", 224, 37, "official"}};
  for (const auto& e : expect) {
    INFO(e.name);
    Manifest m = LoadManifest(ShippedManifest(e.name));
    CHECK(m.name == e.name);
    CHECK(m.image.size == e.size);
    CHECK(m.image.channels == 3);
    CHECK(m.image.resize == "exact");
    CHECK(m.normalize.compute);
    CHECK(m.split.mode == e.split_mode);
    CHECK(m.split.seed == 0);
    if (e.split_mode == "official") {
      CHECK(m.split.val_fraction == Approx(0.1));
    } else {
      CHECK(m.split.train == Approx(0.7));
      CHECK(m.split.val == Approx(0.1));
      CHECK(m.split.test == Approx(0.2));
    }
    CHECK(m.classes.names.size() == e.num_listed_classes);
  }
  // Every manifest in the folder, including the demo ones, parses.
  int n = 0;
  for (const auto& entry : fs::directory_iterator(std::string(MLFD_SOURCE_DIR) + "/data_manifests"))
    if (entry.path().extension() == ".json") {
      INFO(entry.path().string());
      CHECK_NOTHROW(LoadManifest(entry.path().string()));
      ++n;
    }
  CHECK(n >= 7);
  Manifest cifar = LoadManifest(ShippedManifest("cifar100"));
  CHECK(cifar.classes.names.front() == "apple");
  CHECK(cifar.classes.names[1] == "aquarium_fish");
  CHECK(cifar.classes.names.back() == "worm");
  CHECK(std::is_sorted(cifar.classes.names.begin(), cifar.classes.names.end()));
  Manifest caltech = LoadManifest(ShippedManifest("caltech101"));
  CHECK(caltech.classes.exclude == std::vector<std::string>{"BACKGROUND_Google"});
}

TEST_CASE("cifar_binary: records, RGB planes, label byte", "[unit][paper]") {
  TempDir tmp;
  // CIFAR-100 layout: <coarse, fine> label bytes; the fine one is the class.
  fs::create_directories(tmp / "cifar-100-binary");
  WriteText(tmp / "cifar-100-binary/train.bin", CifarRecords({{3, 5}, {9, 0}, {1, 99}}));
  WriteText(tmp / "cifar-100-binary/test.bin", CifarRecords({{4, 42}}, 3));
  Manifest m = LoadManifest(ShippedManifest("cifar100"));
  auto samples = ReadSources(m, tmp.path());
  REQUIRE(samples.size() == 4);
  const std::vector<int64_t> labels{5, 0, 99, 42};
  const std::vector<std::string> splits{"train", "train", "train", "test"};
  for (size_t i = 0; i < samples.size(); ++i) {
    const RawSample& s = samples[i];
    INFO(i);
    CHECK(s.file.empty());
    CHECK(s.label == labels[i]);
    CHECK(s.split == splits[i]);
    REQUIRE(s.pixels.type() == CV_8UC3);
    REQUIRE(s.pixels.rows == 32);
    REQUIRE(s.pixels.cols == 32);
    for (int p : {0, 1, 31, 32, 500, 1023}) {
      cv::Vec3b px = s.pixels.at<cv::Vec3b>(p / 32, p % 32);  // row-major planes
      for (int c = 0; c < 3; ++c) CHECK(px[c] == CifarPixel(static_cast<int>(i), c, p));  // RGB
    }
  }
  CHECK(samples[1].origin == tmp / "cifar-100-binary/train.bin#1");
  CHECK(samples[3].origin == tmp / "cifar-100-binary/test.bin#0");

  // CIFAR-10 layout (one label byte, the default), split "all" leaves the split to the manifest.
  WriteText(tmp / "c10.bin", CifarRecords({{7}, {2}}));
  WriteText(tmp / "c10.json", Msg(R"({"name": "c10", "classes": "labels", "image": {"channels": 3},
    "sources": [{"kind": "cifar_binary", "files": [")",
                                  tmp / "c10.bin", R"("], "split": "all"}]})"));
  Manifest m10 = LoadManifest(tmp / "c10.json");
  auto s10 = ReadSources(m10, "");
  REQUIRE(s10.size() == 2);
  CHECK(s10[0].label == 7);
  CHECK(s10[1].label == 2);
  CHECK(s10[1].split.empty());
  CHECK(s10[1].pixels.at<cv::Vec3b>(0, 5) ==
        cv::Vec3b(CifarPixel(1, 0, 5), CifarPixel(1, 1, 5), CifarPixel(1, 2, 5)));
}

TEST_CASE("cifar_binary: errors name the file or key", "[unit][paper]") {
  TempDir tmp;
  fs::create_directories(tmp / "cifar-100-binary");
  std::string rec = CifarRecords({{1, 2}, {3, 4}});
  WriteText(tmp / "cifar-100-binary/train.bin", rec.substr(0, rec.size() - 100));  // truncated
  WriteText(tmp / "cifar-100-binary/test.bin", CifarRecords({{1, 2}}));
  Manifest m = LoadManifest(ShippedManifest("cifar100"));
  std::string err = ErrorOf([&] { ReadSources(m, tmp.path()); });
  CHECK_THAT(err, Contains(tmp / "cifar-100-binary/train.bin"));
  CHECK_THAT(err, Contains("not a whole number of 3074-byte CIFAR records"));

  err = ErrorOf([&] { ReadSources(m, tmp / "nowhere"); });
  CHECK_THAT(err, Contains(tmp / "nowhere/cifar-100-binary/train.bin"));
  CHECK_THAT(err, Contains("does not exist"));

  WriteText(tmp / "bad.json", R"({"name": "b", "classes": "labels", "image": {"channels": 3},
    "sources": [{"kind": "cifar_binary", "files": ["x.bin"],
                 "label_bytes": 2, "label_index": 2}]})");
  Manifest bad = LoadManifest(tmp / "bad.json");
  err = ErrorOf([&] { ReadSources(bad, tmp.path()); });
  CHECK_THAT(err, Contains("sources[0].label_index"));
  CHECK_THAT(err, Contains(tmp / "bad.json"));
}

TEST_CASE("cifar100 manifest prepared end to end keeps RGB pixels", "[unit][paper]") {
  TempDir tmp;
  // 5 train records per class (so the 10% validation carve-out takes one) and 1 test record.
  std::vector<std::vector<int>> train, test;
  for (int k = 0; k < 5; ++k)
    for (int c = 0; c < 100; ++c) train.push_back({c / 5, c});
  for (int c = 0; c < 100; ++c) test.push_back({c / 5, c});
  fs::create_directories(tmp / "data/cifar-100-binary");
  WriteText(tmp / "data/cifar-100-binary/train.bin", CifarRecords(train));
  WriteText(tmp / "data/cifar-100-binary/test.bin", CifarRecords(test, 500));
  PrepareSummary sum = Prepare(ShippedManifest("cifar100"), tmp / "c.h5", tmp / "data");
  CHECK(sum.num_samples == 600);
  CHECK(sum.split_sizes["train"] == 400);
  CHECK(sum.split_sizes["val"] == 100);
  CHECK(sum.split_sizes["test"] == 100);

  ImageStore s = ImageStore::Open(tmp / "c.h5");
  CHECK(s.num_classes() == 100);
  CHECK(s.class_names()[0] == "apple");
  CHECK(s.class_names()[99] == "worm");
  CHECK(s.height() == 32);
  CHECK(s.channels() == 3);
  std::vector<uint8_t> px(static_cast<size_t>(s.image_bytes()));
  for (int64_t i : {0, 137, 599}) {
    INFO(i);
    s.ReadRows(i, 1, px.data());
    CHECK(s.labels()[static_cast<size_t>(i)] == (i % 100));
    for (int p : {0, 33, 1023})
      for (int c = 0; c < 3; ++c)
        CHECK(px[static_cast<size_t>(3 * p + c)] == CifarPixel(static_cast<int>(i), c, p));
  }
}

TEST_CASE("mat5: numeric variables, byte orders, compressed and small elements", "[unit][paper]") {
  TempDir tmp;
  for (bool big : {false, true}) {
    INFO("big endian: " << big);
    MatWriter w(big);
    w.AddNumeric("labels", {1, 5}, {1, 102, 77, 3.5, -2});
    w.AddNumeric("ids", {2, 2}, {10, 20, 30, 40}, MatWriter::kUInt8);  // 3-byte name: packed
    w.AddChar("note", "hello");
    w.AddNumeric("tstid", {3, 1}, {6149, 1, 8189}, MatWriter::kUInt16, /*compress=*/true);
    w.AddNumeric("neg", {1, 2}, {-7, 123456}, MatWriter::kInt32, /*compress=*/true);
    const std::string path = tmp / (big ? "be.mat" : "le.mat");
    w.Save(path);

    auto vars = mat5::ReadAll(path);
    REQUIRE(vars.size() == 5);
    CHECK(vars[0].name == "labels");
    CHECK(vars[0].class_name == "double");
    CHECK(vars[0].dims == std::vector<int64_t>{1, 5});
    CHECK(vars[0].data == std::vector<double>{1, 102, 77, 3.5, -2});
    CHECK(vars[1].name == "ids");
    CHECK(vars[1].data == std::vector<double>{10, 20, 30, 40});
    CHECK(vars[2].name == "note");
    CHECK(vars[2].class_name == "char");
    CHECK_FALSE(vars[2].numeric);
    std::vector<int64_t> dims;
    CHECK(mat5::ReadNumeric(path, "tstid", &dims) == std::vector<double>{6149, 1, 8189});
    CHECK(dims == std::vector<int64_t>{3, 1});
    CHECK(mat5::ReadNumeric(path, "neg") == std::vector<double>{-7, 123456});

    std::string err = ErrorOf([&] { mat5::ReadNumeric(path, "trnid"); });
    CHECK_THAT(err, Contains(path));
    CHECK_THAT(err, Contains("no variable 'trnid'"));
    CHECK_THAT(err, Contains("labels, ids, note, tstid, neg"));
    err = ErrorOf([&] { mat5::ReadNumeric(path, "note"); });
    CHECK_THAT(err, Contains(path));
    CHECK_THAT(err, Contains("'note' is a char array"));
  }
}

TEST_CASE("mat5: corrupt files give errors naming the file", "[unit][paper]") {
  TempDir tmp;
  MatWriter w;
  w.AddNumeric("labels", {1, 4}, {1, 2, 3, 4});
  w.AddNumeric("setid", {1, 4}, {4, 3, 2, 1}, MatWriter::kDouble, /*compress=*/true);
  const std::string good = w.bytes();

  auto expect_error = [&](const std::string& name, const std::string& bytes,
                          const std::string& what) {
    INFO(name);
    WriteText(tmp / name, bytes);
    std::string err = ErrorOf([&] { mat5::ReadNumeric(tmp / name, "labels"); });
    CHECK_THAT(err, Contains(tmp / name));
    CHECK_THAT(err, Contains(what));
  };
  expect_error("short.mat", good.substr(0, 100), "not a MAT-file");
  expect_error("text.mat", std::string(200, 'x'), "not a level-5 MAT-file");
  // Cut inside the first variable's data.
  expect_error("cut.mat", good.substr(0, 128 + 60), "corrupt or truncated MAT-file");
  // Damage the zlib stream of the compressed variable (it starts after the 8-byte tag).
  std::string damaged = good;
  size_t z = good.size() - 20;
  for (size_t i = z; i < z + 8; ++i) damaged[i] = static_cast<char>(damaged[i] ^ 0x5a);
  WriteText(tmp / "zlib.mat", damaged);
  std::string err = ErrorOf([&] { mat5::ReadAll(tmp / "zlib.mat"); });
  CHECK_THAT(err, Contains(tmp / "zlib.mat"));
  // A file cut inside the compressed element.
  WriteText(tmp / "zcut.mat", good.substr(0, good.size() - 10));
  err = ErrorOf([&] { mat5::ReadAll(tmp / "zcut.mat"); });
  CHECK_THAT(err, Contains(tmp / "zcut.mat"));
  // A complete element whose zlib stream stops early (its tag agrees with the shorter length).
  MatWriter one;
  one.AddNumeric("labels", {1, 50}, std::vector<double>(50, 7.0), MatWriter::kDouble, true);
  std::string cut = one.bytes();
  uint32_t n = 0;
  std::memcpy(&n, &cut[132], 4);  // little-endian file on a little-endian host
  n -= 10;
  std::memcpy(&cut[132], &n, 4);
  cut.resize(136 + n);
  WriteText(tmp / "zshort.mat", cut);
  err = ErrorOf([&] { mat5::ReadAll(tmp / "zshort.mat"); });
  CHECK_THAT(err, Contains(tmp / "zshort.mat: inside the compressed element at byte 128"));
}

TEST_CASE("flowers102: official sets from setid.mat, labels from imagelabels.mat", "[unit][paper]") {
  TempDir tmp;
  WriteFlowersTree(tmp / "flowers102");
  Manifest m = LoadManifest(ShippedManifest("flowers102"));
  auto samples = ReadSources(m, tmp.path());
  REQUIRE(samples.size() == 9);
  const int ids[] = {1, 4, 7, 2, 5, 8, 9, 6, 3};  // trnid, valid, tstid in file order
  for (size_t k = 0; k < 9; ++k) {
    INFO(k);
    CHECK(samples[k].file == Msg(tmp / "flowers102/jpg/image_0000", ids[k], ".jpg"));
    CHECK(samples[k].label == (ids[k] - 1) % 3);
    CHECK(samples[k].split == (k < 3 ? "train" : k < 6 ? "val" : "test"));
  }

  // The split key filters, keeping the official tag.
  WriteText(tmp / "f.json", R"({"name": "f", "classes": ["a", "b", "c"], "image": {"channels": 3},
    "sources": [{"kind": "flowers102", "split": "test"}]})");
  auto test = ReadSources(LoadManifest(tmp / "f.json"), tmp.path());
  REQUIRE(test.size() == 3);
  CHECK(test[0].file == tmp / "flowers102/jpg/image_00009.jpg");
  CHECK(test[2].label == 2);
  CHECK(test[2].split == "test");

  // End to end (3 classes with one image per class in each official set).
  WriteText(tmp / "f3.json", R"({"name": "f3", "classes": ["a", "b", "c"],
    "image": {"size": 4, "channels": 3}, "sources": [{"kind": "flowers102"}]})");
  PrepareSummary sum = Prepare(tmp / "f3.json", tmp / "f3.h5", tmp.path());
  CHECK(sum.split_sizes["train"] == 3);
  CHECK(sum.split_sizes["val"] == 3);
  CHECK(sum.split_sizes["test"] == 3);
}

TEST_CASE("flowers102: bad MAT contents name the file and variable", "[unit][paper]") {
  TempDir tmp;
  WriteFlowersTree(tmp / "flowers102");
  Manifest m = LoadManifest(ShippedManifest("flowers102"));
  MatWriter set;  // an id beyond the 9 labels
  set.AddNumeric("trnid", {1, 2}, {1, 10});
  set.AddNumeric("valid", {1, 1}, {2});
  set.AddNumeric("tstid", {1, 1}, {3});
  set.Save(tmp / "flowers102/setid.mat");
  std::string err = ErrorOf([&] { ReadSources(m, tmp.path()); });
  CHECK_THAT(err, Contains(tmp / "flowers102/setid.mat"));
  CHECK_THAT(err, Contains("trnid(2) = 10 is not an image id 1..9"));

  MatWriter no_valid;
  no_valid.AddNumeric("trnid", {1, 1}, {1});
  no_valid.AddNumeric("tstid", {1, 1}, {3});
  no_valid.Save(tmp / "flowers102/setid.mat");
  err = ErrorOf([&] { ReadSources(m, tmp.path()); });
  CHECK_THAT(err, Contains(tmp / "flowers102/setid.mat"));
  CHECK_THAT(err, Contains("no variable 'valid'"));

  WriteText(tmp / "flowers102/imagelabels.mat", "MATLAB 5.0 MAT-file, but cut short");
  err = ErrorOf([&] { ReadSources(m, tmp.path()); });
  CHECK_THAT(err, Contains(tmp / "flowers102/imagelabels.mat"));

  fs::remove_all(tmp / "flowers102/jpg");
  err = ErrorOf([&] { ReadSources(m, tmp.path()); });
  CHECK_THAT(err, Contains(tmp / "flowers102/jpg does not exist"));
}

TEST_CASE("cub200: official split, 1-based labels, class names from classes.txt", "[unit][paper]") {
  TempDir tmp;
  WriteCubTree(tmp / "CUB_200_2011", 12, {3, 4, 11, 12});
  Manifest m = LoadManifest(ShippedManifest("cub200"));
  auto samples = ReadSources(m, tmp.path());
  REQUIRE(samples.size() == 12);
  for (int id = 1; id <= 12; ++id) {
    const RawSample& s = samples[static_cast<size_t>(id - 1)];
    INFO(id);
    CHECK(s.label == (id - 1) % 2);
    CHECK(s.split == (id == 3 || id == 4 || id == 11 || id == 12 ? "test" : "train"));
    CHECK(s.origin == Msg(tmp / "CUB_200_2011/images.txt", ":", id));
    CHECK(s.file == Msg(tmp / "CUB_200_2011/images/",
                        id % 2 ? "001.Black_footed_Albatross" : "002.Laysan_Albatross", "/bird_",
                        id, ".jpg"));
  }
  CHECK(ResolveClassNames(m, tmp.path(), samples) ==
        std::vector<std::string>{"001.Black_footed_Albatross", "002.Laysan_Albatross"});

  WriteText(tmp / "t.json", R"({"name": "t", "classes": "labels", "image": {"channels": 3},
    "sources": [{"kind": "cub200", "split": "test"}]})");
  auto test = ReadSources(LoadManifest(tmp / "t.json"), tmp.path());
  REQUIRE(test.size() == 4);
  CHECK(test[0].origin == Msg(tmp / "CUB_200_2011/images.txt", ":3"));
  CHECK(test[3].label == 1);

  // End to end through the shipped manifest, but with val_fraction 0.25: 0.1 would carve
  // round(0.4) = 0 of each class's 4 train images out as validation.
  nlohmann::json j = ReadJsonFile(ShippedManifest("cub200"));
  j["split"]["val_fraction"] = 0.25;
  WriteText(tmp / "cub.json", j.dump());
  PrepareSummary sum = Prepare(tmp / "cub.json", tmp / "cub.h5", tmp.path());
  CHECK(sum.num_classes == 2);
  CHECK(sum.split_sizes["train"] == 6);
  CHECK(sum.split_sizes["val"] == 2);
  CHECK(sum.split_sizes["test"] == 4);
  ImageStore s = ImageStore::Open(tmp / "cub.h5");
  CHECK(s.height() == 224);
  CHECK(s.class_names()[1] == "002.Laysan_Albatross");
  std::vector<uint8_t> px(static_cast<size_t>(s.image_bytes()));
  s.ReadRows(4, 1, px.data());  // image id 5: written as B=50, G=51, R=52 (JPEG: approximately)
  CHECK(std::abs(px[0] - 52) <= 3);
  CHECK(std::abs(px[2] - 50) <= 3);
}

TEST_CASE("cub200: inconsistent id tables give file:line errors", "[unit][paper]") {
  TempDir tmp;
  const std::string root = tmp / "CUB_200_2011";
  WriteCubTree(root, 4, {4});
  Manifest m = LoadManifest(ShippedManifest("cub200"));

  WriteText(root + "/image_class_labels.txt", "1 1\n2 2\n4 2\n");  // id 3 missing
  std::string err = ErrorOf([&] { ReadSources(m, tmp.path()); });
  CHECK_THAT(err, Contains(root + "/image_class_labels.txt: no entry for image id 3"));
  CHECK_THAT(err, Contains(root + "/images.txt:3"));

  WriteText(root + "/image_class_labels.txt", "1 1\n2 2\n3 1\n4 2\n5 1\n");  // unknown id 5
  err = ErrorOf([&] { ReadSources(m, tmp.path()); });
  CHECK_THAT(err, Contains(root + "/image_class_labels.txt:5: image id 5 is not in"));

  WriteText(root + "/image_class_labels.txt", "1 1\n2 2\n3 0\n4 2\n");  // labels are 1-based
  err = ErrorOf([&] { ReadSources(m, tmp.path()); });
  CHECK_THAT(err, Contains(root + "/image_class_labels.txt:3: class '0'"));

  WriteText(root + "/image_class_labels.txt", "1 1\n2 2\n3 1\n4 2\n");
  WriteText(root + "/train_test_split.txt", "1 1\n2 1\n3 2\n4 0\n");
  err = ErrorOf([&] { ReadSources(m, tmp.path()); });
  CHECK_THAT(err, Contains(root + "/train_test_split.txt:3: expected 1 (train) or 0 (test)"));

  WriteText(root + "/train_test_split.txt", "1 1\n2 1\n2 1\n3 1\n4 0\n");
  err = ErrorOf([&] { ReadSources(m, tmp.path()); });
  CHECK_THAT(err, Contains(root + "/train_test_split.txt:3: image id 2 repeats line 2"));

  fs::remove(root + "/images.txt");
  err = ErrorOf([&] { ReadSources(m, tmp.path()); });
  CHECK_THAT(err, Contains(root + "/images.txt: no such file"));

  WriteText(tmp / "v.json", R"({"name": "v", "classes": "labels", "image": {"channels": 3},
    "sources": [{"kind": "cub200", "split": "val"}]})");
  err = ErrorOf([&] { ReadSources(LoadManifest(tmp / "v.json"), tmp.path()); });
  CHECK_THAT(err, Contains("sources[0].split"));
}

TEST_CASE("tiny_imagenet manifest: train folders with images/, val list by wnid", "[unit][paper]") {
  TempDir tmp;
  const std::string root = tmp / "tiny-imagenet-200";
  const std::vector<std::string> wnids{"n02124075", "n01443537"};  // wnids.txt order: unsorted
  std::string annotations;
  for (size_t c = 0; c < wnids.size(); ++c) {
    for (int k = 0; k < 10; ++k)
      WriteImage(Msg(root, "/train/", wnids[c], "/images/", wnids[c], "_", k, ".JPEG"), 5 * k);
    WriteText(Msg(root, "/train/", wnids[c], "/", wnids[c], "_boxes.txt"), "ignored\n");
    for (int k = 0; k < 2; ++k) {
      int v = static_cast<int>(c) * 2 + k;
      WriteImage(Msg(root, "/val/images/val_", v, ".JPEG"), 100 + v);
      annotations += Msg("val_", v, ".JPEG\t", wnids[c], "\t0\t0\t63\t63\n");
    }
  }
  WriteText(root + "/val/val_annotations.txt", annotations);
  WriteText(root + "/wnids.txt", wnids[0] + "\n" + wnids[1] + "\n");

  Manifest m = LoadManifest(ShippedManifest("tiny_imagenet"));
  auto samples = ReadSources(m, tmp.path());
  REQUIRE(samples.size() == 24);
  std::map<std::string, int> per_split;
  for (const auto& s : samples) per_split[s.split]++;
  CHECK(per_split["train"] == 20);
  CHECK(per_split["test"] == 4);
  CHECK(samples[20].file == root + "/val/images/val_0.JPEG");
  CHECK(samples[20].label_name == "n02124075");
  CHECK(samples[23].label_name == "n01443537");
  CHECK(ResolveClassNames(m, tmp.path(), samples) ==
        std::vector<std::string>{"n01443537", "n02124075"});

  PrepareSummary sum = Prepare(ShippedManifest("tiny_imagenet"), tmp / "t.h5", tmp.path());
  CHECK(sum.height == 64);
  CHECK(sum.split_sizes["train"] == 18);
  CHECK(sum.split_sizes["val"] == 2);
  CHECK(sum.split_sizes["test"] == 4);
  ImageStore s = ImageStore::Open(tmp / "t.h5");
  // val_0 shows n02124075, class 1 of the sorted wnids.
  std::vector<std::string> sources = s.file().ReadStrings("sources");
  int found = 0;
  for (size_t i = 0; i < sources.size(); ++i)
    if (sources[i] == root + "/val/val_annotations.txt:1") {
      CHECK(s.labels()[i] == 1);
      ++found;
    }
  CHECK(found == 1);
}

TEST_CASE("oxford_pets manifest: list files with 1-based class ids", "[unit][paper]") {
  TempDir tmp;
  const std::string root = tmp / "oxford-iiit-pet";
  fs::create_directories(root + "/annotations");
  WriteText(root + "/annotations/trainval.txt",
            "Abyssinian_100 1 1 1\nyorkshire_terrier_12 37 2 25\nBengal_3 6 1 2\n");
  WriteText(root + "/annotations/test.txt", "american_bulldog_7 2 2 1\n");
  Manifest m = LoadManifest(ShippedManifest("oxford_pets"));
  auto samples = ReadSources(m, tmp.path());
  REQUIRE(samples.size() == 4);
  CHECK(samples[0].file == root + "/images/Abyssinian_100.jpg");
  const std::vector<int64_t> labels{0, 36, 5, 1};
  for (size_t i = 0; i < 4; ++i) {
    CHECK(samples[i].label == labels[i]);
    // The class list is in class-id order: the file name starts with the breed.
    CHECK(fs::path(samples[i].file)
              .filename()
              .string()
              .rfind(m.classes.names[static_cast<size_t>(labels[i])] + "_", 0) == 0);
  }
  CHECK(samples[3].split == "test");
  CHECK(samples[3].origin == root + "/annotations/test.txt:1");
}

TEST_CASE("caltech101 and imagenet_sketch manifests: folders, BACKGROUND_Google excluded",
          "[unit][paper]") {
  TempDir tmp;
  const std::string root = tmp / "caltech101/101_ObjectCategories";
  for (const char* cls : {"BACKGROUND_Google", "Faces_easy", "accordion"})
    for (int k = 1; k <= 10; ++k) WriteImage(Msg(root, "/", cls, "/image_000", k, ".jpg"), 9 * k);
  Manifest m = LoadManifest(ShippedManifest("caltech101"));
  auto samples = ReadSources(m, tmp.path());
  CHECK(samples.size() == 30);

  PrepareSummary sum = Prepare(ShippedManifest("caltech101"), tmp / "c.h5", tmp.path());
  CHECK(sum.num_samples == 20);
  CHECK(sum.num_classes == 2);
  CHECK(sum.split_sizes["train"] == 14);
  CHECK(sum.split_sizes["val"] == 2);
  CHECK(sum.split_sizes["test"] == 4);
  ImageStore s = ImageStore::Open(tmp / "c.h5");
  CHECK(s.class_names() == std::vector<std::string>{"Faces_easy", "accordion"});
  auto sources = s.file().ReadStrings("sources");
  for (size_t i = 0; i < sources.size(); ++i) {
    INFO(sources[i]);
    CHECK(sources[i].find("BACKGROUND_Google") == std::string::npos);
    CHECK(s.labels()[i] == (sources[i].find("/accordion/") != std::string::npos ? 1 : 0));
  }

  for (const char* cls : {"n01440764", "n01443537"})
    for (int k = 1; k <= 3; ++k) WriteImage(Msg(tmp / "sketch/", cls, "/sketch_", k, ".JPEG"), k);
  Manifest sk = LoadManifest(ShippedManifest("imagenet_sketch"));
  auto sketches = ReadSources(sk, tmp.path());
  REQUIRE(sketches.size() == 6);
  CHECK(sketches[5].label_name == "n01443537");
  CHECK(sketches[5].split.empty());  // stratified mode assigns it
}
