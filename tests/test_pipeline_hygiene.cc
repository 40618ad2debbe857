// Makefile.pipeline hygiene: a dataset's manifest and data root set per dataset in the pipeline
// file (MANIFEST_<ds>, DATA_ROOT_<ds>), and one make per run folder (the flock on $(RUN)/.lock:
// a second make on the same RUN stops at once with one line, -n takes no lock, other RUN folders
// are not blocked).
#include <catch2/catch.hpp>

#include <algorithm>
#include <chrono>
#include <filesystem>
#include <sstream>
#include <opencv2/core.hpp>
#include <opencv2/imgcodecs.hpp>
#include <thread>

#include "data/image_store.h"
#include "io/h5.h"
#include "test_util.h"
#include "util/error.h"

using namespace mlfd;
using mlfd_test::FileExists;
using mlfd_test::ReadText;
using mlfd_test::RunShell;
using mlfd_test::TempDir;
using mlfd_test::WriteText;
namespace fs = std::filesystem;

namespace {

// `classes` folders c0.. of `per_class` grey PNGs each under `dir`.
void WriteImages(const std::string& dir, int classes, int per_class, int size) {
  for (int c = 0; c < classes; ++c) {
    fs::create_directories(Msg(dir, "/c", c));
    for (int k = 0; k < per_class; ++k) {
      cv::Mat img(size, size, CV_8UC1, cv::Scalar(20 * c + k));
      cv::imwrite(Msg(dir, "/c", c, "/", k, ".png"), img);
    }
  }
}

// A manifest whose one folder source is `root`, relative to the data root.
void WriteManifest(const std::string& path, const std::string& name, const std::string& root, int seed) {
  WriteText(path, Msg(R"({"name": ")", name, R"(", "classes": "folders", "sources": [{"kind": "folder", "root": ")", root,
                      R"("}], "split": {"mode": "stratified", "fractions": {"train": 0.6, "val": 0.2, "test": 0.2}, "seed": )",
                      seed, R"(}, "image": {"size": 8, "channels": 1}})"));
}

std::string Trim(std::string s) {
  while (!s.empty() && (s.back() == '\n' || s.back() == ' ')) s.pop_back();
  return s;
}

// Polls `done` every 50 ms for at most `seconds`; returns whether it became true.
template <typename F>
bool WaitFor(F done, double seconds) {
  auto end = std::chrono::steady_clock::now() + std::chrono::duration<double>(seconds);
  while (!done()) {
    if (std::chrono::steady_clock::now() > end) return false;
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
  return true;
}

// Stand-in stage binaries in <tmp>/bin: each records its call in <tmp>/calls.log and writes the
// files it is asked for (--out, report's --md/--html, prepare_data's last argument), so make sees
// real artefacts; the stages in `except` are left for the caller to write. Also the two
// datasets' manifests va.json and vb.json.
void WriteFakeStages(const TempDir& tmp, const std::vector<std::string>& except = {}) {
  fs::create_directories(tmp / "bin");
  const std::string fake = Msg("#!/bin/sh\necho \"$(basename \"$0\") $*\" >> ", tmp / "calls.log",
                               "\nprev=; last=\nfor a; do\n  case \"$prev\" in --out|--md|--html) : > \"$a\" ;; esac\n"
                               "  prev=$a; last=$a\ndone\n[ \"$(basename \"$0\")\" = prepare_data ] && : > \"$last\"\n"
                               "[ \"$(basename \"$0\")\" = make_moving_sprites ] && mkdir -p \"$last\" && "
                               ": > \"$last/moving_sprites.json\"\nexit 0\n");
  for (const char* b : {"prepare_data", "train_teacher", "build_joint", "finetune_joint", "extract_features", "distill_student",
                        "evaluate", "report", "make_moving_sprites"}) {
    if (std::find(except.begin(), except.end(), b) != except.end()) continue;
    WriteText(tmp / Msg("bin/", b), fake);
    fs::permissions(tmp / Msg("bin/", b), fs::perms::owner_all);
  }
  WriteText(tmp / "va.json", "{}");
  WriteText(tmp / "vb.json", "{}");
}

// A stand-in extract_features in <tmp>/bin that records its call like the other stand-ins and
// answers --print-levels with what decides levels here: the method and any --pairs inside each
// --for-student string.
void WriteFakeExtractFeatures(const TempDir& tmp) {
  WriteText(tmp / "bin/extract_features",
            Msg("#!/bin/sh\necho \"extract_features $*\" >> ", tmp / "calls.log",
                "\nprev=; print=\nfor a; do\n  case \"$prev\" in --out) : > \"$a\" ;; esac\n"
                "  [ \"$a\" = --print-levels ] && print=1\n  prev=$a\ndone\n"
                "if [ -n \"$print\" ]; then for a; do case \"$a\" in *--method*) echo \"$a\" | "
                "grep -o -e '--method [a-z_0-9]*' -e '--pairs [^ ]*' | tr '\\n' ' ';; esac; done; echo; fi\nexit 0\n"));
  fs::permissions(tmp / "bin/extract_features", fs::perms::owner_all);
}

// The lines of <tmp>/calls.log written since the last call.
class NewCalls {
 public:
  explicit NewCalls(std::string log) : log_(std::move(log)) {}
  std::string operator()() {
    std::string all = ReadText(log_);
    std::string fresh = all.substr(std::min(seen_, all.size()));
    seen_ = all.size();
    return fresh;
  }

 private:
  std::string log_;
  size_t seen_ = 0;
};

}  // namespace

