// No output replaces an input, a file an input refers to, another output of the same command, or
// a file of another kind; a stage with several outputs renames them together, so a failure leaves
// none of them (docs/reliability.md).
#include <catch2/catch.hpp>
#include <sys/stat.h>

#include <filesystem>
#include <nlohmann/json.hpp>
#include <string>

#include "io/h5.h"
#include "test_util.h"
#include "util/error.h"
#include "util/file_roles.h"
#include "util/sha256.h"
#include "util/staged_files.h"

using namespace mlfd;
using mlfd_test::MakeStore;
using mlfd_test::ReadText;
using mlfd_test::RunShell;
using mlfd_test::RunTool;
using mlfd_test::TempDir;
using mlfd_test::WriteText;
namespace fs = std::filesystem;

namespace {

#define MLFD_TINY_MODEL "-v 0 --threads 2 --device cpu --arch resnet18 --width 0.125 --small-stem --embed-dim 16 --seed 3 "
const char* kTiny = MLFD_TINY_MODEL "--batch-size 16 --workers 1 --epochs 1";
const char* kTinyModel = MLFD_TINY_MODEL "--workers 1";

bool Has(const std::string& text, const std::string& what) { return text.find(what) != std::string::npos; }

// The refusal of an output that is an input: exit 2, one line naming both paths.
void CheckRefused(const mlfd_test::RunResult& r, const std::string& out, const std::string& in) {
  INFO(r.err);
  CHECK(r.exit_code == 2);
  CHECK(Has(r.err, "is the same file as the input"));
  CHECK(Has(r.err, out));
  CHECK(Has(r.err, in));
  CHECK(std::count(r.err.begin(), r.err.end(), '\n') == 1);
}

}  // namespace

TEST_CASE("file roles: an output is never an input, a hard link of one, or another output", "[unit][outputs]") {
  TempDir tmp;
  WriteText(tmp / "in.txt", "x");
  fs::create_hard_link(tmp / "in.txt", tmp / "link.txt");
  {
    FileRoleTracking tracking;
    DeclareInput("the store", tmp / "in.txt");
    CHECK_THROWS_AS(DeclareOutput("--out", tmp / "in.txt"), UsageError);
    CHECK_THROWS_WITH(DeclareOutput("--out", tmp / "link.txt"),
                      Catch::Contains("output --out " + tmp / "link.txt" + " is the same file as the input the store " +
                                      tmp / "in.txt"));
    // The same file through another spelling of its path.
    CHECK_THROWS_AS(DeclareOutput("--out", tmp.path() + "/./sub/../in.txt"), UsageError);
    DeclareOutput("--out", tmp / "a.json");
    DeclareOutput("--out", tmp / "a.json");  // again under its own name: fine
    CHECK_THROWS_WITH(DeclareOutput("--md", tmp.path() + "//a.json"), Catch::Contains("are the same file"));
    // Declared in the other order: an input that is an output.
    CHECK_THROWS_AS(DeclareInput("--teacher", tmp / "a.json"), UsageError);
    // Two outputs that are hard links of one file (a training run's best and last checkpoints can
    // be): each is renamed into place, which never writes through the link.
    WriteText(tmp / "last.h5", "x");
    fs::create_hard_link(tmp / "last.h5", tmp / "best.h5");
    DeclareOutput("", tmp / "last.h5");
    CHECK_NOTHROW(DeclareOutput("", tmp / "best.h5"));
  }
  // Without tracking (library calls in one process) nothing is kept.
  DeclareInput("x", tmp / "in.txt");
  DeclareOutput("y", tmp / "in.txt");
}

