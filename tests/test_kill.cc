// kill -9 and resume: each stage of a tiny Makefile.pipeline run is killed (SIGKILL) in the middle
// of its work; make then fails, plans exactly the interrupted stage and what depends on it (the
// partial output is not taken as done), reruns exactly that and finishes, leaving no temporary
// files behind. And train_teacher --resume after a SIGKILL mid-epoch ends with the weights of an
// uninterrupted run, bit for bit.
#include <catch2/catch.hpp>
#include <dirent.h>
#include <signal.h>
#include <spawn.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <torch/torch.h>
#include <unistd.h>

#include <chrono>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <functional>
#include <iostream>
#include <regex>
#include <sstream>
#include <thread>

#include "io/h5.h"
#include "io/tensor_io.h"
#include "test_util.h"
#include "util/error.h"

extern char** environ;

using namespace mlfd;
using mlfd_test::MakeStore;
using mlfd_test::RunShell;
using mlfd_test::TempDir;
namespace fs = std::filesystem;

namespace {

using Clock = std::chrono::steady_clock;
double SecondsSince(Clock::time_point t0) { return std::chrono::duration<double>(Clock::now() - t0).count(); }
void Nap() { std::this_thread::sleep_for(std::chrono::milliseconds(10)); }

std::string BinDir() { return MLFD_BIN_DIR; }

std::string Tail(const std::string& s, size_t n = 3000) { return s.size() > n ? s.substr(s.size() - n) : s; }

// A shell command run in the background in its own process group. Whatever is still running of it
// when this goes out of scope (a failed REQUIRE included) is killed with the group, so a test never
// leaves processes behind.
class Background {
 public:
  explicit Background(const std::string& command) {
    posix_spawnattr_t attr;
    posix_spawnattr_init(&attr);
    posix_spawnattr_setflags(&attr, POSIX_SPAWN_SETPGROUP);
    posix_spawnattr_setpgroup(&attr, 0);
    std::string sh = "/bin/sh", c = "-c", cmd = command;
    char* argv[] = {sh.data(), c.data(), cmd.data(), nullptr};
    int rc = posix_spawn(&pid_, "/bin/sh", nullptr, &attr, argv, environ);
    posix_spawnattr_destroy(&attr);
    if (rc != 0) throw std::runtime_error("posix_spawn failed: " + std::string(std::strerror(rc)));
  }
  ~Background() {
    if (!done_) {
      kill(-pid_, SIGKILL);
      int st = 0;
      waitpid(pid_, &st, 0);
    }
  }
  Background(const Background&) = delete;
  Background& operator=(const Background&) = delete;

  // True once it has exited (then status() is its exit code, or 128 + the signal).
  bool Finished() {
    if (done_) return true;
    int st = 0;
    if (waitpid(pid_, &st, WNOHANG) == pid_) {
      done_ = true;
      status_ = WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
    }
    return done_;
  }
  bool Wait(double seconds) {
    auto t0 = Clock::now();
    while (!Finished()) {
      if (SecondsSince(t0) > seconds) return false;
      Nap();
    }
    return true;
  }
  int status() const { return status_; }