TEST_CASE("Makefile.pipeline: a dataset's manifest and data root from any folder", "[pipeline][hygiene-pipeline]") {
  TempDir tmp;
  // pa: its manifest in a folder of its own, its images only under its own data root. pb: the
  // defaults, $(MANIFESTS)/pb.json and $(DATA_ROOT).
  fs::create_directories(tmp / "elsewhere");
  fs::create_directories(tmp / "manifests");
  WriteImages(tmp / "root_pa/imgs/pa", 3, 5, 8);
  WriteImages(tmp / "root_common/imgs/pb", 2, 5, 8);
  const std::string man_a = tmp / "elsewhere/pa.json", man_b = tmp / "manifests/pb.json";
  WriteManifest(man_a, "pa", "imgs/pa", 1);
  WriteManifest(man_b, "pb", "imgs/pb", 1);
  // Manifests older than any store, so only an edit below makes one newer.
  const auto past = fs::file_time_type::clock::now() - std::chrono::seconds(120);
  fs::last_write_time(man_a, past);
  fs::last_write_time(man_b, past);
  WriteText(tmp / "hyg.mk", Msg("DATASETS = pa pb\nMANIFEST_pa = ", man_a, "\nDATA_ROOT_pa = ", tmp / "root_pa", "\n"));
  const std::string run = tmp / "run";
  const std::string make = Msg("make -C ", MLFD_SOURCE_DIR, " -f Makefile.pipeline PIPELINE=hyg PIPELINE_FILE=", tmp / "hyg.mk",
                               " MANIFESTS=", tmp / "manifests", " DATA_ROOT=", tmp / "root_common", " RUN=", run,
                               " BIN=", MLFD_BIN_DIR, " VERBOSE=0");

  auto plan = RunShell(make + " -n data");
  INFO(plan.err);
  REQUIRE(plan.exit_code == 0);
  CHECK(plan.out.find(Msg("--data-root ", tmp / "root_pa", " ")) != std::string::npos);
  CHECK(plan.out.find(Msg(man_a, " ", run, "/data/pa.h5")) != std::string::npos);
  CHECK(plan.out.find(Msg("--data-root ", tmp / "root_common", " ")) != std::string::npos);
  CHECK(plan.out.find(Msg(man_b, " ", run, "/data/pb.h5")) != std::string::npos);
  CHECK_FALSE(FileExists(run));  // -n wrote nothing, not even the lock

  auto made = RunShell(make + " data");
  INFO(made.out << made.err);
  REQUIRE(made.exit_code == 0);
  ImageStore a = ImageStore::Open(run + "/data/pa.h5"), b = ImageStore::Open(run + "/data/pb.h5");
  CHECK(a.name() == "pa");
  CHECK(a.size() == 15);
  CHECK(a.num_classes() == 3);
  CHECK(b.name() == "pb");
  CHECK(b.size() == 10);
  CHECK(b.num_classes() == 2);
  auto root_of = [](const std::string& store) {
    return h5::File::Open(store).GetJsonAttr("/", "provenance")["options"]["data-root"].get<std::string>();
  };
  CHECK(root_of(run + "/data/pa.h5") == tmp / "root_pa");
  CHECK(root_of(run + "/data/pb.h5") == tmp / "root_common");
  CHECK(ReadText(run + "/data/pa.json").find("\"samples\":15") != std::string::npos);

  // Editing pa's manifest rebuilds pa's store, and only it.
  const auto stored = fs::file_time_type::clock::now() - std::chrono::seconds(60);
  fs::last_write_time(run + "/data/pa.h5", stored);
  fs::last_write_time(run + "/data/pb.h5", stored);
  WriteManifest(man_a, "pa", "imgs/pa", 7);
  auto again = RunShell(make + " data");
  INFO(again.out << again.err);
  REQUIRE(again.exit_code == 0);
  CHECK(again.out.find(man_a) != std::string::npos);
  CHECK(again.out.find(man_b) == std::string::npos);
  CHECK(h5::File::Open(run + "/data/pa.h5").GetJsonAttr("/", "manifest")["split"]["seed"] == 7);
  CHECK(fs::last_write_time(run + "/data/pb.h5") == stored);

  // A manifest that is not there is named.
  auto missing = RunShell(make + " MANIFEST_pa=" + tmp / "nowhere.json data");
  CHECK(missing.exit_code != 0);
  CHECK(missing.err.find(Msg("No rule to make target '", tmp / "nowhere.json", "'")) != std::string::npos);
}

