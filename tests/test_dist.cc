// Data-parallel training (lib/dist): the launcher's variables, SLURM node lists, DistributedSampler's
// order (against PyTorch's), sharded loaders that see exactly one process's batches; and real
// multi-process runs on loopback: 2 processes x batch B reach the weights of 1 process x batch 2B
// (train_teacher with SyncBatchNorm, a distill_student method with adapters, through torchrun),
// metrics equal to the single process's, one writer, and a killed rank failing the other.
#include <catch2/catch.hpp>
#include <torch/torch.h>

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <chrono>
#include <map>
#include <set>
#include <thread>
#include <tuple>

#include "data/image_store.h"
#include "data/loader.h"
#include "dist/dist.h"
#include "test_util.h"
#include "util/error.h"

using namespace mlfd;
using mlfd_test::MakeStore;
using mlfd_test::RunShell;
using mlfd_test::RunTool;
using mlfd_test::TempDir;

namespace {

dist::LaunchEnv Read(const std::map<std::string, std::string>& vars) {
  return dist::ReadLaunchEnv([&](const char* name) -> const char* {
    auto it = vars.find(name);
    return it == vars.end() ? nullptr : it->second.c_str();
  });
}

// A TCP port nobody listens on now (the kernel's pick).
int FreePort() {
  int fd = socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  a.sin_port = 0;
  REQUIRE(bind(fd, reinterpret_cast<sockaddr*>(&a), sizeof(a)) == 0);
  socklen_t len = sizeof(a);
  getsockname(fd, reinterpret_cast<sockaddr*>(&a), &len);
  close(fd);
  return ntohs(a.sin_port);
}

// Runs `cmd` as `world` processes with torchrun's variables set by hand, in the background, and
// waits for all; returns a shell line that does so (each rank's stderr in <dir>/rank<r>.err).
std::string Ranks(int world, const std::string& dir, const std::string& cmd) {
  const int port = FreePort();
  std::string s = "pids=''; ";
  for (int r = 0; r < world; ++r)
    s += Msg("RANK=", r, " LOCAL_RANK=", r, " WORLD_SIZE=", world, " MASTER_ADDR=127.0.0.1 MASTER_PORT=", port, " ", cmd,
             " > ", dir, "/rank", r, ".out 2> ", dir, "/rank", r, ".err & pids=\"$pids $!\"; ");
  s += "rc=0; for p in $pids; do wait $p || rc=1; done; exit $rc";
  return s;
}

// Max abs difference over the checkpoints' weights and buffers ("state/..."), by h5py.
double MaxStateDifference(const TempDir& tmp, const std::string& a, const std::string& b) {
  auto r = mlfd_test::RunPython(tmp.path(), R"(
import sys, h5py, numpy as np
a, b = h5py.File(sys.argv[1], 'r'), h5py.File(sys.argv[2], 'r')
names = []
a['state'].visititems(lambda n, o: names.append(n) if isinstance(o, h5py.Dataset) else None)
assert names and sorted(names) == sorted(n for n in names if n in b['state'])
print(max(float(np.abs(np.asarray(a['state'][n][()], float) - np.asarray(b['state'][n][()], float)).max())
          for n in names if a['state'][n].size))
)",
                                Msg(a, " ", b));
  INFO(r.err);
  REQUIRE(r.exit_code == 0);
  return std::stod(r.out);
}

// Starts `cmd` as ranks 0 and 1 of 2 on loopback, waits until rank 0 logged `marker` (rank 0's
// stderr goes to `err0`), sends rank 1 `signal`, waits for rank 0 and kills rank 1. Returns rank 0's
// exit status and the seconds it all took.
std::pair<int, double> InterruptRank1(const std::string& cmd, const std::string& err0, const std::string& marker,
                                      const std::string& signal) {
  const std::string env = Msg("WORLD_SIZE=2 MASTER_ADDR=127.0.0.1 MASTER_PORT=", FreePort());
  auto start = std::chrono::steady_clock::now();
  auto r = RunShell(Msg("RANK=0 ", env, " ", cmd, " 2> ", err0, " & p0=$!; RANK=1 ", env, " ", cmd, " 2> /dev/null & p1=$!; ",
                        "for i in $(seq 600); do grep -q '", marker, "' ", err0, " && break; sleep 0.1; done; ",
                        "kill -", signal, " $p1; wait $p0; rc=$?; kill -9 $p1 2> /dev/null; exit $rc"));
  return {r.exit_code, std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count()};
}

