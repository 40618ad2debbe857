// Data and run hygiene, and what a stage says and records: duplicate images under other
// spellings, orphan temporaries, movable run folders, the report's refusal to count a run twice,
// warnings for silent choices, messages for corrupt files and changed resume options, provenance
// of every option type, cached logits of a concatenated label space, and writes that fail on a
// full disk (simulated with a file-size limit).
#include <catch2/catch.hpp>
#include <signal.h>
#include <torch/torch.h>
#include <unistd.h>

#include <filesystem>
#include <sstream>
#include <opencv2/imgcodecs.hpp>

#include "io/feature_cache.h"
#include "eval/report.h"
#include "io/h5.h"
#include "io/tensor_io.h"
#include "models/checkpoint.h"
#include "test_util.h"
#include "train/trainer.h"
#include "app/app.h"
#include "util/error.h"
#include "util/fs.h"

using namespace mlfd;
using mlfd_test::MakeStore;
using mlfd_test::RunTool;
using mlfd_test::TempDir;
namespace fs = std::filesystem;

namespace {

#define MLFD_TINY_NET "--threads 2 --device cpu --arch resnet18 --width 0.125 --small-stem --embed-dim 16 " \
                      "--batch-size 16 --workers 2"
const char* kTiny = "-v 0 " MLFD_TINY_NET " --seed 3";
const char* kTinyVerbose = "-v 1 " MLFD_TINY_NET " --seed 3";
const char* kTinyNoSeed = "-v 0 " MLFD_TINY_NET;

// Writes `n` distinct 8x8 gray PNGs per class under <root>/<class>/<i>.png.
void WriteImages(const std::string& root, const std::vector<std::string>& classes, int n) {
  for (size_t c = 0; c < classes.size(); ++c) {
    fs::create_directories(root + "/" + classes[c]);
    for (int i = 0; i < n; ++i) {
      cv::Mat img(8, 8, CV_8UC1, cv::Scalar(static_cast<double>(20 * c + 3 * i)));
      img.at<uint8_t>(i % 8, static_cast<int>(c)) = 255;
      cv::imwrite(Msg(root, "/", classes[c], "/", i, ".png"), img);
    }
  }
}

std::string ListManifest(const std::string& list, const std::string& split_mode = "stratified") {
  return Msg(R"({"name": "lst", "classes": "labels", "image": {"size": 8, "channels": 1},
    "sources": [{"kind": "list", "file": ")", list, R"(", "path_column": 0, "label_column": 1, "delimiter": ","}],
    "split": {"mode": ")", split_mode, R"(", "fractions": {"train": 0.5, "val": 0.25, "test": 0.25}, "seed": 1}})");
}

}  // namespace

TEST_CASE("prepare_data: one image under two spellings is a duplicate", "[stage][hygiene][prepare]") {
  TempDir tmp;
  WriteImages(tmp / "img", {"a", "b"}, 4);
  const std::string good = "a/0.png,a\na/1.png,a\na/2.png,a\na/3.png,a\nb/0.png,b\nb/1.png,b\nb/2.png,b\nb/3.png,b\n";
  mlfd_test::WriteText(tmp / "img/ok.csv", good);
  mlfd_test::WriteText(tmp / "ok.json", ListManifest(tmp / "img/ok.csv"));
  auto ok = RunTool("prepare_data", Msg("-v 0 --data-root ", tmp / "img", " ", tmp / "ok.json", " ", tmp / "ok.h5"));
  INFO(ok.err);
  REQUIRE(ok.exit_code == 0);
  for (const char* extra : {"./a/3.png,a\n", "a/../a/2.png,a\n", "b//1.png,b\n"}) {
    INFO(extra);
    mlfd_test::WriteText(tmp / "img/dup.csv", good + extra);
    mlfd_test::WriteText(tmp / "dup.json", ListManifest(tmp / "img/dup.csv"));
    auto r = RunTool("prepare_data", Msg("-v 0 --data-root ", tmp / "img", " ", tmp / "dup.json", " ", tmp / "dup.h5"));
    CHECK(r.exit_code == 1);
    CHECK(r.err.find("duplicate image path") != std::string::npos);
    CHECK_FALSE(mlfd_test::FileExists(tmp / "dup.h5"));
  }
  // A symlink to an image is the same image.
  fs::create_symlink(tmp / "img/a/0.png", tmp / "img/a/link.png");
  mlfd_test::WriteText(tmp / "img/dup.csv", good + "a/link.png,a\n");
  auto sym = RunTool("prepare_data", Msg("-v 0 --data-root ", tmp / "img", " ", tmp / "dup.json", " ", tmp / "dup.h5"));
  CHECK(sym.exit_code == 1);
  CHECK(sym.err.find("duplicate image path") != std::string::npos);
  // Identical pixels under another name: accepted by default, refused on request.
  fs::remove(tmp / "img/a/link.png");
  fs::copy_file(tmp / "img/b/2.png", tmp / "img/a/copy.png");
  mlfd_test::WriteText(tmp / "img/dup.csv", good + "a/copy.png,a\n");
  auto copy = RunTool("prepare_data", Msg("-v 0 --data-root ", tmp / "img", " ", tmp / "dup.json", " ", tmp / "dup.h5"));
  CHECK(copy.exit_code == 0);
  fs::remove(tmp / "dup.h5");
  auto pix = RunTool("prepare_data", Msg("-v 0 --check-pixel-duplicates --data-root ", tmp / "img", " ", tmp / "dup.json",
                                         " ", tmp / "dup.h5"));
  CHECK(pix.exit_code == 1);
  CHECK(pix.err.find("1 image(s) have exactly the pixels of an earlier one") != std::string::npos);
  CHECK(pix.err.find("dup.csv:9 = ") != std::string::npos);  // the copy's line and the original's
  CHECK_FALSE(mlfd_test::FileExists(tmp / "dup.h5"));
}

