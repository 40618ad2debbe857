// The training loop shared by every training stage (train_teacher, finetune_joint,
// distill_student): epochs over a Loader, a task-specific loss, optimiser and schedule, gradient
// clipping, mixed precision on CUDA, a non-finite-loss guard, validation every epoch, `best` and
// `last` checkpoints, per-epoch metrics as JSON lines, a progress line, and exact resume.
//
// Files, for an output path runs/x/teachers/mnist.h5:
//   runs/x/teachers/mnist.h5            the best checkpoint (by validation metric), written last
//   runs/x/teachers/mnist.last.h5       the last epoch's checkpoint with optimiser/RNG state
//   runs/x/teachers/mnist.best.h5       the best so far (renamed to the output at the end)
//   runs/x/teachers/mnist.metrics.jsonl one JSON object per epoch of the run that wrote mnist.h5
//   runs/x/teachers/mnist.last.metrics.jsonl  the history of the run in progress (with .last.h5 the
//                                       resume state; renamed to .metrics.jsonl when the run ends)
#pragma once

#include <torch/torch.h>

#include <boost/program_options.hpp>
#include <functional>
#include <map>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "data/loader.h"
#include "dist/options.h"
#include "models/checkpoint.h"
#include "train/optim.h"

namespace mlfd {

struct Provenance;  // util/provenance.h

struct TrainLoopOptions {
  int epochs = 10;
  uint64_t seed = 0;
  std::string device = "auto";       // auto | cpu | cuda[:i]
  std::string precision = "fp32";    // fp32 | bf16 | fp16 (bf16/fp16: CUDA autocast)
  bool resume = false;               // continue from <out>.last.h5
  int workers = 2;                   // loader threads
  int prefetch = 4;                  // batches prepared ahead
  double log_seconds = 10.0;         // progress line interval
  int stop_after = 0;                // stop (as if interrupted) after this many epochs this run
  bool keep_last_batch = false;      // also train on the final incomplete batch of each epoch
  int val_every = 1;                 // validate every N epochs and after the last one
  double memory_budget_gb = 0;       // refuse a step estimated above this (0 = the memory available)
  std::string memory_format = "contiguous";  // contiguous | channels-last: the layout of the trained weights
  dist::Options dist;                // data-parallel runs (torchrun / srun): backend, timeout, SyncBN