// The stage's final error line ("train_teacher: error: ..."), empty if none. Where the other rank
// stopped answering decides what it names first: a training step's collective ("data parallel:
// all-reduce failed ...") or validation's ("validation at epoch 2 failed: data parallel: ...").
std::string ErrorLine(const std::string& err) {
  const size_t at = err.find("train_teacher: error: ");
  return at == std::string::npos ? std::string() : err.substr(at, err.find('\n', at) - at);
}

const char* kNet = "--threads 1 --workers 1 --device cpu --arch resnet18 --small-stem --width 0.125 --embed-dim 16 "
                   "--optimizer sgd --lr 0.05 --momentum 0.9 --seed 5 --pad 2";

}  // namespace

TEST_CASE("dist: the launcher's variables: torchrun's, srun's, and none", "[unit][dist]") {
  dist::LaunchEnv none = Read({});
  CHECK_FALSE(none.present);
  CHECK(none.world == 1);

  dist::LaunchEnv t = Read({{"RANK", "1"}, {"WORLD_SIZE", "4"}, {"LOCAL_RANK", "1"}, {"MASTER_ADDR", "10.0.0.2"},
                            {"MASTER_PORT", "29400"}, {"TORCHELASTIC_USE_AGENT_STORE", "True"},
                            {"TORCHELASTIC_RESTART_COUNT", "2"}, {"SLURM_PROCID", "3"}, {"SLURM_STEP_NUM_TASKS", "8"}});
  CHECK(t.present);
  CHECK(t.launcher == "torchrun");  // torchrun's variables win over SLURM's
  CHECK(t.rank == 1);
  CHECK(t.world == 4);
  CHECK(t.local_rank == 1);
  CHECK(t.master_addr == "10.0.0.2");
  CHECK(t.master_port == 29400);
  CHECK(t.agent_store);
  CHECK(t.restart_count == 2);

  dist::LaunchEnv s = Read({{"SLURM_PROCID", "3"}, {"SLURM_STEP_NUM_TASKS", "4"}, {"SLURM_LOCALID", "1"},
                            {"SLURM_JOB_NODELIST", "gpu[07-08],cpu1"}, {"SLURM_JOB_ID", "1234"}, {"SLURM_STEP_ID", "5"}});
  CHECK(s.present);
  CHECK(s.launcher == "slurm");
  CHECK(s.rank == 3);
  CHECK(s.world == 4);
  CHECK(s.local_rank == 1);
  CHECK(s.master_addr == "gpu07");
  CHECK(s.master_port == 20000 + (1234 * 97 + 5) % 20000);
  CHECK(Read({{"SLURM_PROCID", "0"}, {"SLURM_STEP_NUM_TASKS", "2"}, {"SLURM_JOB_NODELIST", "n1"},
              {"MASTER_PORT", "31000"}}).master_port == 31000);

  // A batch script sees SLURM_NTASKS and SLURM_PROCID but is not a data-parallel launch; one task
  // runs as one process.
  CHECK_FALSE(Read({{"SLURM_PROCID", "0"}, {"SLURM_NTASKS", "4"}, {"SLURM_JOB_NODELIST", "n1"}}).present);
  CHECK_FALSE(Read({{"SLURM_PROCID", "0"}, {"SLURM_STEP_NUM_TASKS", "1"}, {"SLURM_JOB_NODELIST", "n1"}}).present);

  auto fails = [](const std::map<std::string, std::string>& v, const std::string& want) {
    try {
      Read(v);
    } catch (const UsageError& e) {
      INFO(e.what());
      CHECK(std::string(e.what()).find(want) != std::string::npos);
      return;
    }
    FAIL("accepted");
  };
  fails({{"RANK", "0"}, {"WORLD_SIZE", "2"}, {"MASTER_ADDR", "h"}}, "MASTER_PORT is not");
  fails({{"RANK", "2"}, {"WORLD_SIZE", "2"}, {"MASTER_ADDR", "h"}, {"MASTER_PORT", "1"}}, "RANK='2' is not an integer in [0, 1]");
  fails({{"RANK", "0"}, {"WORLD_SIZE", "two"}, {"MASTER_ADDR", "h"}, {"MASTER_PORT", "1"}}, "WORLD_SIZE='two'");
  fails({{"SLURM_PROCID", "0"}, {"SLURM_STEP_NUM_TASKS", "2"}}, "SLURM_JOB_NODELIST");
}