TEST_CASE("prepare_data: list columns and index bases out of range are named", "[stage][hygiene][prepare]") {
  TempDir tmp;
  WriteImages(tmp / "img", {"a", "b"}, 2);
  mlfd_test::WriteText(tmp / "list.csv", "a/0.png,0\na/1.png,9223372036854775\n");
  for (const auto& [spec, why] : std::vector<std::pair<std::string, std::string>>{
           {R"("path_column": -1)", "path_column: must be >= 0"},
           {R"("path_column": 4294967296)", "path_column: the integer 4294967296 is out of range (32 bits)"},
           {R"("index_base": -9223372036854775000)", "list.csv:2: label 9223372036854775 with index_base"}}) {
    INFO(spec);
    mlfd_test::WriteText(tmp / "m.json", Msg(R"({"name": "lst", "classes": "labels", "image": {"size": 8, "channels": 1},
      "sources": [{"kind": "list", "file": ")", tmp / "list.csv", R"(", "root": ")", tmp / "img", R"(", )", spec, R"(}],
      "split": {"mode": "stratified", "fractions": {"train": 0.5, "test": 0.5}}})"));
    auto r = RunTool("prepare_data", Msg("-v 0 ", tmp / "m.json", " ", tmp / "out.h5"));
    CHECK(r.exit_code != 0);
    CHECK(r.err.find(why) != std::string::npos);
    CHECK_FALSE(mlfd_test::FileExists(tmp / "out.h5"));
  }
}

TEST_CASE("prepare_data: empty class folders and classes missing from a split are reported", "[stage][hygiene][prepare]") {
  TempDir tmp;
  WriteImages(tmp / "img", {"a", "b"}, 8);
  WriteImages(tmp / "img", {"c"}, 1);
  fs::create_directories(tmp / "img/empty");
  mlfd_test::WriteText(tmp / "m.json", R"({"name": "fold", "classes": "folders", "image": {"size": 8, "channels": 1},
    "sources": [{"kind": "folder", "root": "."}],
    "split": {"mode": "stratified", "fractions": {"train": 0.5, "val": 0.25, "test": 0.25}, "seed": 1}})");
  mlfd_test::WriteText(tmp / "img/a/broken.png", mlfd_test::ReadText(tmp / "img/a/0.png").substr(0, 60));
  auto bad = RunTool("prepare_data", Msg("-v 0 --data-root ", tmp / "img", " ", tmp / "m.json", " ", tmp / "s.h5"));
  CHECK(bad.exit_code == 1);  // the decoder's own "libpng error:" line is not shown, ours is
  CHECK(bad.err.find("libpng") == std::string::npos);
  CHECK(bad.err.find("1 image(s) could not be read") != std::string::npos);
  auto r = RunTool("prepare_data", Msg("-v 0 --skip-bad --data-root ", tmp / "img", " ", tmp / "m.json", " ", tmp / "s.h5"));
  INFO(r.err);
  REQUIRE(r.exit_code == 0);
  CHECK(r.err.find("libpng") == std::string::npos);
  CHECK(r.err.find("skipped 1 unreadable image(s)") != std::string::npos);
  CHECK(r.err.find("empty: no image files") != std::string::npos);
  CHECK(r.err.find("class 'empty' has no images") != std::string::npos);
  CHECK(r.err.find("1 class(es) are missing from a split") != std::string::npos);
  CHECK(r.err.find("'c' (1 image(s)) has none in test, val") != std::string::npos);
}

TEST_CASE("orphan temporaries of dead processes are removed and live ones kept", "[stage][hygiene][io]") {
  TempDir tmp;
  const std::string out = tmp / "m.json";
  const std::string dead = tmp / ".m.json.tmp-99999999-0", dead2 = tmp / ".m.json.tmp-99999998";
  const std::string live = tmp / Msg(".m.json.tmp-", getpid(), "-7"), other = tmp / ".other.json.tmp-99999999-0";
  const std::string not_temp = tmp / ".m.json.tmp-99999999-x";
  for (const auto& p : {dead, dead2, live, other, not_temp}) mlfd_test::WriteText(p, "partial");
  WriteTextAtomic(out, "{}");
  CHECK(mlfd_test::ReadText(out) == "{}");
  CHECK_FALSE(mlfd_test::FileExists(dead));
  CHECK_FALSE(mlfd_test::FileExists(dead2));
  CHECK(mlfd_test::FileExists(live));      // its writer still runs (this process)
  CHECK(mlfd_test::FileExists(other));     // another output's temporary
  CHECK(mlfd_test::FileExists(not_temp));  // not a name this tool writes
  // HDF5 outputs too: a stage writing x.h5 removes the dead writer's .x.h5.tmp-<pid>-<n>.
  std::string store = MakeStore(tmp, "toy", 2, 10, 8, 1, 3);
  const std::string ck = tmp / "t.h5", orphan = tmp / ".t.last.h5.tmp-99999999-3";
  mlfd_test::WriteText(orphan, "partial");
  auto r = RunTool("train_teacher", Msg(kTiny, " --epochs 1 --out ", ck, " ", store));
  INFO(r.err);
  REQUIRE(r.exit_code == 0);
  CHECK_FALSE(mlfd_test::FileExists(orphan));
}