 private:
  pid_t pid_ = -1;
  bool done_ = false;
  int status_ = -1;
};

std::vector<std::string> Cmdline(pid_t pid) {
  std::string text = mlfd_test::ReadText(Msg("/proc/", pid, "/cmdline"));
  std::vector<std::string> args;
  size_t start = 0;
  while (start < text.size()) {
    size_t end = text.find('\0', start);
    if (end == std::string::npos) end = text.size();
    args.push_back(text.substr(start, end - start));
    start = end + 1;
  }
  return args;
}

// The process state letter of /proc/<pid>/stat ('R', 'S', 'Z', ...), 0 when there is none.
char ProcState(pid_t pid) {
  std::string stat = mlfd_test::ReadText(Msg("/proc/", pid, "/stat"));
  auto paren = stat.rfind(')');
  return paren == std::string::npos || paren + 2 >= stat.size() ? 0 : stat[paren + 2];
}
bool Alive(pid_t pid) {
  char s = ProcState(pid);
  return s != 0 && s != 'Z' && s != 'X';
}

// The running process of `binary` (its argv[0], so not the `sh -c` around it) that writes `--out
// out`; 0 when there is none.
pid_t FindStage(const std::string& binary, const std::string& out) {
  pid_t found = 0;
  DIR* d = opendir("/proc");
  if (!d) return 0;
  while (dirent* e = readdir(d)) {
    std::string name = e->d_name;
    if (name.empty() || name.find_first_not_of("0123456789") != std::string::npos) continue;
    pid_t pid = static_cast<pid_t>(std::stol(name));
    auto args = Cmdline(pid);
    if (args.empty() || args[0] != binary) continue;
    for (size_t i = 0; i + 1 < args.size(); ++i)
      if (args[i] == "--out" && args[i + 1] == out) found = pid;
    if (found) break;
  }
  closedir(d);
  return found;
}

// Whether `pid` has `path` open (a file descriptor in /proc/<pid>/fd pointing at it).
bool HasOpen(pid_t pid, const std::string& path) {
  std::error_code ec;
  std::string want = fs::weakly_canonical(path, ec).string();
  for (const auto& e : fs::directory_iterator(Msg("/proc/", pid, "/fd"), ec)) {
    std::error_code ec2;
    if (fs::read_symlink(e.path(), ec2).string() == want) return true;
  }
  return false;
}

// Files written under a temporary name and not renamed yet: ".<name>.tmp-<pid>[-<n>][.png]".
bool IsTemporary(const std::string& filename) {
  static const std::regex re(R"(^\..+\.tmp-[0-9]+(-[0-9]+)?(\.png)?$)");
  return std::regex_match(filename, re);
}
// Every temporary under `dir` (paths relative to it), optionally only those of process `pid`.
std::vector<std::string> Temporaries(const std::string& dir, pid_t pid = 0) {
  std::vector<std::string> out;
  std::error_code ec;
  for (const auto& e : fs::recursive_directory_iterator(dir, ec)) {
    std::string name = e.path().filename().string();
    if (!IsTemporary(name)) continue;
    if (pid && !std::regex_search(name, std::regex(Msg(R"(\.tmp-)", pid, R"((-[0-9]+)?(\.png)?$)")))) continue;
    out.push_back(fs::relative(e.path(), dir).string());
  }
  std::sort(out.begin(), out.end());
  return out;
}

// Which file is at `path` now ("" when none): inode and modification time, so a file renamed into
// place is told from the one it replaced even on a file system with coarse timestamps.
std::string FileVersion(const std::string& path) {
  struct stat st;
  if (stat(path.c_str(), &st) != 0) return "";
  return Msg(st.st_ino, ":", st.st_mtim.tv_sec, ".", st.st_mtim.tv_nsec);
}

std::string Join(const std::vector<std::string>& v) {
  std::string s;
  for (const auto& x : v) s += "  " + x + "\n";
  return s;
}

// The stage commands in make's output (its echo while running, or its plan with -n), each as
// "<binary> <output relative to run>", sorted. Continuation lines are joined first.
std::vector<std::string> StageKeys(const std::string& make_output, const std::string& bin, const std::string& run) {
  std::vector<std::string> lines;
  std::istringstream in(make_output);
  std::string raw, cur;
  while (std::getline(in, raw)) {
    cur += (cur.empty() ? "" : " ") + raw;
    if (!cur.empty() && cur.back() == '\\') {
      cur.pop_back();
      continue;
    }
    lines.push_back(cur);
    cur.clear();
  }
  if (!cur.empty()) lines.push_back(cur);
  std::vector<std::string> keys;
  for (const auto& line : lines) {
    std::istringstream ts(line);
    std::vector<std::string> tok;
    for (std::string t; ts >> t;) tok.push_back(t);
    if (tok.empty() || tok[0].rfind(bin + "/", 0) != 0) continue;
    std::string target;
    for (size_t i = 0; i + 1 < tok.size() && target.empty(); ++i)
      if (tok[i] == "--out" || tok[i] == "--md") target = tok[i + 1];
    for (size_t i = 1; i < tok.size() && target.empty(); ++i)
      if (tok[i] == ">") target = tok[i - 1];  // prepare_data: <manifest> <store> > <json>
    if (target.rfind(run + "/", 0) == 0) target = target.substr(run.size() + 1);
    keys.push_back(tok[0].substr(bin.size() + 1) + " " + target);
  }
  std::sort(keys.begin(), keys.end());
  return keys;
}

// "<dir>/<name>.h5" -> "<dir>/<name>.last.h5": the per-epoch checkpoint of the training stages.
std::string LastOf(const std::string& out) { return out.substr(0, out.size() - 3) + ".last.h5"; }

// A tiny two-dataset pipeline in a temporary folder, driven through Makefile.pipeline.
struct TinyPipeline {
  TempDir tmp;
  std::string run, bin, make;
  TinyPipeline() {
    // Stores big enough that every training epoch and the caches take a moment (3-4 steps of 16).
    MakeStore(tmp, "pa", 3, 40, 16, 1, 31);
    MakeStore(tmp, "pb", 2, 40, 16, 1, 32);
    const std::string tiny = "--small-stem --width 0.125 --embed-dim 16 --batch-size 16 --workers 1 --lr 0.05 --epochs 3";
    mlfd_test::WriteText(tmp / "tiny.mk",
                         Msg("DATASETS = pa pb\n", "TEACHER_OPTS = ", tiny, " --arch resnet18\n",
                             "BASE_MODELS = teacher joint\nMETHODS = mlfd\n", "JOINT_BUILD_OPTS = --adaptor-dim 8\n",
                             "JOINT_OPTS = --batch-size 16 --workers 1 --optimizer adam --lr 0.003 --epochs 3\n",
                             "STUDENT_OPTS = --batch-size 16 --workers 1 --lr 0.05 --epochs 3\n",
                             "JOINT_MAPS = cached\nSTUDENT_SIGNALS = cached\n",
                             "JOINT_CACHE_LEVELS = fused,pool\nTEACHER_CACHE_LEVELS = layer2\n"));
    run = tmp / "run";
    bin = BinDir();
    make = Msg("make -C ", MLFD_SOURCE_DIR, " -f Makefile.pipeline PIPELINE=tiny PIPELINE_FILE=", tmp / "tiny.mk",
               " MANIFESTS=", tmp.path(), " RUN=", run, " BIN=", bin, " VERBOSE=0 THREADS=1 SEEDS=1");
  }
  std::vector<std::string> Plan() const {
    auto r = RunShell(make + " -n");
    INFO(Tail(r.err));
    REQUIRE(r.exit_code == 0);
    return StageKeys(r.out, bin, run);
  }
};

// When to kill the stage process `pid`: a description of the moment once it has come, else "".
using Ready = std::function<std::string(pid_t pid)>;

// Ready once the training stage writing `out` has finished an epoch: <out>.last.h5 is new.
Ready AfterFirstEpoch(const std::string& out) {
  const std::string before = FileVersion(LastOf(out));
  return [out, before](pid_t) -> std::string {
    std::string now = FileVersion(LastOf(out));
    return !now.empty() && now != before ? "as soon as epoch 1 of 3 was saved (.last.h5 written)" : "";
  };
}
// Ready half an epoch after that: in the middle of epoch 2 (the time epoch 1's training took is in
// <out>.last.metrics.jsonl, the run's history, written before <out>.last.h5).
Ready MidSecondEpoch(const std::string& out) {
  auto first = AfterFirstEpoch(out);
  auto seen = std::make_shared<Clock::time_point>();
  auto half = std::make_shared<double>(-1);
  return [out, first, seen, half](pid_t pid) -> std::string {
    if (*half < 0) {
      if (first(pid).empty()) return "";
      *seen = Clock::now();
      std::ifstream in(out.substr(0, out.size() - 3) + ".last.metrics.jsonl");
      std::string line;
      std::getline(in, line);
      *half = 0.5 * nlohmann::json::parse(line).at("train_seconds").get<double>();
    }
    return SecondsSince(*seen) >= *half ? Msg("in the middle of epoch 2 of 3 (", *half, " s after epoch 1 was saved)")
                                        : "";
  };
}
// Ready while the stage is writing `out` under its temporary name (streamed: mid-write).
Ready WhileWriting(const std::string& out) {
  return [out](pid_t pid) -> std::string {
    fs::path p(out);
    std::string prefix = Msg(".", p.filename().string(), ".tmp-", pid, "-");
    std::error_code ec;
    for (const auto& e : fs::directory_iterator(p.parent_path(), ec))
      if (e.path().filename().string().rfind(prefix, 0) == 0) return "mid-write (its temporary " + prefix + "* exists)";
    return "";
  };
}
// Ready once the stage has `input` open (reading its input, before its output is written).
Ready WhileReading(const std::string& input) {
  return [input](pid_t pid) -> std::string {
    return HasOpen(pid, input) ? "while reading " + fs::path(input).filename().string() : "";
  };
}

struct Outcome {
  std::string stage, out, moment;
  int attempts = 0;
  std::vector<std::string> orphans;  // temporaries the killed process left
  std::vector<std::string> planned;  // what make planned (and then ran)
  double seconds = 0;
};

// Removes `remove` (relative to the run folder; "" = nothing), runs make in the background, kills
// `stage` writing `out` with SIGKILL when `ready` says so, and checks: make fails, the output is
// not there, make -n plans exactly what it planned before (the interrupted stage and what depends
// on it), the rerun runs exactly that and succeeds, and no temporary file is left. A stage that
// finished before it could be killed is tried again (up to 3 times).
Outcome KillAndRerun(const TinyPipeline& p, const std::string& stage, const std::string& out_rel,
                     const std::string& remove_rel, const std::function<Ready()>& make_ready,
                     std::vector<std::string> expected = {}) {
  auto t0 = Clock::now();
  Outcome o;
  o.stage = stage;
  o.out = out_rel;
  const std::string out = p.run + "/" + out_rel, log = p.tmp / "make.log";
  INFO("kill " << stage << " writing " << out_rel);
  std::vector<std::string> planned;
  bool killed = false;
  while (!killed) {
    ++o.attempts;
    REQUIRE(o.attempts <= 3);
    if (!remove_rel.empty()) fs::remove(p.run + "/" + remove_rel);
    planned = p.Plan();
    INFO("planned before the kill:\n" << Join(planned));
    REQUIRE(std::count(planned.begin(), planned.end(), stage + " " + out_rel) == 1);
    if (!expected.empty()) {  // exactly the stage and what depends on it
      std::sort(expected.begin(), expected.end());
      REQUIRE(planned == expected);
    }
    Ready ready = make_ready();
    Background make(p.make + " >" + log + " 2>&1");
    pid_t pid = 0;
    auto started = Clock::now();
    while (!make.Finished()) {
      REQUIRE(SecondsSince(started) < 300);
      if (!pid) pid = FindStage(p.bin + "/" + stage, out);
      if (pid && Alive(pid) && !mlfd_test::FileExists(out)) {  // working, its output not in place yet
        std::string moment = ready(pid);
        if (!moment.empty() && Alive(pid) && kill(pid, SIGKILL) == 0) {
          o.moment = moment;
          killed = true;
          break;
        }
      }
      Nap();
    }
    REQUIRE(make.Wait(300));
    std::string text = mlfd_test::ReadText(log);
    INFO("make: " << Tail(text));
    if (!killed) {  // the stage was too quick this time: everything finished; try again
      REQUIRE(make.status() == 0);
      continue;
    }
    CHECK(make.status() != 0);
    CHECK((text.find("Killed") != std::string::npos || text.find("Error 137") != std::string::npos));
    // Nothing make would take as done: the output is missing, and the plan is unchanged.
    CHECK_FALSE(mlfd_test::FileExists(out));
    o.orphans = Temporaries(p.run, pid);
    auto after = p.Plan();
    INFO("planned after the kill:\n" << Join(after));
    CHECK(after == planned);
  }
  // The rerun runs exactly the interrupted stage and what depends on it, and finishes.
  auto rerun = RunShell("timeout 600 " + p.make);
  INFO("rerun: " << Tail(rerun.out) << Tail(rerun.err));
  REQUIRE(rerun.exit_code == 0);
  auto ran = StageKeys(rerun.out, p.bin, p.run);
  INFO("ran:\n" << Join(ran));
  CHECK(ran == planned);
  CHECK(p.Plan().empty());
  // The output is complete, and no temporary (the killed process's included) is left anywhere.
  REQUIRE(mlfd_test::FileExists(out));
  if (out.size() > 3 && out.compare(out.size() - 3, 3, ".h5") == 0) {
    h5::File f = h5::File::Open(out);
    CHECK(f.HasAttr("/", "format"));
  } else {
    CHECK_NOTHROW(nlohmann::json::parse(mlfd_test::ReadText(out)));
  }
  auto left = Temporaries(p.run);
  INFO("temporaries left after the rerun (the killed process left: " << Join(o.orphans) << "):\n" << Join(left));
  CHECK(left.empty());
  o.seconds = SecondsSince(t0);
  o.planned = planned;
  std::string orphans;
  for (const auto& t : o.orphans) orphans += (orphans.empty() ? "" : " ") + fs::path(t).filename().string();
  std::cout << "kill trial: " << stage << " (" << out_rel << "), killed " << o.moment << ", attempts " << o.attempts
            << ", temporaries left by the kill: " << o.orphans.size() << (orphans.empty() ? "" : " (" + orphans + ")")
            << ", make -n unchanged, rerun "
            << planned.size() << " stage(s) and finished, temporaries after the rerun " << left.size() << ", "
            << o.seconds << " s" << std::endl;
  return o;
}

}  // namespace