TEST_CASE("dist: the first host of a SLURM node list", "[unit][dist]") {
  CHECK(dist::FirstSlurmHost("node[01-04,07],gpu3") == "node01");
  CHECK(dist::FirstSlurmHost("a,b") == "a");
  CHECK(dist::FirstSlurmHost("gpu[3]") == "gpu3");
  CHECK(dist::FirstSlurmHost("rack1-n[5,9]-ib") == "rack1-n5-ib");
  CHECK(dist::FirstSlurmHost("solo") == "solo");
}

TEST_CASE("dist: the shard order covers every sample once per epoch, padded, and changes with the epoch", "[unit][dist]") {
  for (int64_t n : {1, 7, 10, 13}) {
    for (int world : {1, 2, 3, 4}) {
      std::multiset<int64_t> seen;
      size_t len = 0;
      for (int r = 0; r < world; ++r) {
        auto mine = dist::ShardOrder(n, 42, r, world);
        if (r == 0) len = mine.size();
        CHECK(mine.size() == len);  // equal length on every rank
        seen.insert(mine.begin(), mine.end());
      }
      CHECK(static_cast<int64_t>(len) == (n + world - 1) / world);
      for (int64_t i = 0; i < n; ++i) CHECK(seen.count(i) >= 1);
      CHECK(static_cast<int64_t>(seen.size()) - n == static_cast<int64_t>(len) * world - n);  // the padding only
    }
  }
  CHECK(dist::ShardOrder(50, 42, 0, 2) != dist::ShardOrder(50, 43, 0, 2));
  CHECK(dist::ShardOrder(50, 42, 0, 2) == dist::ShardOrder(50, 42, 0, 2));
  std::vector<int64_t> plain = dist::ShardOrder(5, 0, 1, 2, /*shuffle=*/false);
  CHECK(plain == std::vector<int64_t>{1, 3, 0});  // 0 1 2 3 4 + padding 0; every 2nd from 1
}

TEST_CASE("dist: the shard order is PyTorch DistributedSampler's for the same seed and epoch", "[stage][dist]") {
  TempDir tmp;
  auto r = mlfd_test::RunPython(tmp.path(), R"(
import torch
from torch.utils.data.distributed import DistributedSampler
for n, world, seed, epoch in [(10, 2, 0, 0), (13, 3, 7, 4), (100, 4, 123, 9), (5, 8, 1, 1)]:
    for rank in range(world):
        s = DistributedSampler(range(n), num_replicas=world, rank=rank, shuffle=True, seed=seed)
        s.set_epoch(epoch)
        print(n, world, seed + epoch, rank, ' '.join(map(str, list(s))))
)",
                                "");
  INFO(r.err);
  REQUIRE(r.exit_code == 0);
  std::istringstream lines(r.out);
  std::string line;
  int checked = 0;
  while (std::getline(lines, line)) {
    std::istringstream in(line);
    int64_t n, world, seed, rank;
    in >> n >> world >> seed >> rank;
    std::vector<int64_t> want;
    for (int64_t x; in >> x;) want.push_back(x);
    INFO(line);
    CHECK(dist::ShardOrder(n, static_cast<uint64_t>(seed), static_cast<int>(rank), static_cast<int>(world)) == want);
    ++checked;
  }
  CHECK(checked == 2 + 3 + 4 + 8);
}