TEST_CASE("two writers of one output: the second refuses naming the first, whose result is kept", "[stage][hygiene][io]") {
  TempDir tmp;
  std::string store = MakeStore(tmp, "toy", 3, 20, 12, 1, 5);
  const std::string out = tmp / "t.h5", lock = tmp / ".t.h5.lock";
  const std::string args = Msg(kTiny, " --epochs 150 --out ", out, " ", store);  // about 10 s
  // The first writer in the background; the second starts while the first holds its output.
  mlfd_test::RunShell(Msg("(", MLFD_BIN_DIR, "/train_teacher ", args, " > ", tmp / "first.out", " 2> ", tmp / "first.err",
                          "; echo $? > ", tmp / "first.rc", ".new && mv ", tmp / "first.rc", ".new ", tmp / "first.rc", ") &"));
  bool locked = false;
  for (int i = 0; i < 600 && !locked; ++i) {  // up to 60 s for the first to start
    locked = mlfd_test::FileExists(lock) && !mlfd_test::ReadText(lock).empty();
    if (!locked) usleep(100000);
  }
  REQUIRE(locked);
  const std::string first_pid = mlfd_test::ReadText(lock).substr(0, mlfd_test::ReadText(lock).find('\n'));
  auto second = RunTool("train_teacher", args);
  INFO(second.err);
  CHECK(second.exit_code == 1);
  CHECK(second.err == Msg("train_teacher: error: ", out, ": another process (pid ", first_pid,
                          ") is writing this output; wait for it to finish or choose another output path\n"));
  CHECK(second.out.empty());  // no summary of a checkpoint it did not write
  // The first writer takes about 10 s alone; up to 10 minutes on a machine loaded by other jobs.
  for (int i = 0; i < 6000 && !mlfd_test::FileExists(tmp / "first.rc"); ++i) usleep(100000);
  REQUIRE(mlfd_test::FileExists(tmp / "first.rc"));
  INFO(mlfd_test::ReadText(tmp / "first.err"));
  CHECK(mlfd_test::ReadText(tmp / "first.rc") == "0\n");
  CHECK(h5::File::Open(out).GetStringAttr("/", "format") == kCheckpointFormat);
  CHECK_FALSE(mlfd_test::FileExists(lock));  // removed when its holder exited
  // A writer after the first has finished takes the output as usual.
  auto later = RunTool("train_teacher", Msg(kTiny, " --epochs 1 --out ", out, " ", store));
  INFO(later.err);
  CHECK(later.exit_code == 0);
  CHECK_FALSE(mlfd_test::FileExists(lock));
}

TEST_CASE("resume: changed options and a truncated last checkpoint are refused with the reason", "[stage][hygiene][train]") {
  TempDir tmp;
  std::string store = MakeStore(tmp, "toy", 3, 20, 12, 1, 5);
  std::string common = Msg(kTiny, " --epochs 3 ", store);
  auto part = RunTool("train_teacher", Msg(common, " --lr 0.05 --stop-after 1 --out ", tmp / "r.h5"));
  INFO(part.err);
  REQUIRE(part.exit_code == 0);
  // The optimiser's options are part of the recipe.
  auto lr = RunTool("train_teacher", Msg(common, " --lr 0.1 --resume --out ", tmp / "r.h5"));
  CHECK(lr.exit_code == 1);
  CHECK(lr.err.find("was trained with other options (--lr 0.05 -> 0.1)") != std::string::npos);
  auto two = RunTool("train_teacher", Msg(kTiny, " --epochs 4 --lr 0.05 --optimizer adam --resume --out ", tmp / "r.h5",
                                          " ", store));
  CHECK(two.exit_code == 1);
  CHECK(two.err.find("--epochs 3 -> 4") != std::string::npos);
  CHECK(two.err.find("--optimizer \"sgd\" -> \"adam\"") != std::string::npos);
  // The same options resume.
  auto same = RunTool("train_teacher", Msg(common, " --lr 0.05 --resume --out ", tmp / "r.h5"));
  INFO(same.err);
  CHECK(same.exit_code == 0);
  CHECK(RecipeDifference({{"optim", {{"lr", 0.1}}}, {"epochs", 3}}, {{"optim", {{"lr", 0.1}}}, {"epochs", 3}}).empty());
  CHECK(RecipeDifference({{"steps_per_epoch", 3}}, {{"steps_per_epoch", 4}}) ==
        "steps per epoch (--batch-size or the data) 3 -> 4");

  // A truncated .last.h5 is called what it is, not "refusing to overwrite".
  auto part2 = RunTool("train_teacher", Msg(common, " --lr 0.05 --stop-after 1 --out ", tmp / "t.h5"));
  REQUIRE(part2.exit_code == 0);
  fs::resize_file(tmp / "t.last.h5", fs::file_size(tmp / "t.last.h5") / 2);
  auto trunc = RunTool("train_teacher", Msg(common, " --lr 0.05 --resume --out ", tmp / "t.h5"));
  CHECK(trunc.exit_code == 1);
  CHECK(trunc.err.find("t.last.h5 is truncated or corrupt") != std::string::npos);
  CHECK(trunc.err.find("refusing") == std::string::npos);
}