TEST_CASE("file roles: text outputs replace only files of their own kind", "[unit][outputs]") {
  TempDir tmp;
  // Each check as its own command (one output each).
  auto CheckTextOutput = [](const std::string& what, const std::string& path, OutputKind kind) {
    FileRoleTracking command;
    mlfd::CheckTextOutput(what, path, kind);
  };
  WriteText(tmp / "ok.json", "{\"a\": 1}\n");
  WriteText(tmp / "notes.txt", "my notes\n");
  WriteText(tmp / "fake.h5", std::string("\211HDF\r\n\032\n") + std::string(100, '\0'));
  WriteText(tmp / "r.md", "# a report\n\n| a | b |\n");
  WriteText(tmp / "r.html", "<!DOCTYPE html>\n<html></html>\n");
  WriteText(tmp / "empty", "");
  CheckTextOutput("--out", tmp / "ok.json", OutputKind::kJson);
  CheckTextOutput("--out", tmp / "empty", OutputKind::kJson);  // nothing to lose
  CheckTextOutput("--out", tmp / "new.json", OutputKind::kJson);
  CHECK_THROWS_WITH(CheckTextOutput("--out", tmp / "notes.txt", OutputKind::kJson),
                    Catch::Contains("exists and is a text file that is not JSON, not a JSON output; refusing to overwrite"));
  CHECK_THROWS_WITH(CheckTextOutput("--out", tmp / "fake.h5", OutputKind::kJson), Catch::Contains("is an HDF5 file"));
  CHECK_THROWS_WITH(CheckTextOutput("--confusion-png", tmp / "fake.h5", OutputKind::kPng), Catch::Contains("is an HDF5 file"));
  CHECK_THROWS_WITH(CheckTextOutput("--md", tmp / "ok.json", OutputKind::kMarkdown), Catch::Contains("is a JSON file"));
  CHECK_THROWS_WITH(CheckTextOutput("--md", tmp / "r.html", OutputKind::kMarkdown), Catch::Contains("an HTML or XML file"));
  CheckTextOutput("--md", tmp / "r.md", OutputKind::kMarkdown);
  CheckTextOutput("--html", tmp / "r.html", OutputKind::kHtml);
  CHECK_THROWS_WITH(CheckTextOutput("--html", tmp / "r.md", OutputKind::kHtml), Catch::Contains("is a text file that is not HTML"));
  CHECK_THROWS_WITH(CheckTextOutput("--out", tmp / "nodir/x.json", OutputKind::kJson), Catch::Contains("does not exist"));
}

TEST_CASE("staged files: written together or not at all", "[unit][outputs]") {
  TempDir tmp;
  WriteText(tmp / "a.txt", "old a");
  {
    StagedFiles staged;
    staged.Add(tmp / "a.txt", "new a");
    CHECK_THROWS_AS(staged.Add(tmp / "nodir/b.txt", "b"), Error);
  }  // not committed: the temporary of a.txt is removed and a.txt keeps its old text
  CHECK(ReadText(tmp / "a.txt") == "old a");
  size_t files = 0;
  for (const auto& e : fs::directory_iterator(tmp.path())) files += e.is_regular_file();
  CHECK(files == 1);
  StagedFiles staged;
  staged.Add(tmp / "a.txt", "new a");
  staged.Add(tmp / "b.txt", "b");
  CHECK(ReadText(tmp / "a.txt") == "old a");
  staged.Commit();
  CHECK(ReadText(tmp / "a.txt") == "new a");
  CHECK(ReadText(tmp / "b.txt") == "b");
}