TEST_CASE("dist: sharded loaders give N processes x batch B the images and views of one process x N*B", "[unit][dist]") {
  TempDir tmp;
  auto store = std::make_shared<ImageStore>(ImageStore::Open(MakeStore(tmp, "shard", 3, 12, 12, 1, 4)));
  std::vector<int64_t> train = store->split("train");  // 21 rows: each rank draws 11 (one padded)
  auto loader = [&](int rank, int world, int64_t batch) {
    LoaderOptions o;
    o.seed = 9;
    o.workers = 1;
    o.augment.pad = 2;  // random crops: the views must match too
    o.shard_rank = rank;
    o.shard_world = world;
    return std::make_unique<Loader>(std::vector<LoaderSource>{{store, train, batch}}, o);
  };
  auto one = loader(0, 1, 8);
  auto r0 = loader(0, 2, 4), r1 = loader(1, 2, 4);
  CHECK(one->steps_per_epoch() == 3);
  CHECK(r0->steps_per_epoch() == 3);
  for (int64_t epoch : {0, 1}) {
    one->StartEpoch(epoch);
    r0->StartEpoch(epoch);
    r1->StartEpoch(epoch);
    Batch a, b0, b1;
    std::vector<int64_t> order_one;
    while (one->Next(&a)) {
      REQUIRE(r0->Next(&b0));
      REQUIRE(r1->Next(&b1));
      // One process's batch k holds positions 8k..8k+7 of the permutation; rank r's holds the
      // positions r, r+2, ... of the same: interleave the two and compare.
      const int64_t n = a.images.size(0);
      REQUIRE(b0.images.size(0) + b1.images.size(0) == n);
      for (int64_t i = 0; i < n; ++i) {
        const Batch& from = i % 2 == 0 ? b0 : b1;
        CHECK(a.indices[i].item<int64_t>() == from.indices[i / 2].item<int64_t>());
        CHECK(torch::equal(a.images[i], from.images[i / 2]));
      }
      for (int64_t i = 0; i < n; ++i) order_one.push_back(a.indices[i].item<int64_t>());
    }
    CHECK_FALSE(r0->Next(&b0));
    // The unsharded order of a one-process group is DistributedSampler's (world 1) permutation.
    std::vector<int64_t> perm = dist::ShardOrder(static_cast<int64_t>(train.size()), 9 + epoch, 0, 1);
    for (size_t i = 0; i < order_one.size(); ++i) CHECK(order_one[i] == train[static_cast<size_t>(perm[i])]);
  }
}

TEST_CASE("dist: 2 processes x batch 8 reach the weights of 1 process x batch 16, with SyncBatchNorm", "[stage][dist]") {
  TempDir tmp;
  const std::string store = MakeStore(tmp, "dp", 4, 24, 16, 1, 11);  // 56 training images
  const std::string common = Msg(mlfd_test::BuildBinDir(), "/train_teacher ", kNet, " --epochs 2 --val-every 1 --sync-bn -v 2 ",
                                 "--dist-log-all-ranks ");
  std::filesystem::create_directories(tmp / "one");
  std::filesystem::create_directories(tmp / "two");
  auto r1 = RunShell(Ranks(1, tmp / "one", common + "--batch-size 16 --out " + tmp / "one/t.h5 " + store));
  INFO(mlfd_test::ReadText(tmp / "one/rank0.err"));
  REQUIRE(r1.exit_code == 0);
  auto r2 = RunShell(Ranks(2, tmp / "two", common + "--batch-size 8 --out " + tmp / "two/t.h5 " + store));
  const std::string err0 = mlfd_test::ReadText(tmp / "two/rank0.err"), err1 = mlfd_test::ReadText(tmp / "two/rank1.err");
  INFO(err0 << "\n---\n" << err1);
  REQUIRE(r2.exit_code == 0);
  CHECK(MaxStateDifference(tmp, tmp / "one/t.last.h5", tmp / "two/t.last.h5") < 1e-5);
  CHECK(MaxStateDifference(tmp, tmp / "one/t.h5", tmp / "two/t.h5") < 1e-5);
  // Both ranks checked that they hold rank 0's weights after every epoch; each trained on its half.
  for (const std::string& e : {err0, err1}) {
    CHECK(e.find("the weights are equal on all 2 ranks after epoch 2") != std::string::npos);
    CHECK(e.find("steps of 8 images") != std::string::npos);
  }
  CHECK(err1.find("rank 1: ") != std::string::npos);
  // Validation is sharded and gathered: the metrics are the one process's.
  auto metrics = [&](const std::string& dir) {
    return nlohmann::json::parse(mlfd_test::ReadText(tmp / (dir + "/t.metrics.jsonl")).substr(0, mlfd_test::ReadText(tmp / (dir + "/t.metrics.jsonl")).find('\n')));
  };
  CHECK(metrics("one")["val_metric"].get<double>() == Approx(metrics("two")["val_metric"].get<double>()).margin(1e-9));
  CHECK(metrics("one")["train_loss"].get<double>() == Approx(metrics("two")["train_loss"].get<double>()).epsilon(1e-5));
  // One writer: rank 1 printed no summary.
  CHECK(mlfd_test::ReadText(tmp / "two/rank1.out").empty());
  CHECK(mlfd_test::ReadText(tmp / "two/rank0.out").find("\"checkpoint\"") != std::string::npos);

  // Without SyncBatchNorm each process normalises its own 8 images (as DDP): not the same run.
  std::filesystem::create_directories(tmp / "own");
  auto r3 = RunShell(Ranks(2, tmp / "own", Msg(mlfd_test::BuildBinDir(), "/train_teacher ", kNet, " -v 0 --epochs 2 --batch-size 8 --out ",
                                               tmp / "own/t.h5 ", store)));
  REQUIRE(r3.exit_code == 0);
  CHECK(MaxStateDifference(tmp, tmp / "one/t.last.h5", tmp / "own/t.last.h5") > 1e-3);
}