TEST_CASE("outputs: a corrupt or foreign file in the way is named for what it is", "[stage][hygiene][io]") {
  TempDir tmp;
  std::string store = MakeStore(tmp, "toy", 2, 10, 8, 1, 3);
  auto r = RunTool("train_teacher", Msg(kTiny, " --epochs 1 --out ", tmp / "t.h5", " ", store));
  REQUIRE(r.exit_code == 0);
  fs::copy_file(tmp / "t.h5", tmp / "cut.h5");
  fs::resize_file(tmp / "cut.h5", 1000);
  mlfd_test::WriteText(tmp / "text.h5", "my notes");
  fs::copy_file(store, tmp / "other_store.h5");  // a store that is not this command's input
  struct Case {
    std::string path, says;
  };
  for (const Case& c : {Case{tmp / "cut.h5", "exists and is an unreadable HDF5 file (truncated or corrupt)"},
                        Case{tmp / "text.h5", "exists and is not an HDF5 file"},
                        Case{tmp / "other_store.h5", "exists and is a mlfd.image_store file, not a mlfd.checkpoint file"}}) {
    auto size = fs::file_size(c.path);
    auto e = RunTool("train_teacher", Msg(kTiny, " --epochs 1 --out ", c.path, " ", store));
    INFO(e.err);
    CHECK(e.exit_code == 1);
    CHECK(e.err.find(c.says) != std::string::npos);
    CHECK(e.err.find("refusing to overwrite") != std::string::npos);
    CHECK(fs::file_size(c.path) == size);  // untouched
  }
}

TEST_CASE("a moved run folder keeps working: T* finds its teachers beside it", "[stage][hygiene][joint]") {
  TempDir tmp;
  fs::create_directories(tmp / "run/teachers");
  fs::create_directories(tmp / "run/joint");
  std::string a = MakeStore(tmp, "ma", 3, 12, 8, 1, 11), b = MakeStore(tmp, "mb", 2, 12, 8, 1, 12);
  for (const auto& [store, name] : {std::pair{a, "ma"}, std::pair{b, "mb"}}) {
    auto r = RunTool("train_teacher", Msg(kTiny, " --epochs 1 --out ", tmp / "run/teachers/", name, ".h5 ", store));
    INFO(r.err);
    REQUIRE(r.exit_code == 0);
  }
  // Built from the temporary folder as working directory, with relative paths.
  auto build = mlfd_test::RunShell(Msg("cd ", tmp.path(), " && ", MLFD_BIN_DIR, "/build_joint -v 0 --adaptor-dim 8 --out "
                                       "run/joint/init.h5 --teacher run/teachers/ma.h5 --teacher ./run/teachers/mb.h5"));
  INFO(build.err);
  REQUIRE(build.exit_code == 0);
  {
    h5::File f = h5::File::Open(tmp / "run/joint/init.h5");
    auto model = f.GetJsonAttr("/", "model");
    CHECK(model["joint"]["teachers"][0]["path"] == "../teachers/ma.h5");
    CHECK(model["joint"]["teachers"][1]["path"] == "../teachers/mb.h5");
  }
  // An output in the working directory itself (no folder in its path).
  auto here = mlfd_test::RunShell(Msg("cd ", tmp.path(), " && ", MLFD_BIN_DIR, "/build_joint -v 0 --adaptor-dim 8 --out "
                                      "here.h5 --teacher run/teachers/ma.h5"));
  INFO(here.err);
  REQUIRE(here.exit_code == 0);
  CHECK(h5::File::Open(tmp / "here.h5").GetJsonAttr("/", "model")["joint"]["teachers"][0]["path"] == "run/teachers/ma.h5");
  fs::rename(tmp / "run", tmp / "moved");
  fs::create_directories(tmp / "elsewhere");
  auto ev = mlfd_test::RunShell(Msg("cd ", tmp / "elsewhere", " && ", MLFD_BIN_DIR, "/evaluate -v 0 --device cpu ../moved/joint/init.h5 ",
                                    a));
  INFO(ev.err);
  CHECK(ev.exit_code == 0);
  CHECK(nlohmann::json::parse(ev.out)["metrics"]["count"].get<int>() > 0);
  // The sha256 check still guards the content: a changed teacher is refused.
  fs::copy_file(tmp / "moved/teachers/mb.h5", tmp / "moved/teachers/ma.h5", fs::copy_options::overwrite_existing);
  auto changed = RunTool("evaluate", Msg("-v 0 --device cpu ", tmp / "moved/joint/init.h5", " ", a));
  CHECK(changed.exit_code == 1);
  CHECK(changed.err.find("changed since the joint teacher was built") != std::string::npos);
}