TEST_CASE("stages refuse an output that is an input, a file an input refers to, or another output",
          "[stage][outputs]") {
  TempDir tmp;
  const std::string a = MakeStore(tmp, "oa", 3, 12, 8, 1, 21), b = MakeStore(tmp, "ob", 2, 12, 8, 1, 22);
  const std::string ta = tmp / "ta.h5", tb = tmp / "tb.h5", init = tmp / "init.h5";
  for (const auto& [store, out] : {std::pair{a, ta}, std::pair{b, tb}}) {
    auto r = RunTool("train_teacher", Msg(kTiny, " --out ", out, " ", store));
    INFO(r.err);
    REQUIRE(r.exit_code == 0);
  }
  auto built = RunTool("build_joint", Msg("-v 0 --adaptor-dim 8 --out ", init, " --teacher ", ta, " --teacher ", tb));
  INFO(built.err);
  REQUIRE(built.exit_code == 0);
  const std::string sha_ta = Sha256File(ta), sha_init = Sha256File(init), sha_a = Sha256File(a);

  SECTION("train_teacher --out equal to its store") {
    CheckRefused(RunTool("train_teacher", Msg(kTiny, " --out ", a, " ", a)), a, a);
  }
  SECTION("build_joint --out equal to a teacher") {
    CheckRefused(RunTool("build_joint", Msg("-v 0 --adaptor-dim 8 --out ", tb, " --teacher ", ta, " --teacher ", tb)), tb, tb);
  }
  SECTION("finetune_joint --out equal to its init, or to a teacher the init refers to") {
    const std::string ft = Msg("-v 0 --threads 2 --batch-size 16 --workers 1 --epochs 1 --out ");
    CheckRefused(RunTool("finetune_joint", Msg(ft, init, " ", init, " ", a, " ", b)), init, init);
    auto r = RunTool("finetune_joint", Msg(ft, ta, " ", init, " ", a, " ", b));
    CheckRefused(r, ta, ta);
    CHECK(Has(r.err, "teacher 0 of the joint teacher"));
  }
  SECTION("distill_student --out equal to its teacher, or to the teacher of its T*") {
    const std::string ds = Msg("-v 0 --threads 2 --batch-size 16 --workers 1 --epochs 1 --method kd --like ", ta);
    CheckRefused(RunTool("distill_student", Msg(ds, " --teacher ", ta, " --out ", ta, " ", a)), ta, ta);
    const std::string mlfd = Msg("-v 0 --threads 2 --batch-size 16 --workers 1 --epochs 1 --method mlfd --like ", ta);
    CheckRefused(RunTool("distill_student", Msg(mlfd, " --teacher ", init, " --out ", tb, " ", a)), tb, tb);
  }
  SECTION("evaluate: --out on the checkpoint, a hard link of it, --confusion-png on the store, two outputs on one file") {
    CheckRefused(RunTool("evaluate", Msg("-v 0 --out ", ta, " ", ta, " ", a)), ta, ta);
    fs::create_hard_link(ta, tmp / "link.h5");
    CheckRefused(RunTool("evaluate", Msg("-v 0 --out ", tmp / "link.h5", " ", ta, " ", a)), tmp / "link.h5", ta);
    CheckRefused(RunTool("evaluate", Msg("-v 0 --confusion-png ", a, " ", ta, " ", a)), a, a);
    auto two = RunTool("evaluate", Msg("-v 0 --confusion-png ", tmp / "p.png", " --curves-png ", tmp / "p.png", " ", ta, " ", a));
    INFO(two.err);
    CHECK(two.exit_code == 2);
    CHECK(Has(two.err, "are the same file"));
    // The loss plot beside --curves-png X.png is X.loss.png: it collides with a --confusion-png there.
    auto derived = RunTool("evaluate", Msg("-v 0 --confusion-png ", tmp / "q.loss.png", " --curves-png ", tmp / "q.png",
                                           " ", ta, " ", a));
    CHECK(derived.exit_code == 2);
    CHECK(Has(derived.err, "the loss plot of --curves-png"));
  }
  SECTION("report --md equal to one of its evaluations") {
    auto ev = RunTool("evaluate", Msg("-v 0 --out ", tmp / "e.json", " ", ta, " ", a));
    REQUIRE(ev.exit_code == 0);
    const std::string sha_e = Sha256File(tmp / "e.json");
    CheckRefused(RunTool("report", Msg("-v 0 --md ", tmp / "e.json", " ", tmp / "e.json")), tmp / "e.json", tmp / "e.json");
    CHECK(Sha256File(tmp / "e.json") == sha_e);
  }
  SECTION("prepare_data onto its own manifest") {
    const std::string manifest = tmp / "m.json";
    WriteText(manifest, "{}");
    auto r = RunTool("prepare_data", Msg("-v 0 ", manifest, " ", manifest));
    CheckRefused(r, manifest, manifest);
    CHECK(ReadText(manifest) == "{}");
  }
  // Nothing was replaced.
  CHECK(Sha256File(ta) == sha_ta);
  CHECK(Sha256File(init) == sha_init);
  CHECK(Sha256File(a) == sha_a);
}