TEST_CASE("dist: torchrun runs distill_student (FitNet's regressors) data-parallel, equal to one process", "[stage][dist]") {
  TempDir tmp;
  const std::string store = MakeStore(tmp, "fit", 3, 24, 16, 1, 12);  // 42 training images
  auto t = RunTool("train_teacher", Msg(kNet, " -v 0 --epochs 1 --batch-size 14 --out ", tmp / "teacher.h5 ", store));
  REQUIRE(t.exit_code == 0);
  const std::string student = Msg(kNet, " -v 0 --epochs 2 --method fitnet --sync-bn --teacher ", tmp / "teacher.h5 ");
  auto one = RunShell(Msg("torchrun --nproc_per_node 1 -r 1 -t 1 --log_dir ", tmp / "log1", " --master_port ", FreePort(),
                          " --no_python ", mlfd_test::BuildBinDir(), "/distill_student ", student, "--batch-size 14 --out ",
                          tmp / "one.h5 ", store));
  INFO(one.err);
  REQUIRE(one.exit_code == 0);
  auto two = RunShell(Msg("torchrun --nproc_per_node 2 -r 1 -t 1 --log_dir ", tmp / "log2", " --master_port ", FreePort(),
                          " --no_python ", mlfd_test::BuildBinDir(), "/distill_student ", student, "--batch-size 7 --out ",
                          tmp / "two.h5 ", store));
  INFO(two.err);
  REQUIRE(two.exit_code == 0);
  // The regressors ("aux") live in the resume state; compare them too.
  CHECK(MaxStateDifference(tmp, tmp / "one.last.h5", tmp / "two.last.h5") < 1e-5);
  auto aux = mlfd_test::RunPython(tmp.path(), R"(
import sys, h5py, numpy as np
a, b = h5py.File(sys.argv[1], 'r'), h5py.File(sys.argv[2], 'r')
names = []
a['train_state/aux'].visititems(lambda n, o: names.append(n) if isinstance(o, h5py.Dataset) else None)
assert names
print(max(float(np.abs(a['train_state/aux'][n][()].astype(float) - b['train_state/aux'][n][()].astype(float)).max()) for n in names))
)",
                                  Msg(tmp / "one.last.h5", " ", tmp / "two.last.h5"));
  INFO(aux.err);
  REQUIRE(aux.exit_code == 0);
  CHECK(std::stod(aux.out) < 1e-5);
}