TEST_CASE("report: one run given twice is refused", "[stage][hygiene][report]") {
  TempDir tmp;
  auto eval = [](const std::string& sha) {
    return Msg(R"({"name": "teacher", "dataset": "d", "split": "test", "arch": "resnet18", "checkpoint_sha256": ")", sha,
               R"(", "store_sha256": "s1", "metrics": {"top1": 0.5}})");
  };
  mlfd_test::WriteText(tmp / "a.json", eval("c1"));
  mlfd_test::WriteText(tmp / "b.json", eval("c2"));
  mlfd_test::WriteText(tmp / "copy.json", eval("c1"));
  CHECK(GatherReport({tmp / "a.json", tmp / "b.json"}).at(0).rows.at(0).test_top1.size() == 2);
  CHECK_THROWS_WITH(GatherReport({tmp / "a.json", tmp / "b.json", tmp.path() + "/./a.json"}),
                    Catch::Contains("given twice"));
  CHECK_THROWS_WITH(GatherReport({tmp / "a.json", tmp / "copy.json"}),
                    Catch::Contains("evaluates the same checkpoint (sha256 c1) on the same store and split as"));
  auto r = RunTool("report", Msg("--md ", tmp / "r.md", " ", tmp / "a.json", " ", tmp / "a.json"));
  CHECK(r.exit_code == 1);
  CHECK(r.err.find("given twice") != std::string::npos);
  CHECK_FALSE(mlfd_test::FileExists(tmp / "r.md"));
}

TEST_CASE("train_teacher says how many images the dropped last batch leaves out", "[stage][hygiene][train]") {
  TempDir tmp;
  std::string store = MakeStore(tmp, "toy", 2, 30, 8, 1, 3);  // 36 training images, batches of 16
  auto r = RunTool("train_teacher", Msg(kTinyVerbose, " --epochs 1 --out ", tmp / "t.h5", " ", store));
  INFO(r.err);
  REQUIRE(r.exit_code == 0);
  CHECK(r.err.find("32 of 36 training images are used per epoch (2 full batches of 16; the other 4 are left out") !=
        std::string::npos);
  auto keep = RunTool("train_teacher", Msg(kTinyVerbose, " --epochs 1 --keep-last-batch --out ", tmp / "k.h5", " ", store));
  INFO(keep.err);
  REQUIRE(keep.exit_code == 0);
  CHECK(keep.err.find("training images are used per epoch") == std::string::npos);
  CHECK(keep.err.find("training on 36 samples per epoch, 3 steps of 16") != std::string::npos);
}

TEST_CASE("provenance records every option with its value", "[stage][hygiene][provenance]") {
  CHECK(OptionValueJson("seed", boost::any(uint64_t{18446744073709551615ull})) == 18446744073709551615ull);
  CHECK(OptionValueJson("n", boost::any(int64_t{-5})) == -5);
  CHECK(OptionValueJson("f", boost::any(0.25f)) == 0.25);
  CHECK(OptionValueJson("u", boost::any(7u)) == 7);
  CHECK(OptionValueJson("v", boost::any(std::vector<int64_t>{1, 2})) == nlohmann::json::array({1, 2}));
  CHECK(OptionValueJson("s", boost::any(std::vector<std::string>{"a"})) == nlohmann::json::array({"a"}));
  CHECK_THROWS_WITH(OptionValueJson("odd", boost::any(std::pair<int, int>{1, 2})), Catch::Contains("--odd has a type"));

  TempDir tmp;
  std::string store = MakeStore(tmp, "toy", 2, 10, 8, 1, 3);
  auto t = RunTool("train_teacher", Msg(kTinyNoSeed, " --seed 12345678901 --epochs 1 --lr 0.03 --out ", tmp / "t.h5", " ", store));
  REQUIRE(t.exit_code == 0);
  auto x = RunTool("extract_features", Msg("-v 0 --device cpu --levels layer1 --dtype float32 --out ", tmp / "f.h5", " ",
                                           tmp / "t.h5", " ", store));
  INFO(x.err);
  REQUIRE(x.exit_code == 0);
  auto e = RunTool("evaluate", Msg("-v 0 --device cpu --split val --out ", tmp / "e.json", " ", tmp / "t.h5", " ", store));
  REQUIRE(e.exit_code == 0);
  auto prov = [](const std::string& path) {
    h5::File f = h5::File::Open(path);
    return f.GetJsonAttr("/", "provenance")["options"];
  };
  auto st = prov(store);
  CHECK(st.at("data-root").is_string());
  auto tt = prov(tmp / "t.h5");
  CHECK(tt.at("seed") == 12345678901ull);
  CHECK(tt.at("lr") == 0.03);
  CHECK(tt.at("epochs") == 1);
  CHECK(tt.at("arch") == "resnet18");
  CHECK(tt.at("width") == 0.125);
  CHECK(tt.at("small-stem") == true);
  CHECK(tt.at("batch-size") == 16);
  CHECK(tt.at("threads") == 2);
  auto ft = prov(tmp / "f.h5");
  CHECK(ft.at("dtype") == "float32");
  CHECK(ft.at("levels").dump().find("layer1") != std::string::npos);
  auto ej = nlohmann::json::parse(mlfd_test::ReadText(tmp / "e.json"));
  CHECK(ej["provenance"]["options"].at("split") == "val");
  for (const auto* o : {&st, &tt, &ft, &ej["provenance"]["options"]})
    CHECK(o->dump().find("unprintable") == std::string::npos);
}

