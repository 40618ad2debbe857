// Data parallelism on c10d: rendezvous from the launcher's variables, the Gloo process group,
// DDP's reducer, collectives with one error type, DistributedSampler's order.
#define USE_C10D_GLOO 1  // ProcessGroupGloo.hpp declares the class only with it (Debian's libtorch has Gloo)

#include "dist/dist.h"

#include <ATen/CPUGeneratorImpl.h>
#include <torch/csrc/distributed/c10d/PrefixStore.hpp>
#include <torch/csrc/distributed/c10d/ProcessGroupGloo.hpp>
#include <torch/csrc/distributed/c10d/TCPStore.hpp>
#include <torch/csrc/distributed/c10d/comm.hpp>
#include <torch/csrc/distributed/c10d/reducer.hpp>
#include <torch/torch.h>

#include <algorithm>
#include <cstdlib>
#include <unordered_map>

#include "util/error.h"
#include "util/log.h"
#include "util/options.h"

namespace mlfd {
namespace dist {

namespace po = boost::program_options;

namespace {

struct State {
  LaunchEnv env;
  Options options;
  c10::intrusive_ptr<c10d::Store> store;
  c10::intrusive_ptr<c10d::ProcessGroup> group;
  torch::Device device = torch::kCPU;
};
State& TheState() {
  static State s;
  return s;
}

bool ParseInt(const char* text, long long* out) {
  if (!text || !*text) return false;
  char* end = nullptr;
  errno = 0;
  long long v = std::strtoll(text, &end, 10);
  if (errno != 0 || *end != '\0') return false;
  *out = v;
  return true;
}

int IntVar(const GetEnv& get, const char* name, long long lo, long long hi) {
  long long v = 0;
  if (!ParseInt(get(name), &v) || v < lo || v > hi)
    throw UsageError(Msg("data parallel: ", name, "='", get(name) ? get(name) : "", "' is not an integer in [", lo, ", ",
                         hi, "]"));
  return static_cast<int>(v);
}

const char* Getenv(const char* name) { return std::getenv(name); }

std::string FirstLine(const std::string& s) { return s.substr(0, s.find('\n')); }

// Runs one collective to its end; c10d's and Gloo's exceptions become one Error line.
void Run(const char* what, const std::function<void()>& run) {
  try {
    run();
  } catch (const Error&) {
    throw;
  } catch (const std::exception& e) {
    throw Failure(what, e);
  }
}

}  // namespace

Error Failure(const std::string& what, const std::exception& e) {
  const std::string text = e.what();
  // A failure already explained (e.g. thrown by a collective inside the autograd engine, which
  // wraps it) keeps its own line.
  if (auto at = text.find("data parallel: "); at != std::string::npos) return Error(FirstLine(text.substr(at)));
  return Error(Msg("data parallel: ", what, " failed on rank ", Rank(), " of ", World(),
                   " (another process ended, or none answered within --dist-timeout ", TheState().options.timeout_seconds,
                   " s): ", FirstLine(text)));
}

std::string FirstSlurmHost(const std::string& nodelist) {
  // The first entry ends at a comma outside brackets.
  std::string first;
  int depth = 0;
  for (char c : nodelist) {
    if (c == '[') ++depth;
    if (c == ']') --depth;
    if (c == ',' && depth == 0) break;
    first += c;
  }
  auto open = first.find('[');
  if (open == std::string::npos) return first;
  auto close = first.find(']', open);
  if (close == std::string::npos) throw UsageError(Msg("data parallel: cannot read the SLURM node list '", nodelist, "'"));
  std::string range = first.substr(open + 1, close - open - 1);
  range = range.substr(0, range.find(','));
  range = range.substr(0, range.find('-'));
  return first.substr(0, open) + range + first.substr(close + 1);
}

LaunchEnv ReadLaunchEnv(const GetEnv& get_in) {
  const GetEnv get = get_in ? get_in : GetEnv(Getenv);
  auto has = [&](const char* n) { return get(n) != nullptr && *get(n) != '\0'; };
  LaunchEnv e;
  if (has("RANK") || has("WORLD_SIZE")) {
    for (const char* n : {"RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT"})
      if (!has(n)) throw UsageError(Msg("data parallel: RANK and WORLD_SIZE are set but ", n, " is not (launch with torchrun, or set all four)"));
    e.launcher = "torchrun";
    e.world = IntVar(get, "WORLD_SIZE", 1, 1 << 20);
    e.rank = IntVar(get, "RANK", 0, e.world - 1);
    e.local_rank = has("LOCAL_RANK") ? IntVar(get, "LOCAL_RANK", 0, e.world - 1) : 0;
    e.master_addr = get("MASTER_ADDR");
    e.master_port = IntVar(get, "MASTER_PORT", 1, 65535);
    e.agent_store = has("TORCHELASTIC_USE_AGENT_STORE") && std::string(get("TORCHELASTIC_USE_AGENT_STORE")) == "True";
    e.restart_count = has("TORCHELASTIC_RESTART_COUNT") ? IntVar(get, "TORCHELASTIC_RESTART_COUNT", 0, 1 << 20) : 0;
    e.present = true;
    return e;
  }
  // srun sets SLURM_STEP_NUM_TASKS for the tasks of a step; a batch script (which also sees
  // SLURM_NTASKS and SLURM_PROCID) is not a data-parallel launch. One task runs as one process.
  if (has("SLURM_STEP_NUM_TASKS") && has("SLURM_PROCID")) {
    const int world = IntVar(get, "SLURM_STEP_NUM_TASKS", 1, 1 << 20);
    if (world == 1) return e;
    e.launcher = "slurm";
    e.world = world;
    e.rank = IntVar(get, "SLURM_PROCID", 0, world - 1);
    e.local_rank = has("SLURM_LOCALID") ? IntVar(get, "SLURM_LOCALID", 0, world - 1) : 0;
    if (has("MASTER_ADDR")) {
      e.master_addr = get("MASTER_ADDR");
    } else {
      const char* nodes = has("SLURM_STEP_NODELIST") ? "SLURM_STEP_NODELIST" : has("SLURM_JOB_NODELIST") ? "SLURM_JOB_NODELIST" : "SLURM_NODELIST";
      if (!has(nodes)) throw UsageError("data parallel: under srun but neither MASTER_ADDR nor SLURM_JOB_NODELIST is set");
      e.master_addr = FirstSlurmHost(get(nodes));
    }
    if (has("MASTER_PORT")) {
      e.master_port = IntVar(get, "MASTER_PORT", 1, 65535);
    } else {
      // Distinct for the concurrent steps of one job (make -j inside an allocation).
      long long job = 0, step = 0;
      ParseInt(get("SLURM_JOB_ID"), &job);
      ParseInt(get("SLURM_STEP_ID"), &step);
      e.master_port = 20000 + static_cast<int>((job * 97 + step) % 20000);
    }
    e.present = true;
  }
  return e;
}

void Options::Register(po::options_description& d, const std::string& p) {
  d.add_options()((p + "dist-backend").c_str(), po::value(&backend)->default_value(backend),
                  "data-parallel runs (launched by torchrun or srun): auto | gloo | nccl (auto: NCCL on CUDA "
                  "builds with a CUDA device, else Gloo)")(
      (p + "dist-timeout").c_str(), po::value(&timeout_seconds)->default_value(timeout_seconds),
      "data-parallel runs: seconds a collective may wait for the other processes before the run fails")(
      (p + "sync-bn").c_str(), po::value(&sync_bn)->default_value(sync_bn)->implicit_value(true),
      "data-parallel runs: BatchNorm statistics over the global batch (as SyncBatchNorm) instead of each "
      "process's own (as DDP)")(
      (p + "dist-log-all-ranks").c_str(), po::value(&log_all_ranks)->default_value(log_all_ranks)->implicit_value(true),
      "data-parallel runs: every rank logs at the -v level (default: ranks other than 0 log warnings and errors only)")(
      (p + "dist-find-unused").c_str(), po::value(&find_unused)->default_value(find_unused)->implicit_value(true),
      "data-parallel runs: find the parameters a step's loss does not reach and reduce them as zero (DDP's "
      "find_unused_parameters; costs a graph traversal per step)");
}

void Options::Check(const std::string& p) const {
  OptionChecker c(p);
  c.Require(backend == "auto" || backend == "gloo" || backend == "nccl", "dist-backend", "must be auto, gloo or nccl");
  c.Require(timeout_seconds > 0, "dist-timeout", "must be > 0");
  c.Throw();
}

void Init(const Options& options, const torch::Device& device) {
  State& s = TheState();
  if (s.group) return;
  LaunchEnv env = ReadLaunchEnv();
  if (!env.present) return;
  options.Check();
  std::string backend = options.backend == "auto" ? "gloo" : options.backend;
  if (backend == "nccl")
    throw UsageError("--dist-backend nccl: this build's LibTorch has no NCCL (it was built without CUDA); use gloo");
  const auto timeout = std::chrono::milliseconds(static_cast<int64_t>(options.timeout_seconds * 1000));
  try {
    c10d::TCPStoreOptions so;
    so.port = static_cast<uint16_t>(env.master_port);
    so.numWorkers = env.world;
    so.timeout = timeout;
    so.multiTenant = true;
    if (env.agent_store) {
      // torchrun's agent already serves the store at MASTER_PORT; workers are its clients.
      so.isServer = false;
      so.waitWorkers = false;
      s.store = c10::make_intrusive<c10d::PrefixStore>(Msg("/worker/attempt_", env.restart_count),
                                                       c10::make_intrusive<c10d::TCPStore>(env.master_addr, so));
    } else {
      so.isServer = env.rank == 0;
      so.waitWorkers = true;
      s.store = c10::make_intrusive<c10d::TCPStore>(env.master_addr, so);
    }
    auto go = c10d::ProcessGroupGloo::Options::create(timeout);
    const char* ifname = std::getenv("GLOO_SOCKET_IFNAME");
    go->devices.push_back(ifname && *ifname ? c10d::ProcessGroupGloo::createDeviceForInterface(ifname)
                                            : c10d::ProcessGroupGloo::createDefaultDevice());
    go->threads = 2;
    s.group = c10::make_intrusive<c10d::ProcessGroupGloo>(s.store, env.rank, env.world, go);
  } catch (const Error&) {
    throw;
  } catch (const std::exception& e) {
    const std::string detail = FirstLine(e.what());
    throw Error(Msg("data parallel: rank ", env.rank, " of ", env.world, " could not join the group at ",
                    env.master_addr, ":", env.master_port, " within --dist-timeout ", options.timeout_seconds,
                    " s: ", detail));
  }
  s.env = env;
  s.options = options;
  s.device = device;
  SetLinePrefix(Msg("rank ", env.rank, ": "));
  if (env.rank != 0 && !options.log_all_ranks) SetVerbosity(0);
  MLOG(INFO) << "data parallel: rank " << env.rank << " of " << env.world << " (local rank " << env.local_rank
             << ", launched by " << env.launcher << ", " << backend << " via " << env.master_addr << ":"
             << env.master_port << ")";
}

void Shutdown() {
  State& s = TheState();
  s.group.reset();
  s.store.reset();
  s.env = LaunchEnv();
}

bool Active() { return static_cast<bool>(TheState().group); }
int Rank() { return Active() ? TheState().env.rank : 0; }
int World() { return Active() ? TheState().env.world : 1; }
int LocalRank() { return Active() ? TheState().env.local_rank : 0; }
std::string Launcher() { return Active() ? TheState().env.launcher : std::string(); }
bool IsMain() { return Rank() == 0; }
bool SyncBatchNorm() { return Active() && TheState().options.sync_bn; }
double TimeoutSeconds() { return TheState().options.timeout_seconds; }

void Broadcast(std::vector<torch::Tensor> tensors, int root) {
  if (!Active() || tensors.empty()) return;
  Run("broadcast", [&] { c10d::broadcast_coalesced(TheState().group, tensors, 1 << 22, root); });
}

void AllReduceSum(torch::Tensor& tensor) {
  if (!Active()) return;
  std::vector<torch::Tensor> v{tensor};
  Run("all-reduce", [&] { TheState().group->allreduce(v)->wait(); });
}

void Barrier() {
  if (!Active()) return;
  Run("barrier", [&] { TheState().group->barrier()->wait(); });
}

torch::Tensor AllGatherRows(const torch::Tensor& local_in) {
  if (!Active()) return local_in;
  const int W = World();
  torch::Tensor local = local_in.contiguous();
  torch::Tensor counts = torch::zeros({W}, torch::kLong);
  counts[Rank()] = local.size(0);
  AllReduceSum(counts);
  const int64_t most = counts.max().item<int64_t>();
  std::vector<int64_t> shape = local.sizes().vec();
  shape[0] = most;
  torch::Tensor padded = torch::zeros(shape, local.options());
  if (local.size(0) > 0) padded.narrow(0, 0, local.size(0)).copy_(local);
  std::vector<std::vector<torch::Tensor>> out(1);
  for (int r = 0; r < W; ++r) out[0].push_back(torch::empty_like(padded));
  std::vector<torch::Tensor> in{padded};
  Run("all-gather", [&] { TheState().group->allgather(out, in)->wait(); });
  std::vector<torch::Tensor> parts;
  for (int r = 0; r < W; ++r) parts.push_back(out[0][static_cast<size_t>(r)].narrow(0, 0, counts[r].item<int64_t>()));
  return torch::cat(parts, 0);
}

torch::Tensor GatherStrided(const torch::Tensor& local, int64_t n) {
  if (!Active()) return local;
  const int W = World();
  torch::Tensor all = AllGatherRows(local);
  if (all.size(0) != n) throw Error(Msg("internal: gathered ", all.size(0), " rows of a shard of ", n));
  // Rank r's rows are r, r + W, ...: its block starts after the blocks of the ranks before it.
  std::vector<int64_t> where(static_cast<size_t>(n));
  int64_t at = 0;
  for (int r = 0; r < W; ++r)
    for (int64_t i = r; i < n; i += W) where[static_cast<size_t>(i)] = at++;
  return all.index_select(0, torch::tensor(where, torch::kLong).to(all.device()));
}

void CheckSameOnEveryRank(const std::vector<torch::Tensor>& tensors, const std::string& when) {
  if (!Active()) return;
  torch::NoGradGuard no_grad;
  std::vector<torch::Tensor> sums;
  for (const auto& t : tensors) {
    torch::Tensor d = t.detach().to(torch::kCPU, torch::kFloat64);
    sums.push_back(d.sum().view({1}));
    sums.push_back(d.pow(2).sum().view({1}));
  }
  if (sums.empty()) return;
  torch::Tensor all = AllGatherRows(torch::cat(sums).view({1, -1}));
  for (int r = 1; r < World(); ++r)
    if (!torch::equal(all[r], all[0]))
      throw Error(Msg("data parallel: rank ", r, "'s weights differ from rank 0's ", when,
                      " (the processes must run the same program on the same data)"));
  MVLOG(2) << "data parallel: the weights are equal on all " << World() << " ranks " << when;
}

std::vector<int64_t> ShardOrder(int64_t n, uint64_t seed, int rank, int world, bool shuffle) {
  if (n < 1 || world < 1 || rank < 0 || rank >= world) throw Error("internal: ShardOrder of an empty set or a bad rank");
  std::vector<int64_t> all(static_cast<size_t>(n));
  if (shuffle) {
    auto gen = at::make_generator<at::CPUGeneratorImpl>(seed);
    torch::Tensor perm = torch::randperm(n, gen, torch::TensorOptions().dtype(torch::kLong));
    std::copy(perm.data_ptr<int64_t>(), perm.data_ptr<int64_t>() + n, all.begin());
  } else {
    for (int64_t i = 0; i < n; ++i) all[static_cast<size_t>(i)] = i;
  }
  const int64_t per_rank = (n + world - 1) / world, total = per_rank * world;
  for (int64_t i = n; i < total; ++i) all.push_back(all[static_cast<size_t>((i - n) % n)]);
  std::vector<int64_t> mine;
  mine.reserve(static_cast<size_t>(per_rank));
  for (int64_t i = rank; i < total; i += world) mine.push_back(all[static_cast<size_t>(i)]);
  return mine;
}

struct DataParallel::Impl {
  std::vector<torch::Tensor> buffers;
  std::unique_ptr<c10d::Reducer> reducer;
};

DataParallel::DataParallel(const std::vector<torch::Tensor>& params, const std::vector<std::string>& names,
                           const std::vector<torch::Tensor>& states)
    : impl_(std::make_unique<Impl>()) {
  if (!Active()) return;
  for (const auto& t : states)
    if (!t.requires_grad()) impl_->buffers.push_back(t);
  {
    torch::NoGradGuard no_grad;
    std::vector<torch::Tensor> all;
    for (const auto& t : states) all.push_back(t.detach());
    Broadcast(all, 0);
  }
  // DDP's defaults: the first bucket 1 MB (so the all-reduce starts early in backward), then 25 MB;
  // buckets in reverse order of the parameters (the order gradients become ready).
  const size_t kFirst = 1024 * 1024, kCap = 25 * 1024 * 1024;
  std::unordered_map<size_t, std::string> param_names;
  for (size_t i = 0; i < names.size() && i < params.size(); ++i) param_names[i] = names[i];
  try {
    c10d::verify_params_across_processes(TheState().group, params, c10::nullopt);
    auto [buckets, limits] = c10d::compute_bucket_assignment_by_size(params, {kFirst, kCap},
                                                                     std::vector<bool>(params.size(), false));
    std::reverse(buckets.begin(), buckets.end());
    std::reverse(limits.begin(), limits.end());
    impl_->reducer = std::make_unique<c10d::Reducer>(params, buckets, limits, TheState().group,
                                                     std::vector<bool>(params.size(), false),
                                                     static_cast<int64_t>(kCap), TheState().options.find_unused,
                                                     /*gradient_as_bucket_view=*/false, param_names,
                                                     static_cast<int64_t>(kFirst));
  } catch (const Error&) {
    throw;
  } catch (const std::exception& e) {
    const std::string detail = FirstLine(e.what());
    throw Error(Msg("data parallel: the processes do not hold the same model (", detail, ")"));
  }
}

DataParallel::~DataParallel() = default;

void DataParallel::BeforeForward() {
  if (!impl_->reducer) return;
  try {
    impl_->reducer->prepare_for_forward();
  } catch (const std::exception& e) {
    throw Error(Msg("data parallel: ", FirstLine(e.what())));
  }
  if (impl_->buffers.empty()) return;
  torch::NoGradGuard no_grad;
  Broadcast(impl_->buffers, 0);
}

void DataParallel::BeforeBackward(const torch::Tensor& loss) {
  if (!impl_->reducer) return;
  try {
    impl_->reducer->prepare_for_backward(TheState().options.find_unused ? std::vector<torch::Tensor>{loss}
                                                                        : std::vector<torch::Tensor>{});
  } catch (const std::exception& e) {
    const std::string what = e.what();
    if (what.find("find_unused_parameters") != std::string::npos || what.find("did not receive grad") != std::string::npos)
      throw Error("data parallel: a parameter got no gradient in the previous step, so its gradient could not be "
                  "averaged; run with --dist-find-unused");
    throw Error(Msg("data parallel: ", FirstLine(what)));
  }
}

void RequireSingleProcess(const std::string& program) {
  LaunchEnv env = ReadLaunchEnv();
  if (env.present && env.world > 1)
    throw UsageError(Msg(program, " runs as one process, but the launcher started ", env.world, " (", env.launcher,
                         "); launch it with one task (srun -n1, torchrun --nproc_per_node 1) or without a launcher"));
}

}  // namespace dist
}  // namespace mlfd