TEST_CASE("Makefile.pipeline: a second make on the same RUN stops at once and another RUN is not blocked",
          "[pipeline][hygiene-pipeline]") {
  TempDir tmp;
  // A stand-in prepare_data that takes $FAKE_SLEEP seconds, so the first make holds the lock that long.
  fs::create_directories(tmp / "bin");
  WriteText(tmp / "bin/prepare_data",
            "#!/bin/sh\nsleep \"${FAKE_SLEEP:-0}\"\nfor a; do out=$a; done\necho store > \"$out\"\necho '{}'\n");
  fs::permissions(tmp / "bin/prepare_data", fs::perms::owner_all);
  WriteText(tmp / "m.json", "{}");
  WriteText(tmp / "lock.mk", "DATASETS = m\n");
  auto make = [&](const std::string& run) {
    return Msg("make -C ", MLFD_SOURCE_DIR, " -f Makefile.pipeline PIPELINE=lock PIPELINE_FILE=", tmp / "lock.mk",
               " MANIFESTS=", tmp.path(), " BIN=", tmp / "bin", " RUN=", run, " VERBOSE=0");
  };
  const std::string r1 = tmp / "r1", r2 = tmp / "r2";

  // The first make, in the background: its pid now, its exit status when it ends.
  auto bg = RunShell(Msg("( FAKE_SLEEP=6 ", make(r1), " -j2 data >", tmp / "bg.log", " 2>&1 & echo $! >", tmp / "bg.pid",
                         "; wait $!; echo $? >", tmp / "bg.rc.part", "; mv ", tmp / "bg.rc.part ", tmp / "bg.rc", " ) &"));
  REQUIRE(bg.exit_code == 0);
  std::string pid;
  bool locked = WaitFor(
      [&] {
        pid = Trim(ReadText(tmp / "bg.pid"));
        return !pid.empty() && Trim(ReadText(r1 + "/.lock")) == pid;
      },
      30);
  INFO(ReadText(tmp / "bg.log"));
  REQUIRE(locked);  // the lock file names the make that holds it

  auto t0 = std::chrono::steady_clock::now();
  auto second = RunShell(make(r1) + " -j2 data");
  double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  INFO(second.out << second.err);
  CHECK(second.exit_code == 2);
  CHECK(secs < 5);
  CHECK(second.err.find(Msg("another make is running in ", r1, " (lock ", r1, "/.lock held by pid ", pid,
                            "); wait for it or use another RUN")) != std::string::npos);
  CHECK(second.out.find("prepare_data") == std::string::npos);
  CHECK_FALSE(FileExists(tmp / "bg.rc"));  // the first one is still running

  // -n takes no lock: the plan is printed meanwhile.
  auto plan = RunShell(make(r1) + " -n data");
  CHECK(plan.exit_code == 0);
  CHECK(plan.out.find(Msg(tmp / "m.json ", r1, "/data/m.h5")) != std::string::npos);
  // Another RUN folder runs meanwhile.
  auto other = RunShell(make(r2) + " data");
  INFO(other.err);
  CHECK(other.exit_code == 0);
  CHECK(Trim(ReadText(r2 + "/data/m.h5")) == "store");
  CHECK_FALSE(FileExists(tmp / "bg.rc"));

  // The first make finishes undisturbed; then the folder is free again.
  REQUIRE(WaitFor([&] { return FileExists(tmp / "bg.rc"); }, 60));
  CHECK(Trim(ReadText(tmp / "bg.rc")) == "0");
  CHECK(Trim(ReadText(r1 + "/data/m.h5")) == "store");
  CHECK(FileExists(r1 + "/data/m.json"));
  auto after = RunShell(make(r1) + " data");
  CHECK(after.exit_code == 0);
  CHECK(after.out.find("Nothing to be done for 'data'") != std::string::npos);

  // A lock held by any other process blocks too (its pid is unknown to the lock file).
  REQUIRE(RunShell(Msg("flock ", r1, "/.lock sleep 2 >/dev/null 2>&1 &")).exit_code == 0);
  REQUIRE(WaitFor([&] { return RunShell(Msg("flock -n ", r1, "/.lock true")).exit_code != 0; }, 10));
  auto foreign = RunShell(make(r1) + " data");
  CHECK(foreign.exit_code == 2);
  CHECK(foreign.err.find(Msg("(lock ", r1, "/.lock held by another process)")) != std::string::npos);
  CHECK(WaitFor([&] { return RunShell(Msg("flock -n ", r1, "/.lock true")).exit_code == 0; }, 10));
}