TEST_CASE("evaluate: outputs of another kind are kept, its own are replaced, and a failure leaves none",
          "[stage][outputs]") {
  TempDir tmp;
  const std::string a = MakeStore(tmp, "ea", 3, 12, 8, 1, 31);
  const std::string t = tmp / "t.h5";
  auto tr = RunTool("train_teacher", Msg(kTiny, " --out ", t, " ", a));
  INFO(tr.err);
  REQUIRE(tr.exit_code == 0);
  const std::string outs = Msg("--out ", tmp / "e.json", " --confusion-png ", tmp / "c.png", " --curves-png ",
                               tmp / "k.png", " --logits-out ", tmp / "l.h5", " ");

  // A user's own PNG where the loss plot of --curves-png would go is kept.
  WriteText(tmp / "k.loss.png", std::string("\211PNG\r\n\032\n") + std::string(40, 'x'));
  auto mine = RunTool("evaluate", Msg("-v 0 --curves-png ", tmp / "k.png", " ", t, " ", a));
  INFO(mine.err);
  CHECK(mine.exit_code == 1);
  CHECK(Has(mine.err, "k.loss.png: exists and is a PNG image not written by this toolkit"));
  CHECK(ReadText(tmp / "k.loss.png").size() == 48);
  fs::remove(tmp / "k.loss.png");

  // A JSON output onto a user's notes is refused.
  WriteText(tmp / "notes.txt", "keep me\n");
  auto notes = RunTool("evaluate", Msg("-v 0 --out ", tmp / "notes.txt", " ", t, " ", a));
  CHECK(notes.exit_code == 1);
  CHECK(ReadText(tmp / "notes.txt") == "keep me\n");

  // Every output written, and written again by a rerun (its own outputs are replaced).
  for (int run = 0; run < 2; ++run) {
    auto ok = RunTool("evaluate", Msg("-v 0 ", outs, t, " ", a));
    INFO(ok.err);
    REQUIRE(ok.exit_code == 0);
    for (const char* f : {"e.json", "c.png", "k.png", "k.loss.png", "l.h5"}) CHECK(mlfd_test::FileExists(tmp / f));
  }
  // Our PNGs carry the mark.
  CHECK(Has(ReadText(tmp / "k.loss.png"), std::string("tEXtSoftware") + '\0' + "mlfd"));

  // Under a file-size limit the largest output cannot be written: none of them is replaced or left
  // half-written, and no temporary remains.
  fs::create_directories(tmp / "fresh");
  const std::string fresh = Msg("--out ", tmp / "fresh/e.json", " --confusion-png ", tmp / "fresh/c.png", " --curves-png ",
                                tmp / "fresh/k.png", " --logits-out ", tmp / "fresh/l.h5", " ");
  auto limited = RunShell(Msg("ulimit -f 8; ", MLFD_BIN_DIR, "/evaluate -v 0 ", fresh, t, " ", a));
  INFO(limited.err);
  CHECK(limited.exit_code == 1);
  size_t left = 0;
  for (const auto& e : fs::directory_iterator(tmp / "fresh")) {
    UNSCOPED_INFO(e.path().string());
    ++left;
  }
  CHECK(left == 0);
}

TEST_CASE("training: a retrain that does not finish keeps the previous run's history and the run in progress keeps its own",
          "[stage][outputs]") {
  TempDir tmp;
  const std::string store = MakeStore(tmp, "hist", 2, 15, 8, 1, 31);
  const std::string out = tmp / "t.h5", metrics = tmp / "t.metrics.jsonl", running = tmp / "t.last.metrics.jsonl";
  auto lines = [](const std::string& text) { return std::count(text.begin(), text.end(), '\n'); };
  auto first = RunTool("train_teacher", Msg(kTinyModel, " --batch-size 16 --epochs 2 --out ", out, " ", store));
  INFO(first.err);
  REQUIRE(first.exit_code == 0);
  const std::string history = ReadText(metrics), weights = Sha256File(out);
  CHECK(lines(history) == 2);
  CHECK_FALSE(mlfd_test::FileExists(running));  // renamed beside the checkpoint at the end

  // A retrain interrupted after one of three epochs: the finished run's checkpoint and history are
  // untouched; the new run's history is beside its resume state.
  auto part = RunTool("train_teacher", Msg(kTinyModel, " --batch-size 16 --epochs 3 --stop-after 1 --out ", out, " ", store));
  INFO(part.err);
  REQUIRE(part.exit_code == 0);
  CHECK(ReadText(metrics) == history);
  CHECK(Sha256File(out) == weights);
  CHECK(lines(ReadText(running)) == 1);

  // A retrain that fails (diverging): the same.
  auto bad = RunTool("train_teacher", Msg(kTinyModel, " --batch-size 16 --epochs 3 --lr 1e30 --out ", out, " ", store));
  CHECK(bad.exit_code == 1);
  CHECK(ReadText(metrics) == history);
  CHECK(Sha256File(out) == weights);

  // Resuming the interrupted run reads its own history and ends with three epochs beside the new
  // checkpoint.
  auto again = RunTool("train_teacher", Msg(kTinyModel, " --batch-size 16 --epochs 3 --stop-after 1 --out ", out, " ", store));
  REQUIRE(again.exit_code == 0);
  auto rest = RunTool("train_teacher", Msg(kTinyModel, " --batch-size 16 --epochs 3 --resume --out ", out, " ", store));
  INFO(rest.err);
  REQUIRE(rest.exit_code == 0);
  const std::string done = ReadText(metrics);
  CHECK(lines(done) == 3);
  CHECK(done.find("\"epoch\":1") != std::string::npos);
  CHECK(Sha256File(out) != weights);
  CHECK_FALSE(mlfd_test::FileExists(running));
}