TEST_CASE("dist: a killed rank fails the other with one line, and the rerun finishes", "[stage][dist]") {
  TempDir tmp;
  const std::string store = MakeStore(tmp, "kill", 4, 30, 16, 1, 13);
  const std::string cmd = Msg(mlfd_test::BuildBinDir(), "/train_teacher ", kNet, " -v 1 --epochs 30 --batch-size 4 --dist-timeout 30 --out ",
                              tmp / "t.h5 ", store);
  // Rank 1 is killed (SIGKILL) once rank 0 has finished an epoch.
  const auto [rc, seconds] = InterruptRank1(cmd, tmp / "rank0.err", "epoch 1/30", "9");
  const std::string err = mlfd_test::ReadText(tmp / "rank0.err");
  INFO(err);
  CHECK(rc == 1);
  CHECK(ErrorLine(err).find("data parallel: ") != std::string::npos);
  CHECK(seconds < 90);
  CHECK_FALSE(mlfd_test::FileExists(tmp / "t.h5"));
  CHECK(mlfd_test::FileExists(tmp / "t.last.h5"));  // epoch 1's resume state
  // The rerun resumes from epoch 1 on both ranks and finishes.
  auto again = RunShell(Ranks(2, tmp.path(), cmd + " --resume"));
  INFO(mlfd_test::ReadText(tmp / "rank0.err"));
  CHECK(again.exit_code == 0);
  CHECK(mlfd_test::ReadText(tmp / "rank0.err").find("resuming from") != std::string::npos);
  CHECK(mlfd_test::FileExists(tmp / "t.h5"));
}

TEST_CASE("dist: a hung rank fails the other after --dist-timeout and an interrupted run resumes exactly on both ranks",
          "[stage][dist]") {
  TempDir tmp;
  const std::string store = MakeStore(tmp, "hang", 3, 20, 16, 1, 14);
  const std::string bin = mlfd_test::BuildBinDir() + "/train_teacher ";
  // Rank 1 is stopped (SIGSTOP: alive, its sockets open, silent) after rank 0's first epoch: rank 0
  // gives up after the 5 s timeout, with one line, instead of waiting forever.
  {
    const std::string cmd = Msg(bin, kNet, " -v 1 --epochs 200 --batch-size 4 --dist-timeout 5 --out ", tmp / "h.h5 ", store);
    const auto [rc, seconds] = InterruptRank1(cmd, tmp / "h0.err", "epoch 1/200", "STOP");
    const std::string err = mlfd_test::ReadText(tmp / "h0.err");
    INFO(err);
    CHECK(rc == 1);
    const std::string line = ErrorLine(err);
    CHECK(line.find("data parallel: ") != std::string::npos);
    CHECK(line.find("--dist-timeout 5 s") != std::string::npos);
    CHECK(seconds < 60);
  }
  // 2 processes stopped after epoch 1 (--stop-after) and resumed end with the weights of 2
  // processes that ran both epochs, bit for bit.
  const std::string common = Msg(bin, kNet, " -v 0 --epochs 2 --batch-size 4 --sync-bn ");
  std::filesystem::create_directories(tmp / "whole");
  std::filesystem::create_directories(tmp / "parts");
  REQUIRE(RunShell(Ranks(2, tmp / "whole", common + "--out " + tmp / "whole/t.h5 " + store)).exit_code == 0);
  REQUIRE(RunShell(Ranks(2, tmp / "parts", common + "--stop-after 1 --out " + tmp / "parts/t.h5 " + store)).exit_code == 0);
  CHECK_FALSE(mlfd_test::FileExists(tmp / "parts/t.h5"));
  auto resumed = RunShell(Ranks(2, tmp / "parts", common + "--resume --out " + tmp / "parts/t.h5 " + store));
  INFO(mlfd_test::ReadText(tmp / "parts/rank0.err") << mlfd_test::ReadText(tmp / "parts/rank1.err"));
  REQUIRE(resumed.exit_code == 0);
  CHECK(MaxStateDifference(tmp, tmp / "whole/t.last.h5", tmp / "parts/t.last.h5") == 0.0);
}