TEST_CASE("kill -9 at each stage of a tiny pipeline: make reruns exactly the interrupted stage and finishes",
          "[stage][kill][e2e]") {
  TinyPipeline p;
  auto data = RunShell(p.make + " data");
  INFO(Tail(data.err));
  REQUIRE(data.exit_code == 0);
  const std::string S = "seed1";
  // Stage 1 on a fresh run: everything after the stores is planned; the first teacher is killed as
  // soon as its first epoch is saved (typically while it writes <out>.best.h5), and the plan stays.
  auto o = KillAndRerun(p, "train_teacher", S + "/teachers/pa.h5", "",
                        [&] { return AfterFirstEpoch(p.run + "/" + S + "/teachers/pa.h5"); });
  // (the stores were done before: nothing upstream of the teachers is in that plan)
  CHECK(std::none_of(o.planned.begin(), o.planned.end(), [](const std::string& k) { return k.rfind("prepare_data", 0) == 0; }));
  for (const std::string& k : std::vector<std::string>{"train_teacher " + S + "/teachers/pb.h5",
                                                        "build_joint " + S + "/joint/init.h5",
                                                        "finetune_joint " + S + "/joint/final.h5", "report report.md"})
    CHECK(std::count(o.planned.begin(), o.planned.end(), k) == 1);
  // Stage 2: T* fine-tuning (cached teacher maps), as soon as its first epoch is saved.
  KillAndRerun(p, "finetune_joint", S + "/joint/final.h5", S + "/joint/final.h5",
               [&] { return AfterFirstEpoch(p.run + "/" + S + "/joint/final.h5"); },
               {"finetune_joint " + S + "/joint/final.h5", "extract_features " + S + "/features/joint_pa.h5",
                "extract_features " + S + "/features/joint_pb.h5", "distill_student " + S + "/students/mlfd_pa.h5",
                "distill_student " + S + "/students/mlfd_pb.h5", "evaluate " + S + "/eval/joint_pa.json",
                "evaluate " + S + "/eval/joint_pb.json", "evaluate " + S + "/eval/mlfd_pa.json",
                "evaluate " + S + "/eval/mlfd_pb.json", "report report.md"});
  // The feature cache of T* for the cached student, while it streams into its temporary.
  KillAndRerun(p, "extract_features", S + "/features/joint_pa.h5", S + "/features/joint_pa.h5",
               [&] { return WhileWriting(p.run + "/" + S + "/features/joint_pa.h5"); },
               {"extract_features " + S + "/features/joint_pa.h5", "distill_student " + S + "/students/mlfd_pa.h5",
                "evaluate " + S + "/eval/mlfd_pa.json", "report report.md"});
  // Stage 3: the MLFD student, in the middle of its second epoch (no file open for writing).
  KillAndRerun(p, "distill_student", S + "/students/mlfd_pa.h5", S + "/students/mlfd_pa.h5",
               [&] { return MidSecondEpoch(p.run + "/" + S + "/students/mlfd_pa.h5"); },
               {"distill_student " + S + "/students/mlfd_pa.h5", "evaluate " + S + "/eval/mlfd_pa.json",
                "report report.md"});
  // evaluate, while it reads the store (before any of its outputs exists).
  KillAndRerun(p, "evaluate", S + "/eval/mlfd_pa.json", S + "/eval/mlfd_pa.json",
               [&] { return WhileReading(p.run + "/data/pa.h5"); },
               {"evaluate " + S + "/eval/mlfd_pa.json", "report report.md"});
}