TEST_CASE("Makefile.pipeline: changing a stage's options reruns exactly that stage and what depends on it",
          "[pipeline][hygiene-pipeline]") {
  TempDir tmp;
  WriteFakeStages(tmp);
  const std::string base = "DATASETS = va vb\nTEACHER_OPTS = --epochs 2\nMETHODS = kd mlfd unic\nSTUDENT_OPTS = --epochs 3\n"
                           "JOINT_MAPS = cached\nSTUDENT_SIGNALS = cached\nJOINT_CACHE_LEVELS = fused,pool\n"
                           "TEACHER_CACHE_LEVELS = layer2\nVARIANTS = t8\nVARIANT_OPTS_t8 = --temperature 8\n";
  WriteText(tmp / "opts.mk", base);
  const std::string run = tmp / "run";
  const std::string make = Msg("make -C ", MLFD_SOURCE_DIR, " -f Makefile.pipeline PIPELINE=opts PIPELINE_FILE=", tmp / "opts.mk",
                               " MANIFESTS=", tmp.path(), " BIN=", tmp / "bin", " RUN=", run, " VERBOSE=0 SEEDS='1 2'");
  NewCalls calls(tmp / "calls.log");  // the calls since the last look, one line each
  auto count = [](const std::string& s, const std::string& what) {
    size_t n = 0;
    for (auto p = s.find(what); p != std::string::npos; p = s.find(what, p + 1)) ++n;
    return n;
  };
  // The calls of one stage binary in `log` (lines start with its name).
  auto runs = [&](const std::string& log, const std::string& bin) { return count("\n" + log, "\n" + bin + " "); };

  auto first = RunShell(make);
  INFO(first.out << first.err);
  REQUIRE(first.exit_code == 0);
  std::string all = calls();
  CHECK(runs(all, "train_teacher") == 6);  // 2 teachers + the baseline, per seed
  CHECK(runs(all, "distill_student") == 16);  // kd, mlfd, unic and the variant, per dataset and seed
  CHECK(ReadText(run + "/.opts/teacher_va.opts") == "train_teacher --epochs 2\n");
  CHECK(ReadText(run + "/.opts/student_mlfd_vb.opts") == "distill_student --method mlfd --epochs 3 --teacher-signals cached\n");
  auto again = RunShell(make);
  REQUIRE(again.exit_code == 0);
  CHECK(calls().empty());

  // -n shows what an option change would rerun, and writes nothing.
  auto plan = RunShell(make + " -n TEACHER_OPTS_vb='--lr 0.2'");
  INFO(plan.out << plan.err);
  REQUIRE(plan.exit_code == 0);
  CHECK(count(plan.out, "bin/train_teacher ") == 2);
  CHECK(count(plan.out, "--lr 0.2 --seed") == 2);
  CHECK(plan.out.find("teachers/va.h5 " + run + "/data/va.h5") == std::string::npos);
  CHECK(plan.out.find("bin/prepare_data") == std::string::npos);
  CHECK(plan.out.find("baseline/joint.h5") == std::string::npos);
  CHECK(count(plan.out, "bin/build_joint ") == 2);  // T* is assembled from vb's teacher too
  CHECK(plan.out.find("students/kd_va.h5") == std::string::npos);  // va's own teacher is unchanged
  CHECK(plan.out.find("students/kd_vb.h5") != std::string::npos);
  CHECK(ReadText(run + "/.opts/teacher_vb.opts") == "train_teacher --epochs 2\n");

  // Editing one student option of one dataset in the pipeline file reruns that dataset's students
  // (every method, the variant too), their evaluations and the report; nothing upstream.
  WriteText(tmp / "opts.mk", base + "STUDENT_OPTS_va = --lr 0.01\n");
  auto edited = RunShell(make);
  INFO(edited.out << edited.err);
  REQUIRE(edited.exit_code == 0);
  std::string ran = calls();
  INFO(ran);
  CHECK(runs(ran, "distill_student") == 8);
  CHECK(count(ran, "--epochs 3 --lr 0.01") == 8);
  CHECK(ran.find("mlfd_vb.h5") == std::string::npos);
  CHECK(runs(ran, "evaluate") == 8);
  CHECK(runs(ran, "report") == 1);
  for (const char* up : {"train_teacher", "build_joint", "finetune_joint", "extract_features", "prepare_data"}) {
    INFO(up);
    CHECK(ran.find(up) == std::string::npos);
  }
  // One variant's options: that variant alone.
  WriteText(tmp / "opts.mk", base + "STUDENT_OPTS_va = --lr 0.01\nVARIANT_OPTS_t8 = --temperature 2\n");
  REQUIRE(RunShell(make).exit_code == 0);
  ran = calls();
  CHECK(runs(ran, "distill_student") == 4);
  CHECK(count(ran, "--temperature 2 --seed") == 4);
  CHECK(runs(ran, "evaluate") == 4);
  // A changed cache level list reruns the caches and the students that read them.
  REQUIRE(RunShell(make + " TEACHER_CACHE_LEVELS=layer3").exit_code == 0);
  ran = calls();
  CHECK(runs(ran, "extract_features") == 4);
  CHECK(count(ran, "--levels layer3") == 4);
  CHECK(runs(ran, "distill_student") == 4);  // kd from the teacher caches, per dataset and seed
  CHECK(count(ran, "--method kd") == 4);

  // A run folder from before options were tracked (no .opts): nothing reruns.
  fs::remove_all(run + "/.opts");
  auto old = RunShell(make + " TEACHER_CACHE_LEVELS=layer3");
  INFO(old.out << old.err);
  REQUIRE(old.exit_code == 0);
  CHECK(calls().empty());
  CHECK(ReadText(run + "/.opts/teacher_cache_va.opts") == "extract_features --levels layer3\n");
}