TEST_CASE("dist: finetune_joint and the multi-teacher methods (AMTML-KD's own optimiser and FEED's and UNIC's adapters) train data-parallel",
          "[stage][dist]") {
  TempDir tmp;
  const std::string a = MakeStore(tmp, "dpa", 3, 16, 12, 1, 15), b = MakeStore(tmp, "dpb", 2, 16, 12, 1, 16);
  std::string net = kNet;
  net.replace(net.find(" --seed 5"), 9, "");  // a seed per teacher below
  const std::string t = Msg(net, " -v 0 --epochs 1 --batch-size 8 ");
  for (const auto& [out, store, seed] : std::vector<std::tuple<std::string, std::string, int>>{
           {"ta", a, 1}, {"ta2", a, 2}, {"tb", b, 3}}) {
    auto r = RunTool("train_teacher", Msg(t, "--seed ", seed, " --out ", tmp / out, ".h5 ", store));
    REQUIRE(r.exit_code == 0);
  }
  REQUIRE(RunTool("build_joint", Msg("-v 0 --adaptor-dim 8 --teacher ", tmp / "ta.h5 --teacher ", tmp / "tb.h5 --out ",
                                     tmp / "j.h5")).exit_code == 0);
  const std::string bin = mlfd_test::BuildBinDir() + "/";
  const std::string loop = " --threads 1 --workers 1 -v 2 --dist-log-all-ranks --epochs 2 --batch-size 4 ";
  const std::string student = Msg(loop, "--arch resnet18 --small-stem --width 0.125 --embed-dim 16 ");
  const std::vector<std::pair<std::string, std::string>> runs = {
      {"finetune_joint", Msg(bin, "finetune_joint", loop, "--optimizer adam --lr 0.003 --out ", tmp / "jf.h5 ", tmp / "j.h5 ", a, " ", b)},
      {"amtml", Msg(bin, "distill_student", student, "--method amtml --teacher ", tmp / "ta.h5 --teacher ", tmp / "ta2.h5 --out ",
                    tmp / "amtml.h5 ", a)},
      {"feed", Msg(bin, "distill_student", student, "--method feed --teacher ", tmp / "ta.h5 --teacher ", tmp / "tb.h5 --out ",
                   tmp / "feed.h5 ", a)},
      {"unic", Msg(bin, "distill_student", student, "--method unic --teacher ", tmp / "ta.h5 --teacher ", tmp / "tb.h5 --out ",
                   tmp / "unic.h5 ", a)}};
  for (const auto& [name, cmd] : runs) {
    std::filesystem::create_directories(tmp / name);
    auto r = RunShell(Ranks(2, tmp / name, cmd));
    const std::string e0 = mlfd_test::ReadText(tmp / (name + "/rank0.err")), e1 = mlfd_test::ReadText(tmp / (name + "/rank1.err"));
    INFO(name << "\n" << e0 << "\n---\n" << e1);
    CHECK(r.exit_code == 0);
    // Both ranks hold the same weights (AMTML-KD's weighting group included) after every epoch.
    for (const std::string& e : {e0, e1}) CHECK(e.find("the weights are equal on all 2 ranks after epoch 2") != std::string::npos);
  }
  auto prov = mlfd_test::RunPython(tmp.path(), R"(
import sys, json, h5py
for path in sys.argv[1:]:
    p = json.loads(h5py.File(path, 'r').attrs['provenance'])
    assert p['data_parallel'] == {'world_size': 2, 'launcher': 'torchrun', 'sync_bn': False}, (path, p.get('data_parallel'))
print('ok')
)",
                                   Msg(tmp / "jf.h5 ", tmp / "amtml.h5 ", tmp / "feed.h5 ", tmp / "unic.h5"));
  INFO(prov.err);
  CHECK(prov.out == "ok\n");
}

TEST_CASE("dist: stages that run as one process refuse a multi-process launch", "[stage][dist]") {
  for (const char* tool : {"train_teacher", "finetune_joint", "distill_student"}) {  // and the training stages say
    auto help = RunTool(tool, "--help");                                           // what --batch-size means then
    std::string flat;  // the help wraps its columns: compare with the whitespace collapsed
    for (char c : help.out)
      if (!std::isspace(static_cast<unsigned char>(c)) || (!flat.empty() && flat.back() != ' ')) flat += std::isspace(static_cast<unsigned char>(c)) ? ' ' : c;
    INFO(help.out);
    CHECK(flat.find("per process when launched data-parallel by torchrun or srun: the global batch is N times it") !=
          std::string::npos);
  }
  for (const char* tool : {"evaluate", "extract_features", "prepare_data", "build_joint", "report"}) {
    auto r = RunShell(Msg("RANK=1 WORLD_SIZE=2 MASTER_ADDR=127.0.0.1 MASTER_PORT=1 ", mlfd_test::BuildBinDir(), "/", tool, " x y"));
    INFO(tool << ": " << r.err);
    CHECK(r.exit_code == 2);
    CHECK(r.err.find("runs as one process, but the launcher started 2 (torchrun)") != std::string::npos);
  }
}