  void Register(boost::program_options::options_description& d, const std::string& prefix = "");
  void Check(const std::string& prefix = "") const;
};

// What one step computed.
struct StepOutput {
  torch::Tensor loss;                     // scalar, differentiable
  std::map<std::string, double> terms;    // loss terms for logging (already weighted)
  int64_t correct = 0, count = 0;         // training accuracy bookkeeping
};

// Parameters with an optimiser of their own (e.g. AMTML-KD's weighting): Adam at `lr` (no
// schedule, no weight decay), kept out of the main optimiser, stepped only in the epochs where
// `active(epoch)` holds (empty = always). Their gradients are zeroed, fp16-unscaled and clipped
// with the model's, and their optimiser state is saved for --resume (train_state/optimizer_<name>).
// The tensors themselves belong to a module of the task (usually an adapter in `aux`), so they
// are checkpointed with it.
struct ParamGroup {
  std::string name;  // unique in the task; letters, digits, '_' and '.'
  std::vector<torch::Tensor> params;
  double lr = 1e-3;
  std::function<bool(int64_t epoch)> active;
};

// The stage-specific parts of a training run.
struct TrainTask {
  torch::nn::Module* model = nullptr;  // what the checkpoints save (and what train()/eval() toggle)
  // Trainable parameters (name, tensor); empty = all of `model`'s.
  std::vector<std::pair<std::string, torch::Tensor>> parameters;
  // Loss of one batch (already on the device) in training mode.
  std::function<StepOutput(const Batch& batch)> step;
  // Validation: returns {"metric": value to maximise, ...anything else to log}.
  std::function<nlohmann::json()> validate;
  // Checkpoint metadata for the current state (epoch and metrics are filled in by the loop).
  std::function<CheckpointMeta()> meta;
  // Training-only modules (regressors, projectors): trained with the model (parameter names
  // "aux.<name>"), kept in <out>.last.h5 for resume, never in the output checkpoint.
  torch::nn::Module* aux = nullptr;
  // Learning rate of a parameter relative to the schedule's (empty = 1 for all).
  std::function<double(const std::string&)> lr_scale;
  // Extra training state (e.g. running statistics) saved in <out>.last.h5 and given back on resume.
  std::function<nlohmann::json()> save_extra;
  std::function<void(const nlohmann::json&)> load_extra;
  // Parameter sets trained with an optimiser of their own (see ParamGroup).
  std::vector<ParamGroup> param_groups;
};

struct TrainResult {
  int64_t epochs_run = 0;
  int64_t best_epoch = -1;
  double best_metric = -1;
  double images_per_second = 0;  // training throughput, averaged over the run
  bool interrupted = false;      // --stop-after ended the run early
  std::vector<nlohmann::json> history;
};

// Paths derived from the output path.
struct RunFiles {
  std::string out, last, best, metrics;
  std::string last_metrics;  // the history of the run in progress (resume state with `last`)
  explicit RunFiles(const std::string& out_path);
  // Fails (before any heavy work) if one of the checkpoints cannot be written or would replace a
  // file that is not a checkpoint.
  // Fails early when an output cannot be written; with `resume`, first when `last` is unreadable.
  void CheckWritable(bool resume = false) const;
};

// The options that differ between a saved recipe and the current one, as "--lr 0.1 -> 0.05, ...";
// empty when they agree (exposed for tests).
std::string RecipeDifference(const nlohmann::json& saved, const nlohmann::json& now);

// Runs the loop. Throws Error on a non-finite loss (naming epoch and step; the last good
// checkpoint stays). The output file appears only when all epochs finished.
TrainResult Train(TrainTask& task, Loader& loader, const OptimOptions& optim,
                  const TrainLoopOptions& loop, const std::string& out_path,
                  const Provenance& provenance, torch::Device device);

// Memory one training step of `batch` needs on the CPU, estimated before it runs: the task's
// step on probe slices of 2 and 8 images, with the heap in use measured while each step's graph is
// alive (the fixed part cancels in the difference); buffers, random state and the task's extra
// state are restored afterwards, so training continues exactly as without the probe. 1.25 times
// the forward's retained bytes per image (the backward frees them as it goes) times the batch. Returns 0 when it cannot be measured (a batch of at most 8 images, a non-CPU device, or an
// allocator glibc's mallinfo2 does not see).
struct StepMemoryEstimate {
  double bytes_per_image = 0;
  double step_bytes = 0;
};
StepMemoryEstimate EstimateStepMemory(TrainTask& task, const Batch& batch, torch::Device device);

// The memory this process may still allocate: the smallest of the kernel's MemAvailable, the
// cgroup's limit less its usage (v2 and v1) and the address-space limit (ulimit -v) less what is
// mapped. 0 when none can be read.
double AvailableMemoryBytes();

// Throws Error (one line: the estimate, the budget, the largest batch that fits) when a step of
// `batch_size` images estimated at `est` exceeds `budget_bytes`.
void CheckStepMemory(const StepMemoryEstimate& est, int64_t batch_size, double budget_bytes,
                     const std::string& budget_source);

// Moves a batch to the device (non-blocking where possible).
Batch ToDevice(const Batch& b, torch::Device device);

// Runs `fn` with autocast enabled for the precision on CUDA (a no-op for fp32 or CPU).
class AutocastGuard {
 public:
  AutocastGuard(const std::string& precision, torch::Device device);
  ~AutocastGuard();

 private:
  bool active_ = false;
};

}  // namespace mlfd