TEST_CASE("Makefile.pipeline: derived cache levels follow the students that read each cache", "[pipeline][hygiene-pipeline]") {
  TempDir tmp;
  WriteFakeStages(tmp, {"extract_features"});
  WriteFakeExtractFeatures(tmp);
  // No JOINT_CACHE_LEVELS / TEACHER_CACHE_LEVELS: the caches hold what their readers' methods read.
  WriteText(tmp / "d.mk", "DATASETS = va vb\nMETHODS = kd mlfd\nSTUDENT_OPTS = --epochs 3\nSTUDENT_SIGNALS = cached\n");
  const std::string run = tmp / "run";
  const std::string make = Msg("make -C ", MLFD_SOURCE_DIR, " -f Makefile.pipeline PIPELINE=d PIPELINE_FILE=", tmp / "d.mk",
                               " MANIFESTS=", tmp.path(), " BIN=", tmp / "bin", " RUN=", run, " VERBOSE=0");
  NewCalls calls(tmp / "calls.log");
  auto lines_with = [](const std::string& log, const std::string& what, const std::string& without = "") {
    std::vector<std::string> out;
    std::istringstream in(log);
    for (std::string l; std::getline(in, l);)
      if (l.find(what) != std::string::npos && (without.empty() || l.find(without) == std::string::npos))
        out.push_back(l);
    return out;
  };
  auto first = RunShell(make);
  INFO(first.out << first.err);
  REQUIRE(first.exit_code == 0);
  std::string all = calls();
  CHECK(lines_with(all, "--print-levels").size() == 4);  // the check of each cache's levels
  auto ex = lines_with(all, "extract_features ", "--print-levels");
  REQUIRE(ex.size() == 4);  // T*'s and the teacher's cache, per dataset
  for (const auto& l : ex) {
    INFO(l);
    CHECK(l.find("--levels") == std::string::npos);
    if (l.find("features/joint_va.h5") != std::string::npos)
      CHECK(l.find("--for-student --method mlfd --like " + run + "/seed1/teachers/va.h5 --epochs 3 --splits") !=
            std::string::npos);
    if (l.find("features/teacher_vb.h5") != std::string::npos)
      CHECK(l.find("--for-student --method kd --like " + run + "/seed1/teachers/vb.h5 --epochs 3 --splits") !=
            std::string::npos);  // FitNet is not in METHODS: no hint level asked for
  }
  CHECK(ReadText(run + "/seed1/features/joint_va.levels") == "--method mlfd \n");
  CHECK(ReadText(run + "/.opts/joint_cache_va.opts") == "extract_features --for-student '--method mlfd --epochs 3'\n");
  CHECK(ReadText(run + "/.opts/teacher_cache_vb.opts") == "extract_features --for-student '--method kd --epochs 3'\n");
  auto again = RunShell(make);
  REQUIRE(again.exit_code == 0);
  CHECK(calls().empty());

  // An MLFD option that changes what the students read: T*'s caches and the MLFD students rerun,
  // the teacher caches and KD do not.
  const std::string pairs = " MLFD_OPTS='--pairs layer4:fused'";
  REQUIRE(RunShell(make + pairs).exit_code == 0);
  std::string ran = calls();
  INFO(ran);
  ex = lines_with(ran, "extract_features ", "--print-levels");
  CHECK(ex.size() == 2);
  for (const auto& l : ex) CHECK(l.find("features/joint_") != std::string::npos);
  CHECK(lines_with(ran, "distill_student ").size() == 2);
  CHECK(lines_with(ran, "--method kd").empty());
  // One that does not (the students' epochs): the levels are checked, no cache is re-extracted.
  REQUIRE(RunShell(make + pairs + " STUDENT_OPTS='--epochs 4'").exit_code == 0);
  ran = calls();
  CHECK(lines_with(ran, "--print-levels").size() == 4);
  CHECK(lines_with(ran, "extract_features ", "--print-levels").empty());
  CHECK(lines_with(ran, "distill_student ").size() == 4);  // kd and mlfd, both datasets
  // One dataset's student options: that dataset's checks and students only.
  REQUIRE(RunShell(make + pairs + " STUDENT_OPTS='--epochs 4' STUDENT_OPTS_va=--lr=0.01").exit_code == 0);
  ran = calls();
  CHECK(lines_with(ran, "--print-levels").size() == 2);
  CHECK(lines_with(ran, "extract_features ", "--print-levels").empty());
  CHECK(lines_with(ran, "distill_student ").size() == 2);
  CHECK(lines_with(ran, "_vb.h5 ").empty());
  // An explicit list overrides the derived levels (and reruns the caches it changes).
  REQUIRE(RunShell(make + pairs + " STUDENT_OPTS='--epochs 4' STUDENT_OPTS_va=--lr=0.01 TEACHER_CACHE_LEVELS=layer3")
              .exit_code == 0);
  ran = calls();
  CHECK(lines_with(ran, "--print-levels").empty());
  CHECK(lines_with(ran, "--levels layer3").size() == 2);
  CHECK(lines_with(ran, "distill_student ").size() == 2);  // kd from the new teacher caches
  CHECK(ReadText(run + "/.opts/teacher_cache_va.opts") == "extract_features --levels layer3\n");
}