TEST_CASE("distill_student: cached logits of a concatenated label space on the second dataset", "[stage][hygiene][features]") {
  TempDir tmp;
  std::string s1 = MakeStore(tmp, "one", 3, 12, 8, 1, 7), s2 = MakeStore(tmp, "two", 2, 12, 8, 1, 8);
  const std::string base = tmp / "base.h5";
  auto b = RunTool("train_teacher", Msg(kTiny, " --epochs 1 --label-space concat --out ", base, " ", s1, " ", s2));
  INFO(b.err);
  REQUIRE(b.exit_code == 0);
  auto x = RunTool("extract_features", Msg("-v 0 --device cpu --levels logits --splits train,val --out ", tmp / "f2.h5", " ",
                                           base, " ", s2));
  INFO(x.err);
  REQUIRE(x.exit_code == 0);
  {
    FeatureCache c(tmp / "f2.h5");
    CHECK(c.dataset() == "two");
    CHECK(c.SampleShape("train", "logits") == std::vector<int64_t>{2});  // this dataset's slice only
  }
  const std::string st = Msg(kTiny, " --epochs 1 --method kd --like ", base, " --teacher ", base);
  auto cached = RunTool("distill_student", Msg(st, " --teacher-signals cached --features ", tmp / "f2.h5", " --out ",
                                               tmp / "s.h5 ", s2));
  INFO(cached.err);
  CHECK(cached.exit_code == 0);
  // A cache whose logits are another dataset's head is refused.
  auto py = mlfd_test::RunPython(tmp.path(), "import h5py, sys\nwith h5py.File(sys.argv[1], 'r+') as f: f.attrs['dataset'] = 'one'\n",
                                 tmp / "f2.h5");
  REQUIRE(py.exit_code == 0);
  auto foreign = RunTool("distill_student", Msg(st, " --teacher-signals cached --features ", tmp / "f2.h5", " --out ",
                                                tmp / "s2.h5 ", s2));
  CHECK(foreign.exit_code == 1);
  CHECK(foreign.err.find("feature cache of dataset 'one' (head 0), but the student needs 'two'") != std::string::npos);
}

TEST_CASE("a full disk ends every writing stage with exit 1 and one line", "[stage][hygiene][io][reliability]") {
  // A file-size limit makes writes fail as on a full disk (EFBIG instead of ENOSPC) through the
  // same code paths, without mounting anything: once with SIGXFSZ ignored by the shell, once with
  // its default action (the stages ignore it themselves instead of dying of it).
  TempDir tmp;
  std::string store = MakeStore(tmp, "toy", 2, 30, 8, 1, 3);
  auto t = RunTool("train_teacher", Msg(kTiny, " --epochs 1 --out ", tmp / "t.h5", " ", store));
  REQUIRE(t.exit_code == 0);
  auto j = RunTool("build_joint", Msg("-v 0 --adaptor-dim 8 --out ", tmp / "j.h5", " --teacher ", tmp / "t.h5"));
  REQUIRE(j.exit_code == 0);
  fs::create_directories(tmp / "full");
  const std::vector<std::string> limits = {"trap '' XFSZ; ulimit -f 2; ", "ulimit -f 2; "};  // 2 blocks (1-2 KiB) per file
  const std::string bin = MLFD_BIN_DIR;
  struct Case {
    std::string name, cmd;
  };
  const std::string out = tmp / "full";
  std::vector<Case> cases = {
      {"prepare_data", Msg(bin, "/prepare_data -v 0 --data-root ", tmp.path(), " ", tmp / "toy.json", " ", out, "/s.h5")},
      {"train_teacher", Msg(bin, "/train_teacher ", kTiny, " --epochs 1 --out ", out, "/t.h5 ", store)},
      {"extract_features", Msg(bin, "/extract_features -v 0 --device cpu --levels layer1 --out ", out, "/f.h5 ", tmp / "t.h5",
                               " ", store)},
      {"evaluate", Msg(bin, "/evaluate -v 0 --device cpu --logits-out ", out, "/l.h5 --out ", out, "/e.json ", tmp / "t.h5",
                       " ", store)},
      {"evaluate png", Msg(bin, "/evaluate -v 0 --device cpu --confusion-png ", out, "/c.png ", tmp / "t.h5", " ", store)},
      {"build_joint", Msg(bin, "/build_joint -v 0 --embed-teachers --out ", out, "/j.h5 --teacher ", tmp / "t.h5")},
      {"finetune_joint", Msg(bin, "/finetune_joint -v 0 --threads 2 --device cpu --batch-size 16 --workers 1 --epochs 1 --out ", out,
                             "/jf.h5 ", tmp / "j.h5", " ", store)},
      {"distill_student", Msg(bin, "/distill_student ", kTiny, " --epochs 1 --method kd --like ", tmp / "t.h5", " --teacher ",
                              tmp / "t.h5", " --out ", out, "/s.h5 ", store)}};
  for (const auto& limit : limits)
  for (const auto& c : cases) {
    INFO(c.name << " under: " << limit);
    auto r = mlfd_test::RunShell("bash -c " + std::string("\"") + limit + c.cmd + "\"");
    INFO(r.err);
    CHECK(r.exit_code == 1);
    CHECK(r.err.find("error: ") != std::string::npos);
    CHECK(r.err.find("libpng") == std::string::npos);
    CHECK(std::count(r.err.begin(), r.err.end(), '\n') == 1);  // one line
    for (const auto& e : fs::directory_iterator(out)) {  // no output, no temporary left behind
      std::string name = e.path().filename().string();
      INFO(name);
      // The per-epoch history may stay: it is what --resume reads, not an output make waits for.
      CHECK(name.find(".metrics.jsonl") != std::string::npos);
      CHECK(name.find(".tmp-") == std::string::npos);
    }
  }
}

