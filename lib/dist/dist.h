// Data-parallel training on PyTorch's own engines: c10d process groups (Gloo on CPU, NCCL on CUDA
// builds) over a c10d::TCPStore rendezvous, DDP's gradient reducer (c10d::Reducer: bucketed
// all-reduce overlapping the backward pass, gradients averaged over the processes) and
// DistributedSampler's shard order. A stage runs as N processes when a launcher set the usual
// variables (torchrun: RANK, WORLD_SIZE, LOCAL_RANK, MASTER_ADDR, MASTER_PORT; srun: SLURM_PROCID,
// SLURM_NTASKS, SLURM_LOCALID, SLURM_JOB_NODELIST); without them everything here is a no-op and
// the stage runs as one process, as before.
//
// One process group per process (Init, then the free functions). Collectives fail with Error
// after the group's timeout (--dist-timeout) when another rank died, never hang.
#pragma once

#include <torch/types.h>

#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "dist/options.h"
#include "util/error.h"

namespace mlfd {
namespace dist {

// What the launcher says about this process.
struct LaunchEnv {
  bool present = false;      // a launcher's variables are set
  std::string launcher;      // "torchrun" | "slurm" | "" (absent)
  int rank = 0, world = 1, local_rank = 0;
  std::string master_addr;   // rendezvous host
  int master_port = 0;
  bool agent_store = false;  // torchrun's agent hosts the store (TORCHELASTIC_USE_AGENT_STORE)
  int restart_count = 0;     // torchrun's TORCHELASTIC_RESTART_COUNT (store prefix)
};

// Reads the variables through `get` (getenv by default). torchrun's win over SLURM's. Under SLURM
// the rendezvous host is MASTER_ADDR if set, else the first host of SLURM_JOB_NODELIST (or
// SLURM_NODELIST), and the port MASTER_PORT if set, else 29500 + SLURM_JOB_ID % 10000. Throws
// UsageError naming the variable when one is malformed or inconsistent (rank outside the world).
using GetEnv = std::function<const char*(const char*)>;
LaunchEnv ReadLaunchEnv(const GetEnv& get = nullptr);

// The first host of a SLURM node list ("node[01-04,07],gpu3" -> "node01").
std::string FirstSlurmHost(const std::string& nodelist);

// Joins the process group the launcher describes (a no-op without a launcher, or when already
// joined). `device` is where the collectives' tensors live (NCCL needs CUDA). Logs rank/world;
// every log line then starts with "rank <r>: ", and ranks other than 0 log only warnings and
// errors unless `log_all_ranks`.
void Init(const Options& options, const torch::Device& device);
// Leaves it (also done at exit).
void Shutdown();

bool Active();          // joined a group with world >= 1 (a launcher's variables were set)
int Rank();             // 0 when not active
int World();            // 1 when not active
int LocalRank();        // 0 when not active
std::string Launcher(); // "torchrun" | "slurm" | "" (not active)
bool IsMain();          // rank 0 (or not active): the process that writes outputs
bool SyncBatchNorm();   // --sync-bn was given and the group is active
double TimeoutSeconds();

// Collectives over the group (no-ops when not active). Tensors must be contiguous and on the
// group's device. Each throws Error (naming the operation and the timeout) when it fails.
void Broadcast(std::vector<torch::Tensor> tensors, int root = 0);  // in place, coalesced
void AllReduceSum(torch::Tensor& tensor);                          // in place
void Barrier();
// Rows of every rank's `local` (same trailing shape and dtype on every rank, any row count),
// concatenated in rank order.
torch::Tensor AllGatherRows(const torch::Tensor& local);
// Undoes a strided shard: rank r held rows r, r + W, r + 2W, ... of n rows; returns the n rows in
// their original order (every rank gets all of them).
torch::Tensor GatherStrided(const torch::Tensor& local, int64_t n);

// Checks that every rank holds the same `tensors` (the sum and the sum of squares of each, in
// float64, all-gathered and compared bit for bit); throws Error naming the first rank that differs
// and `when`. Logs at -v 2 that they agree.
void CheckSameOnEveryRank(const std::vector<torch::Tensor>& tensors, const std::string& when);

// DistributedSampler's order (PyTorch, drop_last = false): a permutation of 0..n-1 drawn with a
// CPU generator seeded `seed` (torch.randperm), or 0..n-1 without `shuffle`, padded with its own
// first elements to a multiple of `world`, then every world-th element from `rank`.
std::vector<int64_t> ShardOrder(int64_t n, uint64_t seed, int rank, int world, bool shuffle = true);

// DDP for one model: the trainable tensors' gradients are averaged over the processes by
// c10d::Reducer (PyTorch's DDP reducer: 25 MB buckets, the first 1 MB, all-reduced as soon as a
// bucket's gradients are ready during backward). Construction broadcasts `states` (parameters and
// buffers) from rank 0 so every rank starts equal.
class DataParallel {
 public:
  DataParallel(const std::vector<torch::Tensor>& params, const std::vector<std::string>& names,
               const std::vector<torch::Tensor>& states);
  ~DataParallel();
  DataParallel(const DataParallel&) = delete;
  DataParallel& operator=(const DataParallel&) = delete;
  // Before the forward of a training step: rank 0's buffers (BatchNorm statistics) to every rank,
  // as DDP's broadcast_buffers.
  void BeforeForward();
  // After the forward, before backward. With --dist-find-unused, the parameters the loss does not
  // reach are found and reduced as zero (DDP's find_unused_parameters); without it, a step that
  // leaves a parameter without gradient fails the next step with one line naming the option.
  void BeforeBackward(const torch::Tensor& loss);

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

// The Error a failure of the group becomes (one line: the operation, this rank, the timeout, and
// the first line of what c10d or Gloo said); for failures met outside these functions, e.g. in
// the reducer's all-reduce that backward() waits for.
Error Failure(const std::string& what, const std::exception& e);

// Refuses a multi-process launch of a stage that runs as one process (one clear line).
void RequireSingleProcess(const std::string& program);

}  // namespace dist
}  // namespace mlfd