TEST_CASE("train_teacher --resume after kill -9 mid-epoch ends with the weights of an uninterrupted run",
          "[stage][kill][e2e]") {
  TempDir tmp;
  std::string store = MakeStore(tmp, "toy", 3, 40, 16, 1, 5);
  const std::string common = Msg("-v 0 --threads 1 --workers 1 --device cpu --arch resnet18 --width 0.125 --small-stem "
                                 "--embed-dim 16 --batch-size 16 --seed 3 --lr 0.05 --epochs 3 ", store);
  auto full = mlfd_test::RunTool("train_teacher", Msg(common, " --out ", tmp / "full.h5"));
  INFO(full.err);
  REQUIRE(full.exit_code == 0);
  // How long an epoch's training takes here, to kill the next run half-way through epoch 2.
  double epoch_seconds = 0;
  {
    std::ifstream in(tmp / "full.metrics.jsonl");
    for (std::string line; std::getline(in, line);)
      if (!line.empty()) epoch_seconds = std::max(epoch_seconds, nlohmann::json::parse(line)["train_seconds"].get<double>());
  }
  const std::string out = tmp / "res.h5", last = tmp / "res.last.h5";
  int64_t killed_after = 0;  // epochs in res.last.h5 when killed
  for (int attempt = 1; attempt <= 3 && killed_after == 0; ++attempt) {
    for (const char* f : {"res.h5", "res.last.h5", "res.best.h5", "res.metrics.jsonl"}) fs::remove(tmp / f);
    Background run(Msg(BinDir(), "/train_teacher ", common, " --out ", out, " >", tmp / "res.log", " 2>&1"));
    auto t0 = Clock::now();
    bool killed = false;
    Clock::time_point epoch1;
    bool seen = false;
    while (!run.Finished()) {
      REQUIRE(SecondsSince(t0) < 300);
      if (!seen && mlfd_test::FileExists(last)) {
        seen = true;
        epoch1 = Clock::now();
      }
      // Half an epoch after epoch 1's checkpoint appeared: in the middle of epoch 2.
      if (seen && SecondsSince(epoch1) >= 0.5 * epoch_seconds) {
        pid_t pid = FindStage(BinDir() + "/train_teacher", out);
        if (pid && Alive(pid) && kill(pid, SIGKILL) == 0) killed = true;
        break;
      }
      Nap();
    }
    REQUIRE(run.Wait(300));
    if (!killed || mlfd_test::FileExists(out)) continue;  // it finished first: try again
    CHECK(run.status() != 0);
    h5::File f = h5::File::Open(last);
    int64_t e = f.GetIntAttr("/", "epoch");
    if (e >= 1 && e <= 2) killed_after = e;  // killed during epoch 2 or 3
  }
  REQUIRE(killed_after >= 1);
  std::cout << "resume trial: train_teacher killed during epoch " << killed_after + 1
            << " of 3 (epoch " << killed_after << " in .last.h5); temporaries left by the kill: "
            << Temporaries(tmp.path()).size() << std::endl;
  CHECK_FALSE(mlfd_test::FileExists(out));
  auto rest = mlfd_test::RunTool("train_teacher", Msg(common, " --resume --out ", out));
  INFO(rest.err);
  REQUIRE(rest.exit_code == 0);
  // Every tensor of the final checkpoint (the best epoch) and of the last epoch's equals the
  // uninterrupted run's exactly.
  for (const auto& [a_path, b_path] : {std::pair<std::string, std::string>{tmp / "full.h5", out},
                                       {tmp / "full.last.h5", last}}) {
    INFO(a_path << " vs " << b_path);
    h5::File a = h5::File::Open(a_path), b = h5::File::Open(b_path);
    CHECK(a.GetIntAttr("/", "epoch") == b.GetIntAttr("/", "epoch"));
    auto names = a.List("state");
    CHECK(names == b.List("state"));
    int compared = 0;
    double max_diff = 0;
    for (const auto& name : names) {
      INFO(name);
      torch::Tensor ta = ReadTensor(a, "state/" + name), tb = ReadTensor(b, "state/" + name);
      REQUIRE(ta.sizes() == tb.sizes());
      CHECK(torch::equal(ta, tb));
      if (ta.is_floating_point()) max_diff = std::max(max_diff, (ta - tb).abs().max().item<double>());
      ++compared;
    }
    CHECK(compared > 50);
    CHECK(max_diff == 0.0);
  }
  // The per-epoch history agrees too (everything but the timings).
  auto records = [](const std::string& path) {
    std::vector<nlohmann::json> v;
    std::ifstream in(path);
    for (std::string line; std::getline(in, line);)
      if (!line.empty()) {
        auto j = nlohmann::json::parse(line);
        j.erase("train_seconds");
        j.erase("images_per_second");
        v.push_back(j);
      }
    return v;
  };
  auto ha = records(tmp / "full.metrics.jsonl"), hb = records(tmp / "res.metrics.jsonl");
  CHECK(ha.size() == 3);
  CHECK(ha == hb);
  auto left = Temporaries(tmp.path());
  INFO("temporaries left:\n" << Join(left));
  CHECK(left.empty());
}