TEST_CASE("checksums: a flipped byte in stored data is refused naming the dataset", "[stage][hygiene][io][reliability]") {
  TempDir tmp;
  std::string store = MakeStore(tmp, "toy", 2, 10, 8, 1, 3);
  auto t = RunTool("train_teacher", Msg(kTiny, " --epochs 1 --out ", tmp / "t.h5", " ", store));
  REQUIRE(t.exit_code == 0);
  auto x = RunTool("extract_features", Msg("-v 0 --device cpu --levels layer1 --out ", tmp / "f.h5", " ", tmp / "t.h5", " ", store));
  REQUIRE(x.exit_code == 0);
  // Every numeric dataset with rows is chunked with the Fletcher32 filter (h5py sees it).
  auto check = mlfd_test::RunPython(tmp.path(), R"(
import h5py, sys
bad = []
for path in sys.argv[1:]:
    with h5py.File(path, 'r') as f:
        def visit(name, obj):
            if isinstance(obj, h5py.Dataset) and obj.dtype.kind in 'uif' and obj.shape and obj.shape[0] > 0:
                if not obj.fletcher32: bad.append(path + ':' + name)
        f.visititems(visit)
print(len(bad), bad[:5])
)", Msg(store, " ", tmp / "t.h5", " ", tmp / "f.h5"));
  INFO(check.err);
  REQUIRE(check.exit_code == 0);
  CHECK(check.out.rfind("0 ", 0) == 0);
  // Flip one byte inside a weight tensor's stored chunk, and inside the store's images.
  const char* flip = R"(
import h5py, sys
path, name = sys.argv[1], sys.argv[2]
with h5py.File(path, 'r') as f:
    info = f[name].id.get_chunk_info(0)
    off, size = info.byte_offset, info.size
with open(path, 'r+b') as fp:
    fp.seek(off + size // 2)
    b = fp.read(1)
    fp.seek(off + size // 2)
    fp.write(bytes([b[0] ^ 0x10]))
)";
  fs::copy_file(tmp / "t.h5", tmp / "bad.h5");
  REQUIRE(mlfd_test::RunPython(tmp.path(), flip, Msg(tmp / "bad.h5", " state/layer1.0.conv1.weight")).exit_code == 0);
  auto ev = RunTool("evaluate", Msg("-v 0 --device cpu ", tmp / "bad.h5", " ", store));
  CHECK(ev.exit_code == 1);
  CHECK(ev.err.find("state/layer1.0.conv1.weight: checksum mismatch") != std::string::npos);
  fs::copy_file(store, tmp / "bad_store.h5");
  REQUIRE(mlfd_test::RunPython(tmp.path(), flip, Msg(tmp / "bad_store.h5", " images")).exit_code == 0);
  auto es = RunTool("evaluate", Msg("-v 0 --device cpu ", tmp / "t.h5", " ", tmp / "bad_store.h5"));
  CHECK(es.exit_code == 1);
  CHECK(es.err.find("images: checksum mismatch") != std::string::npos);
  // The feature cache's direct reader (per-sample chunks read with pread) returns what HDF5 reads,
  // in the asked order, and verifies every row it reads.
  torch::Tensor rows;
  {
    FeatureCache cache(tmp / "f.h5");
    rows = cache.Indices("train");
    h5::File hf = h5::File::Open(tmp / "f.h5");
    torch::Tensor all = ReadTensor(hf, "train/layer1").to(torch::kFloat32);
    CHECK(torch::equal(cache.Read("train", "layer1", rows.flip(0)), all.flip(0)));
  }
  fs::copy_file(tmp / "f.h5", tmp / "bad_f.h5");
  REQUIRE(mlfd_test::RunPython(tmp.path(), flip, Msg(tmp / "bad_f.h5", " train/layer1")).exit_code == 0);
  FeatureCache bad(tmp / "bad_f.h5");
  CHECK_THROWS_WITH(bad.Read("train", "layer1", rows), Catch::Contains("train/layer1: checksum mismatch"));
  CHECK_NOTHROW(bad.Read("train", "layer1", rows.slice(0, 1)));  // the other rows are intact
  // The file shrinks under a reader that has mapped it: one error line, not a crash.
  fs::copy_file(tmp / "f.h5", tmp / "short_f.h5");
  {
    FeatureCache shrinking(tmp / "short_f.h5");
    CHECK_NOTHROW(shrinking.Read("train", "layer1", rows.slice(0, 0, 2)));
    fs::resize_file(tmp / "short_f.h5", 4096);
    CHECK_THROWS_WITH(shrinking.Read("train", "layer1", rows), Catch::Contains("short_f.h5: read failed (the file shrank"));
  }
}

TEST_CASE("stages tune glibc's allocator, leave a user's malloc settings alone, and train the same either way",
          "[stage][hygiene][train]") {
  TempDir tmp;
  std::string store = MakeStore(tmp, "toy", 3, 20, 8, 1, 5);
  const std::string args = Msg(kTinyNoSeed, " --seed 4 --epochs 2 --lr 0.05 --out ");
  auto tuned = RunTool("train_teacher", args + tmp / "a.h5" + " " + store);
  INFO(tuned.err);
  REQUIRE(tuned.exit_code == 0);
  const std::string user_env = "GLIBC_TUNABLES=glibc.malloc.perturb=0 ";
  auto mine = mlfd_test::RunShell(user_env + MLFD_BIN_DIR + "/train_teacher " + args + tmp / "b.h5" + " " + store);
  INFO(mine.err);
  REQUIRE(mine.exit_code == 0);
  // Same losses and accuracies, epoch by epoch, to the last bit.
  auto epochs = [](const std::string& jsonl) {
    std::vector<nlohmann::json> out;
    std::istringstream in(jsonl);
    for (std::string line; std::getline(in, line);)
      if (!line.empty()) {
        auto j = nlohmann::json::parse(line);
        out.push_back({j.at("train_loss"), j.at("train_acc"), j.at("val_metric")});
      }
    return out;
  };
  auto a = epochs(mlfd_test::ReadText(tmp / "a.metrics.jsonl"));
  REQUIRE(a.size() == 2);
  CHECK(a == epochs(mlfd_test::ReadText(tmp / "b.metrics.jsonl")));
  // Provenance says which allocator setting ran.
  auto eval_json = [&](const std::string& env, const std::string& out) {
    auto r = mlfd_test::RunShell(env + MLFD_BIN_DIR + "/evaluate -v 0 --split val --out " + out + " " + tmp / "a.h5" +
                                 " " + store);
    INFO(r.err);
    REQUIRE(r.exit_code == 0);
    return nlohmann::json::parse(mlfd_test::ReadText(out)).at("provenance").at("allocator").get<std::string>();
  };
  CHECK(eval_json("", tmp / "e1.json") == "glibc, heap only (no mmap), trim threshold 1 GiB");
  CHECK(eval_json(user_env, tmp / "e2.json") == "glibc, the user's environment settings");
  CHECK(eval_json("MALLOC_TRIM_THRESHOLD_=0 ", tmp / "e3.json") == "glibc, the user's environment settings");
  CHECK(eval_json("MALLOC_MMAP_MAX_=65536 ", tmp / "e4.json") == "glibc, the user's environment settings");
}

TEST_CASE("train_teacher --val-every: validation on every N-th and the last epoch, the training unchanged",
          "[stage][train]") {
  TempDir tmp;
  std::string store = MakeStore(tmp, "toy", 3, 20, 8, 1, 6);
  const std::string args = Msg(kTinyNoSeed, " --seed 5 --epochs 5 --lr 0.05");
  auto every = RunTool("train_teacher", Msg(args, " --out ", tmp / "a.h5 ", store));
  auto sparse = RunTool("train_teacher", Msg(args, " --val-every 2 --out ", tmp / "b.h5 ", store));
  INFO(every.err << sparse.err);
  REQUIRE(every.exit_code == 0);
  REQUIRE(sparse.exit_code == 0);
  auto lines = [](const std::string& jsonl) {
    std::vector<nlohmann::json> out;
    std::istringstream in(jsonl);
    for (std::string line; std::getline(in, line);)
      if (!line.empty()) out.push_back(nlohmann::json::parse(line));
    return out;
  };
  auto a = lines(mlfd_test::ReadText(tmp / "a.metrics.jsonl")), b = lines(mlfd_test::ReadText(tmp / "b.metrics.jsonl"));
  REQUIRE(a.size() == 5);
  REQUIRE(b.size() == 5);
  int best = 0;
  double best_val = -1;
  for (size_t e = 0; e < 5; ++e) {
    INFO("epoch " << e + 1);
    CHECK(b[e]["train_loss"] == a[e]["train_loss"]);  // the same training, bit for bit
    const bool validated = (e + 1) % 2 == 0 || e + 1 == 5;
    CHECK(b[e].contains("val_metric") == validated);
    if (validated) {
      CHECK(b[e]["val_metric"] == a[e]["val_metric"]);
      if (a[e]["val_metric"].get<double>() > best_val) best_val = a[e]["val_metric"], best = static_cast<int>(e + 1);
    }
  }
  auto summary = nlohmann::json::parse(sparse.out);
  CHECK(summary["best_epoch"] == best);  // the best among the validated epochs
  CHECK(sparse.err.find("not validated") == std::string::npos);  // -v 0
  auto bad = RunTool("train_teacher", Msg(args, " --val-every 0 --out ", tmp / "c.h5 ", store));
  CHECK(bad.exit_code == 2);
  CHECK(bad.err.find("--val-every: must be >= 1") != std::string::npos);
}