TEST_CASE("training: a batch that does not fit in memory is refused before it is allocated", "[stage][outputs]") {
  TempDir tmp;
  const std::string store = MakeStore(tmp, "mem", 2, 20, 16, 1, 32);
  // 24 training images, a batch of 24: the probe measures some kB per image, far above 1 kB in all.
  auto r = RunTool("train_teacher", Msg(kTinyModel, " --epochs 1 --batch-size 24 --memory-budget 0.000001 --out ", tmp / "t.h5", " ", store));
  INFO(r.err);
  CHECK(r.exit_code == 1);
  CHECK(Has(r.err, "a training batch of 24 images needs about"));
  CHECK(Has(r.err, "but --memory-budget allows 1.0 kB; use a batch of at most 1 images"));
  CHECK(std::count(r.err.begin(), r.err.end(), '\n') == 1);
  CHECK_FALSE(mlfd_test::FileExists(tmp / "t.h5"));
  CHECK_FALSE(mlfd_test::FileExists(tmp / "t.last.h5"));
  // Within the budget, and by default (against the memory available), the same run trains. (That
  // the probe changes nothing in the training is checked by the resume tests: an interrupted run
  // probes at two places, the uninterrupted one at one, and their weights are bitwise equal.)
  auto a = RunTool("train_teacher", Msg(kTinyModel, " --epochs 1 --batch-size 24 --memory-budget 4 --out ", tmp / "a.h5", " ", store));
  auto b = RunTool("train_teacher", Msg(kTinyModel, " --epochs 1 --batch-size 24 --out ", tmp / "b.h5", " ", store));
  INFO(a.err << b.err);
  REQUIRE(a.exit_code == 0);
  REQUIRE(b.exit_code == 0);
  auto v = RunTool("train_teacher", Msg(kTinyModel, " --epochs 1 --batch-size 24 --memory-budget -1 --out ", tmp / "c.h5", " ", store));
  CHECK(v.exit_code == 2);
}

TEST_CASE("training: a batch larger than the training split is bounded with a warning, --workers by the cores",
          "[stage][outputs]") {
  TempDir tmp;
  const std::string store = MakeStore(tmp, "small", 2, 10, 8, 1, 33);  // 12 training images
  auto r = RunTool("train_teacher", Msg(MLFD_TINY_MODEL, " --epochs 1 --batch-size 500 --workers 4096 --out ", tmp / "t.h5", " ", store));
  INFO(r.err);
  REQUIRE(r.exit_code == 0);
  CHECK(Has(r.err, "a batch of 500 images from its 12 would repeat images; using batches of 12"));
  CHECK(Has(r.err, "--workers 4096 is more than the "));
  CHECK(Has(r.err, " cores this process may use; using "));
  // Under a narrower CPU affinity (as srun -c gives a job step), the bound is that affinity's.
  auto one = mlfd_test::RunShell(Msg("taskset -c 0 ", MLFD_BIN_DIR, "/train_teacher ", MLFD_TINY_MODEL,
                                     " --epochs 1 --workers 3 --out ", tmp / "t1.h5", " ", store));
  INFO(one.err);
  CHECK(one.exit_code == 0);
  CHECK(Has(one.err, "--workers 3 is more than the 1 cores this process may use; using 1"));
  // The batch the run used: one step of all 12 images per epoch.
  h5::File last = h5::File::Open(tmp / "t.last.h5");
  CHECK(last.GetJsonAttr("train_state", "recipe").at("steps_per_epoch") == 1);
}