TEST_CASE("Makefile.pipeline: every shipped pipeline settles, before and after its run folder is moved",
          "[pipeline][hygiene-pipeline]") {
  TempDir tmp;
  WriteFakeStages(tmp, {"extract_features"});
  WriteFakeExtractFeatures(tmp);
  NewCalls calls(tmp / "calls.log");
  // The shipped pipelines with three seeds, and one with cached signals and variants of each stage.
  WriteText(tmp / "cached.mk",
            "DATASETS = va vb\nMETHODS = kd fitnet mlfd\nSTUDENT_SIGNALS = cached\nJOINT_MAPS = cached\n"
            "VARIANTS = t2 heads ft\nVARIANT_OPTS_t2 = --temperature 2\nVARIANT_STAGE_heads = joint\n"
            "VARIANT_OPTS_heads = --residual-logits\nVARIANT_STAGE_ft = finetune\nVARIANT_OPTS_ft = --epochs 1\n");
  std::vector<std::string> pipelines;
  for (const auto& e : fs::directory_iterator(std::string(MLFD_SOURCE_DIR) + "/pipelines"))
    if (e.path().extension() == ".mk") pipelines.push_back(e.path().stem().string());
  std::sort(pipelines.begin(), pipelines.end());
  REQUIRE(pipelines.size() >= 5);
  pipelines.push_back("cached");
  for (const auto& p : pipelines) {
    INFO("pipeline " << p);
    const std::string file = p == "cached" ? tmp / "cached.mk" : Msg(MLFD_SOURCE_DIR, "/pipelines/", p, ".mk");
    auto make = [&](const std::string& run, const std::string& flags) {
      return RunShell(Msg("make -C ", MLFD_SOURCE_DIR, " -f Makefile.pipeline PIPELINE=", p, " PIPELINE_FILE=", file,
                          " MANIFESTS=", p == "cached" ? tmp.path() : Msg(MLFD_SOURCE_DIR, "/data_manifests"),
                          " BIN=", tmp / "bin", " RUN=", run, " SEEDS='1 2 3' VERBOSE=0 ",
                          flags));
    };
    const std::string run = tmp / Msg("runs/", p), moved = tmp / Msg("elsewhere/deeper/", p, "-moved");
    auto first = make(run, "");
    INFO(first.out << first.err);
    REQUIRE(first.exit_code == 0);
    REQUIRE_FALSE(calls().empty());
    for (const std::string& where : {run, moved}) {
      INFO("run folder " << where);
      if (where == moved) {
        fs::create_directories(fs::path(moved).parent_path());
        fs::rename(run, moved);
      }
      auto again = make(where, "");
      INFO(again.out << again.err);
      CHECK(again.exit_code == 0);
      CHECK(calls() == "");  // no stage ran
      CHECK(again.out.find("Nothing to be done") != std::string::npos);
      auto plan = make(where, "-n");
      CHECK(plan.exit_code == 0);
      INFO(plan.out);
      CHECK(plan.out.find("Nothing to be done for 'all'") != std::string::npos);
      CHECK(plan.out.find(tmp / "bin") == std::string::npos);  // no stage planned
      CHECK(make(where, "-q").exit_code == 0);
      CHECK(calls() == "");
    }
  }
}
