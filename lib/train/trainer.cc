// The shared training loop.
#include "train/trainer.h"

#include <ATen/autocast_mode.h>
#include <torch/version.h>

#include <malloc.h>
#include <sys/resource.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <fstream>
#include <memory>
#include <set>
#include <sstream>

#include "dist/dist.h"
#include "io/h5.h"
#include "util/file_roles.h"
#include "util/options.h"
#include "models/model.h"
#include "util/error.h"
#include "util/fs.h"
#include "util/log.h"
#include "util/progress.h"
#include "util/provenance.h"

namespace mlfd {

namespace po = boost::program_options;

void TrainLoopOptions::Register(po::options_description& d, const std::string& p) {
  d.add_options()((p + "epochs").c_str(), po::value(&epochs)->default_value(epochs), "training epochs")(
      (p + "seed").c_str(), po::value(&seed)->default_value(seed), "seed for initialisation, shuffling and augmentation")(
      (p + "device").c_str(), po::value(&device)->default_value(device), "auto | cpu | cuda | cuda:<i>")(
      (p + "precision").c_str(), po::value(&precision)->default_value(precision),
      "fp32 | bf16 | fp16 (bf16 and fp16 use CUDA autocast; fp16 adds loss scaling)")(
      (p + "resume").c_str(), po::value(&resume)->default_value(resume)->implicit_value(true),
      "continue from <out>.last.h5 (weights, optimiser, schedule, RNG, epoch)")(
      (p + "workers").c_str(), po::value(&workers)->default_value(workers), "loader threads")(
      (p + "prefetch").c_str(), po::value(&prefetch)->default_value(prefetch), "batches prepared ahead")(
      (p + "log-seconds").c_str(), po::value(&log_seconds)->default_value(log_seconds), "seconds between progress lines")(
      (p + "stop-after").c_str(), po::value(&stop_after)->default_value(stop_after),
      "end this run after N epochs as if interrupted (0 = off); continue later with --resume")(
      (p + "keep-last-batch").c_str(), po::value(&keep_last_batch)->default_value(keep_last_batch)->implicit_value(true),
      "also train on each epoch's final incomplete batch (default: left out, as it is reshuffled every epoch; "
      "a final batch of one image fails with BatchNorm)")(
      (p + "val-every").c_str(), po::value(&val_every)->default_value(val_every),
      "validate every N epochs and after the last one; the best checkpoint is chosen among the validated "
      "epochs (validation does not change the training itself)")(
      (p + "memory-budget").c_str(), po::value(&memory_budget_gb)->default_value(memory_budget_gb),
      "GB one training step may use: a batch estimated above it (measured on a probe of the first batch) is "
      "refused before it is allocated (0 = the memory this process can still get)")(
      (p + "memory-format").c_str(), po::value(&memory_format)->default_value(memory_format),
      "contiguous | channels-last: the layout of the convolution weights (and so of the activations) while "
      "training. channels-last trained 1.14x faster on CPU here (docs/performance.md); results equal "
      "contiguous training within float rounding, not bit for bit. Checkpoints are written contiguous either way");
  dist.Register(d, p);
}

void TrainLoopOptions::Check(const std::string& p) const {
  OptionChecker c(p);
  c.Require(epochs >= 1, "epochs", "must be >= 1");
  c.Require(precision == "fp32" || precision == "bf16" || precision == "fp16", "precision",
            "must be fp32, bf16 or fp16");
  c.Require(workers >= 1, "workers", "must be >= 1");
  c.Require(prefetch >= 1, "prefetch", "must be >= 1");
  c.Require(log_seconds > 0, "log-seconds", "must be > 0");
  c.Require(stop_after >= 0, "stop-after", "must be >= 0");
  c.Require(val_every >= 1, "val-every", "must be >= 1");
  c.Require(memory_budget_gb >= 0, "memory-budget", "must be >= 0 (0 = the memory available)");
  c.Require(memory_format == "contiguous" || memory_format == "channels-last", "memory-format",
            "must be contiguous or channels-last");
  c.Throw();
  dist.Check(p);
}

RunFiles::RunFiles(const std::string& out_path) : out(out_path) {
  std::string stem = StripExtension(out_path);
  last = stem + ".last.h5";
  best = stem + ".best.h5";
  metrics = stem + ".metrics.jsonl";
  last_metrics = stem + ".last.metrics.jsonl";
}

void RunFiles::CheckWritable(bool resume) const {
  if (resume && PathExists(last)) {  // say what is wrong with it, not "refusing to overwrite"
    bool readable = true;
    try {
      h5::File probe = h5::File::Open(last);  // refuses a non-HDF5 file too
    } catch (const Error&) {
      readable = false;
    }
    if (!readable)
      throw Error(Msg("--resume: ", last, " is truncated or corrupt (not a readable HDF5 file); delete it "
                      "and start afresh without --resume"));
  }
  for (const auto& p : {out, last, best}) h5::CheckOutputPath(p, kCheckpointFormat);
  CheckTextOutput("the metrics file", metrics, OutputKind::kJsonLines);
  CheckTextOutput("the history of the run in progress", last_metrics, OutputKind::kJsonLines);
}

Batch ToDevice(const Batch& b, torch::Device device) {
  if (device.is_cpu()) return b;
  Batch d = b;
  d.images = b.images.pin_memory().to(device, /*non_blocking=*/true);
  d.labels = b.labels.to(device, true);
  d.dataset = b.dataset.to(device, true);
  d.indices = b.indices.to(device, true);
  return d;
}

// LibTorch 2.4 renamed the CUDA autocast switches after the device type (the old names are
// deprecated there and gone later); 1.13 has only the old ones.
#if TORCH_VERSION_MAJOR > 2 || (TORCH_VERSION_MAJOR == 2 && TORCH_VERSION_MINOR >= 4)
#define MLFD_AUTOCAST_BY_DEVICE 1
#endif

AutocastGuard::AutocastGuard(const std::string& precision, torch::Device device) {
  if (precision == "fp32" || !device.is_cuda()) return;
  const at::ScalarType dtype = precision == "bf16" ? at::kBFloat16 : at::kHalf;
#ifdef MLFD_AUTOCAST_BY_DEVICE
  at::autocast::set_autocast_dtype(at::kCUDA, dtype);
  at::autocast::set_autocast_enabled(at::kCUDA, true);
#else
  at::autocast::set_autocast_gpu_dtype(dtype);
  at::autocast::set_enabled(true);
#endif
  active_ = true;
}

AutocastGuard::~AutocastGuard() {
  if (!active_) return;
#ifdef MLFD_AUTOCAST_BY_DEVICE
  at::autocast::set_autocast_enabled(at::kCUDA, false);
#else
  at::autocast::set_enabled(false);
#endif
  at::autocast::clear_cache();
}

namespace {

std::vector<nlohmann::json> ReadHistory(const std::string& path, int64_t up_to_epoch) {
  std::vector<nlohmann::json> out;
  if (!PathExists(path)) return out;
  std::istringstream in(ReadTextFile(path));
  std::string line;
  while (std::getline(in, line)) {
    if (line.empty()) continue;
    auto j = nlohmann::json::parse(line, nullptr, false);
    if (j.is_discarded()) throw Error(Msg(path, ": malformed metrics line"));
    if (j.value("epoch", int64_t{0}) <= up_to_epoch) out.push_back(j);
  }
  return out;
}

void WriteHistory(const std::string& path, const std::vector<nlohmann::json>& history) {
  std::string text;
  for (const auto& j : history) text += j.dump() + "\n";
  WriteTextAtomic(path, text);
}

}  // namespace

namespace {

// A step's peak over what its forward pass retains for the backward: the backward frees the saved
// activations as it creates their gradients. Measured: ResNet-18 (width 1, 28 px) with a batch of
// 1,200 retained 4.36 GB and peaked at 4.69 GB resident, model and data included.
constexpr double kStepOverRetained = 1.25;

// Bytes the heap has handed out (arenas of every thread and mmapped blocks).
double HeapInUse() {
  struct mallinfo2 m = mallinfo2();
  return static_cast<double>(m.uordblks) + static_cast<double>(m.hblkhd);
}

Batch SliceBatch(const Batch& b, int64_t n) {
  Batch s = b;
  s.images = b.images.narrow(0, 0, n);
  s.labels = b.labels.narrow(0, 0, n);
  if (b.dataset.defined()) s.dataset = b.dataset.narrow(0, 0, n);
  if (b.indices.defined()) s.indices = b.indices.narrow(0, 0, n);
  return s;
}

// The first number of a file (e.g. memory.max), or -1 when absent or "max".
double ReadNumberFile(const std::string& path) {
  std::ifstream in(path);
  std::string word;
  if (!(in >> word) || word.empty() || !std::isdigit(static_cast<unsigned char>(word[0]))) return -1;
  return std::stod(word);
}

}  // namespace

StepMemoryEstimate EstimateStepMemory(TrainTask& task, const Batch& batch, torch::Device device) {
  StepMemoryEstimate est;
  const int64_t n = batch.images.size(0);
  if (!device.is_cpu() || n <= 8 || HeapInUse() <= 0) return est;
  // What a step may change besides the graph it returns: BatchNorm's running statistics (and any
  // other buffer), the random state of dropout and drop-path, the task's own counters.
  std::vector<torch::Tensor> buffers, saved;
  for (torch::nn::Module* m : {task.model, task.aux})
    if (m)
      for (auto& t : m->buffers(true)) buffers.push_back(t);
  for (auto& t : buffers) saved.push_back(t.clone());
  const std::string rng = TorchRngState();
  const nlohmann::json extra = task.save_extra ? task.save_extra() : nlohmann::json();
  auto retained = [&](int64_t k) {
    const double before = HeapInUse();
    StepOutput out = task.step(SliceBatch(batch, k));
    return HeapInUse() - before;
  };
  const double small = retained(2), large = retained(8);
  {
    torch::NoGradGuard no_grad;
    for (size_t i = 0; i < buffers.size(); ++i) buffers[i].copy_(saved[i]);
  }
  SetTorchRngState(rng);
  if (task.load_extra) task.load_extra(extra);
  est.bytes_per_image = std::max(0.0, (large - small) / 6.0);
  est.step_bytes = kStepOverRetained * est.bytes_per_image * static_cast<double>(n);
  return est;
}

double AvailableMemoryBytes() {
  std::vector<double> limits;
  {
    std::ifstream in("/proc/meminfo");
    std::string key;
    double kb = 0;
    std::string unit;
    while (in >> key >> kb >> unit)
      if (key == "MemAvailable:") limits.push_back(kb * 1024.0);
  }
  // cgroup v2: the process's own group (from /proc/self/cgroup "0::/path"), then v1's controller.
  std::string group;
  {
    std::ifstream in("/proc/self/cgroup");
    std::string line;
    while (std::getline(in, line))
      if (line.rfind("0::", 0) == 0) group = line.substr(3);
  }
  for (const std::string& dir : {"/sys/fs/cgroup" + group, std::string("/sys/fs/cgroup")}) {
    double max = ReadNumberFile(dir + "/memory.max"), cur = ReadNumberFile(dir + "/memory.current");
    if (max > 0 && cur >= 0) {
      limits.push_back(std::max(0.0, max - cur));
      break;
    }
  }
  double v1_max = ReadNumberFile("/sys/fs/cgroup/memory/memory.limit_in_bytes"),
         v1_cur = ReadNumberFile("/sys/fs/cgroup/memory/memory.usage_in_bytes");
  if (v1_max > 0 && v1_max < 1e18 && v1_cur >= 0) limits.push_back(std::max(0.0, v1_max - v1_cur));
  struct rlimit rl;
  if (getrlimit(RLIMIT_AS, &rl) == 0 && rl.rlim_cur != RLIM_INFINITY) {
    std::ifstream in("/proc/self/statm");
    double pages = 0;
    if (in >> pages)
      limits.push_back(std::max(0.0, static_cast<double>(rl.rlim_cur) - pages * static_cast<double>(sysconf(_SC_PAGESIZE))));
  }
  return limits.empty() ? 0.0 : *std::min_element(limits.begin(), limits.end());
}

void CheckStepMemory(const StepMemoryEstimate& est, int64_t batch_size, double budget_bytes,
                     const std::string& budget_source) {
  if (est.step_bytes <= 0 || budget_bytes <= 0) return;
  MVLOG(2) << "memory: a step of " << batch_size << " images needs about " << est.step_bytes / 1e9 << " GB ("
           << est.bytes_per_image / 1e6 << " MB per image); " << budget_source << " " << budget_bytes / 1e9 << " GB";
  if (est.step_bytes <= budget_bytes) return;
  const int64_t fits = static_cast<int64_t>(budget_bytes / (kStepOverRetained * est.bytes_per_image));
  auto size = [](double b) {
    const char* unit = b >= 1e9 ? " GB" : b >= 1e6 ? " MB" : " kB";
    const double v = b / (b >= 1e9 ? 1e9 : b >= 1e6 ? 1e6 : 1e3);
    std::ostringstream os;
    os.precision(v >= 100 ? 0 : 1);
    os << std::fixed << v << unit;
    return os.str();
  };
  throw Error(Msg("a training batch of ", batch_size, " images needs about ", size(est.step_bytes), " of memory (",
                  size(est.bytes_per_image), " per image, measured on a probe of the first batch) but ", budget_source,
                  " ", size(budget_bytes), "; use a batch of at most ", std::max<int64_t>(1, fits),
                  " images (lower --batch-size)"));
}

std::string RecipeDifference(const nlohmann::json& saved, const nlohmann::json& now) {
  std::vector<std::string> diffs;
  auto flat = [](const nlohmann::json& r) {
    std::map<std::string, nlohmann::json> m;
    for (auto it = r.begin(); it != r.end(); ++it) {
      if (it.value().is_object())
        for (auto jt = it.value().begin(); jt != it.value().end(); ++jt) m["--" + jt.key()] = jt.value();
      else
        m[it.key() == "steps_per_epoch" ? "steps per epoch (--batch-size or the data)" : "--" + it.key()] = it.value();
    }
    return m;
  };
  auto a = flat(saved), b = flat(now);
  for (const auto& [k, v] : b) {
    auto it = a.find(k);
    if (it == a.end()) continue;  // a knob added after the checkpoint was written
    bool same = it->second == v ||
                (it->second.is_number() && v.is_number() && it->second.get<double>() == v.get<double>());
    if (!same) diffs.push_back(Msg(k, " ", it->second.dump(), " -> ", v.dump()));
  }
  return JoinNames(diffs);
}

TrainResult Train(TrainTask& task, Loader& loader, const OptimOptions& optim,
                  const TrainLoopOptions& loop, const std::string& out_path,
                  const Provenance& provenance, torch::Device device) {
  if (loop.precision != "fp32" && !device.is_cuda())
    throw UsageError("--precision " + loop.precision + " needs a CUDA device (use fp32 on CPU)");
  RunFiles files(out_path);
  // Data parallel, rank 0 alone writes (and cleans up); the others read the resume state.
  const bool writer = dist::IsMain();
  if (writer) {
    files.CheckWritable(loop.resume);
    // A run killed while writing left temporaries; `best` in particular may never be rewritten.
    for (const auto& p : {files.out, files.last, files.best, files.metrics, files.last_metrics}) RemoveOrphanTemps(p);
  }

  torch::nn::Module& model = *task.model;
  model.to(device);
  if (task.aux) task.aux->to(device);
  // Convolution weights channels-last: oneDNN's convolutions then run on channels-last activations
  // (a convolution's output follows its weight's layout). Applied again after a resume's load.
  auto apply_memory_format = [&] {
    if (loop.memory_format != "channels-last") return;
    ToChannelsLast(model);
    if (task.aux) ToChannelsLast(*task.aux);
  };
  apply_memory_format();
  auto params = task.parameters;
  if (params.empty())
    for (const auto& p : model.named_parameters(true)) params.emplace_back(p.key(), p.value());
  if (task.aux)
    for (const auto& p : task.aux->named_parameters(true)) params.emplace_back("aux." + p.key(), p.value());
  // Parameter groups with their own optimiser stay out of the main one.
  std::set<const void*> grouped;
  std::set<std::string> group_names;
  for (const auto& g : task.param_groups) {
    if (g.name.empty() || !group_names.insert(g.name).second)
      throw Error(Msg("parameter group '", g.name, "': names must be unique and non-empty"));
    for (const auto& t : g.params) grouped.insert(t.unsafeGetTensorImpl());
  }
  params.erase(std::remove_if(params.begin(), params.end(),
                              [&](const auto& p) { return grouped.count(p.second.unsafeGetTensorImpl()) > 0; }),
               params.end());
  std::vector<torch::Tensor> param_tensors;  // every trainable tensor: zeroed, unscaled and clipped together
  std::vector<std::string> param_names;
  for (const auto& [n, t] : params)
    if (t.requires_grad()) {
      param_tensors.push_back(t);
      param_names.push_back(n);
    }
  std::vector<std::unique_ptr<torch::optim::Adam>> group_optimizers;
  for (const auto& g : task.param_groups) {
    for (const auto& t : g.params) {
      param_tensors.push_back(t);
      param_names.push_back(g.name + "." + std::to_string(param_names.size()));
    }
    group_optimizers.push_back(std::make_unique<torch::optim::Adam>(g.params, torch::optim::AdamOptions(g.lr)));
  }
  std::vector<double> group_scales;
  auto optimizer = MakeOptimizer(optim, params, task.lr_scale, &group_scales);
  LossScaler scaler;

  // What shapes the trajectory: a resumed run must continue the same recipe.
  const nlohmann::json recipe = {{"optim", optim.ToJson()},
                                 {"epochs", loop.epochs},
                                 {"seed", loop.seed},
                                 {"keep-last-batch", loop.keep_last_batch},
                                 {"steps_per_epoch", loader.steps_per_epoch()},
                                 {"memory-format", loop.memory_format}};
  TrainResult result;
  int64_t start_epoch = 0, global_step = 0;
  if (loop.resume) {
    if (!PathExists(files.last))
      throw Error(Msg("--resume: ", files.last, " does not exist (nothing to resume)"));
    h5::File f = h5::File::Open(files.last);
    CheckpointMeta meta = ReadCheckpointMeta(f);
    if (meta.model.ToJson() != task.meta().model.ToJson())
      throw Error(Msg(files.last, ": was trained with a different model configuration; resume with the "
                                  "same options or start afresh without --resume"));
    if (!f.Exists("train_state")) throw Error(Msg(files.last, ": has no training state to resume from"));
    if (f.HasAttr("train_state", "recipe")) {
      std::string diff = RecipeDifference(f.GetJsonAttr("train_state", "recipe"), recipe);
      if (!diff.empty())
        throw Error(Msg("--resume: ", files.last, " was trained with other options (", diff,
                        "); resume with the same options, or start afresh without --resume"));
    } else {
      MLOG(WARNING) << files.last << " records no recipe (older checkpoint): cannot check that --resume "
                    << "continues with the same optimiser options";
    }
    model.to(torch::kCPU);
    ReadModelStateStrict(f, "state", model);
    model.to(device);
    if (task.aux) {
      task.aux->to(torch::kCPU);
      ReadModelStateStrict(f, "train_state/aux", *task.aux);
      task.aux->to(device);
    }
    apply_memory_format();
    if (task.load_extra) task.load_extra(f.GetJsonAttr("train_state", "extra"));
    auto o = f.ReadVector<uint8_t>("train_state/optimizer");
    DeserializeOptimizer(*optimizer, std::string(o.begin(), o.end()));
    for (size_t g = 0; g < task.param_groups.size(); ++g) {
      const std::string key = "train_state/optimizer_" + task.param_groups[g].name;
      if (!f.Exists(key))
        throw Error(Msg(files.last, ": has no optimiser state for parameter group '", task.param_groups[g].name,
                        "' (the run had another loss); start afresh without --resume"));
      auto go = f.ReadVector<uint8_t>(key);
      DeserializeOptimizer(*group_optimizers[g], std::string(go.begin(), go.end()));
    }
    auto r = f.ReadVector<uint8_t>("train_state/torch_rng");
    SetTorchRngState(std::string(r.begin(), r.end()));
    if (f.HasAttr("train_state", "cuda_devices")) {
      std::vector<std::string> cuda(static_cast<size_t>(f.GetIntAttr("train_state", "cuda_devices")));
      for (size_t i = 0; i < cuda.size(); ++i) {
        auto c = f.ReadVector<uint8_t>(Msg("train_state/cuda_rng/", i));
        cuda[i].assign(c.begin(), c.end());
      }
      const size_t present = CudaRngStates().size(), restored = SetCudaRngStates(cuda);
      if (restored != cuda.size() || (device.is_cuda() && restored != present)) {
        MLOG(WARNING) << files.last << " saved the random state of " << cuda.size() << " CUDA device(s), this machine has "
                      << present << ": the continuation is not bit-exact on the GPU";
      }
    }
    if (loop.precision == "fp16" && f.HasAttr("train_state", "loss_scale") &&
        f.GetDoubleAttr("train_state", "loss_scale") > 0)
      scaler.Restore(f.GetDoubleAttr("train_state", "loss_scale"),
                     static_cast<int>(f.GetIntAttr("train_state", "loss_scale_good_steps")));
    global_step = f.GetIntAttr("train_state", "global_step");
    result.best_metric = f.GetDoubleAttr("train_state", "best_metric");
    result.best_epoch = f.GetIntAttr("train_state", "best_epoch");
    start_epoch = meta.epoch;
    // The run in progress keeps its history beside .last.h5; a run that finished (or one written
    // before that file existed) has it in .metrics.jsonl.
    result.history = ReadHistory(PathExists(files.last_metrics) ? files.last_metrics : files.metrics, start_epoch);
    MLOG(INFO) << "resuming from " << files.last << " after epoch " << start_epoch << " (best "
               << result.best_metric << " at epoch " << result.best_epoch << ")";
  } else {
    torch::manual_seed(loop.seed);  // dropout / drop-path draws
  }
  // Data parallel (launched by torchrun or srun): every rank starts from rank 0's weights, and
  // DDP's reducer averages the gradients over the ranks during backward.
  std::vector<torch::Tensor> states;  // each tensor once: a group's tensors usually belong to `aux`
  std::set<const void*> in_states;
  auto add_state = [&](const torch::Tensor& t) {
    if (in_states.insert(t.unsafeGetTensorImpl()).second) states.push_back(t);
  };
  for (torch::nn::Module* m : {&model, task.aux})
    if (m) {
      for (const auto& t : m->parameters()) add_state(t);
      for (const auto& t : m->buffers()) add_state(t);
    }
  for (const auto& g : task.param_groups)
    for (const auto& t : g.params) add_state(t);
  dist::DataParallel data_parallel(param_tensors, param_names, states);

  const int64_t spe = loader.steps_per_epoch();
  const int64_t total_steps = spe * loop.epochs;
  double images_total = 0, seconds_total = 0;
  bool memory_checked = false;
  for (int64_t epoch = start_epoch; epoch < loop.epochs; ++epoch) {
    model.train();
    if (task.aux) task.aux->train();
    loader.StartEpoch(epoch);
    auto t0 = std::chrono::steady_clock::now();
    auto last_log = t0;
    double loss_sum = 0;
    int64_t correct = 0, count = 0, images = 0, step = 0;
    std::map<std::string, double> term_sums;
    double lr = 0;
    Batch batch;
    while (loader.Next(&batch)) {
      Batch b = ToDevice(batch, device);
      if (!memory_checked) {  // before the first full-size step allocates its activations
        memory_checked = true;
        const double budget = loop.memory_budget_gb > 0 ? loop.memory_budget_gb * 1e9 : AvailableMemoryBytes();
        if (budget > 0 && device.is_cpu())
          CheckStepMemory(EstimateStepMemory(task, b, device), b.images.size(0), budget,
                          loop.memory_budget_gb > 0 ? "--memory-budget allows" : "this process can still get");
      }
      lr = LearningRate(optim, global_step, total_steps, spe);
      SetLearningRate(*optimizer, lr, group_scales);
      optimizer->zero_grad();
      for (auto& o : group_optimizers) o->zero_grad();
      StepOutput out;
      data_parallel.BeforeForward();
      {
        AutocastGuard autocast(loop.precision, device);
        out = task.step(b);
      }
      data_parallel.BeforeBackward(out.loss);
      double loss_value = out.loss.item<double>();
      if (!std::isfinite(loss_value))
        throw Error(Msg("non-finite loss (", loss_value, ") at epoch ", epoch + 1, ", step ", step + 1,
                        "; stopped. The last good checkpoint is ",
                        PathExists(files.last) ? files.last : std::string("none (first epoch)"),
                        ". Lower --lr or check the data."));
      bool do_step = true;
      try {
        if (loop.precision == "fp16") {
          scaler.Scale(out.loss).backward();
          do_step = scaler.UnscaleAndCheck(param_tensors);
        } else {
          out.loss.backward();
        }
      } catch (const std::exception& e) {
        if (!dist::Active()) throw;
        throw dist::Failure("the gradients' all-reduce", e);  // DDP's reducer waits on it in backward
      }
      if (do_step) {
        if (optim.clip_grad > 0) torch::nn::utils::clip_grad_norm_(param_tensors, optim.clip_grad);
        optimizer->step();
        for (size_t g = 0; g < group_optimizers.size(); ++g)
          if (!task.param_groups[g].active || task.param_groups[g].active(epoch)) group_optimizers[g]->step();
      }
      const int64_t n = b.images.size(0);
      loss_sum += loss_value * static_cast<double>(n);
      for (const auto& [k, v] : out.terms) term_sums[k] += v * static_cast<double>(n);
      correct += out.correct;
      count += out.count;
      images += n;
      ++step;
      ++global_step;
      auto now = std::chrono::steady_clock::now();
      double since = std::chrono::duration<double>(now - last_log).count();
      if (since >= loop.log_seconds && ShouldLog(Severity::kInfo)) {
        last_log = now;
        double el = std::chrono::duration<double>(now - t0).count();
        double rate = images / el;
        double eta = (spe - step) * (el / step) + (loop.epochs - epoch - 1) * spe * (el / step);
        char buf[256];
        std::snprintf(buf, sizeof(buf),
                      "epoch %lld/%d step %lld/%lld: loss %.4f acc %.4f lr %.3g, %.0f img/s, ETA %s",
                      static_cast<long long>(epoch + 1), loop.epochs, static_cast<long long>(step),
                      static_cast<long long>(spe), loss_sum / images,
                      count ? static_cast<double>(correct) / count : 0.0, lr, rate,
                      FormatDuration(eta).c_str());
        LogLine(Severity::kInfo, buf);
      }
    }
    if (dist::Active()) {  // the epoch's training statistics over every rank's samples
      std::vector<double> v{loss_sum, static_cast<double>(correct), static_cast<double>(count),
                            static_cast<double>(images)};
      for (const auto& [k, x] : term_sums) v.push_back(x);
      torch::Tensor t = torch::tensor(v, torch::kFloat64);
      dist::AllReduceSum(t);
      loss_sum = t[0].item<double>();
      correct = static_cast<int64_t>(t[1].item<double>());
      count = static_cast<int64_t>(t[2].item<double>());
      images = static_cast<int64_t>(t[3].item<double>());
      int64_t i = 4;
      for (auto& [k, x] : term_sums) x = t[i++].item<double>();
    }
    double train_seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    images_total += static_cast<double>(images);
    seconds_total += train_seconds;

    {  // a step can leave non-finite weights even when its loss was finite
      torch::NoGradGuard no_grad;
      std::vector<torch::Tensor> state = model.parameters();
      for (const auto& b : model.buffers())
        if (b.is_floating_point()) state.push_back(b);  // BN statistics diverge too
      for (const auto& t : state)
        if (!torch::isfinite(t).all().item<bool>())
          throw Error(Msg("non-finite parameters at epoch ", epoch + 1, " (end of epoch); stopped. The last good "
                          "checkpoint is ", PathExists(files.last) ? files.last : std::string("none (first epoch)"),
                          ". Lower --lr or check the data."));
    }
    dist::CheckSameOnEveryRank(param_tensors, Msg("after epoch ", epoch + 1));
    model.eval();
    if (task.aux) task.aux->eval();
    // Validation on the epochs --val-every names and the last; it reads no random state, so the
    // training itself is the same whichever epochs are validated.
    const bool validate = (epoch + 1) % loop.val_every == 0 || epoch + 1 == loop.epochs;
    nlohmann::json val;
    if (validate) {
      torch::NoGradGuard no_grad;
      AutocastGuard autocast(loop.precision, device);
      try {
        val = task.validate();
      } catch (const Error& e) {
        throw Error(Msg("validation at epoch ", epoch + 1, " failed: ", e.what(), ". The last good checkpoint is ",
                        PathExists(files.last) ? files.last : std::string("none (first epoch)"), "."));
      }
    }
    const double metric = validate ? val.at("metric").get<double>() : 0.0;
    nlohmann::json record = {{"epoch", epoch + 1},
                             {"lr", lr},
                             {"train_loss", loss_sum / std::max<int64_t>(1, images)},
                             {"train_acc", count ? static_cast<double>(correct) / count : 0.0},
                             {"train_seconds", train_seconds},
                             {"images_per_second", images / std::max(1e-9, train_seconds)}};
    for (const auto& [k, v] : term_sums) record["train_" + k] = v / std::max<int64_t>(1, images);
    for (auto it = val.begin(); it != val.end(); ++it) record["val_" + it.key()] = it.value();
    bool improved = validate && metric > result.best_metric;
    if (improved) {
      result.best_metric = metric;
      result.best_epoch = epoch + 1;
    }
    record["best_epoch"] = result.best_epoch;
    result.history.push_back(record);
    if (writer) WriteHistory(files.last_metrics, result.history);

    CheckpointMeta meta = task.meta();
    meta.epoch = epoch + 1;
    meta.metrics = {{"best_val_metric", result.best_metric}, {"best_epoch", result.best_epoch},
                    {"epoch_record", record}};
    TrainState state;
    state.optimizer_archive = SerializeOptimizer(*optimizer);
    state.torch_rng_state = TorchRngState();
    state.cuda_rng_states = CudaRngStates();
    for (size_t g = 0; g < group_optimizers.size(); ++g)
      state.group_optimizers[task.param_groups[g].name] = SerializeOptimizer(*group_optimizers[g]);
    if (loop.precision == "fp16") {
      state.loss_scale = scaler.scale();
      state.loss_scale_good_steps = scaler.good_steps();
    }
    state.global_step = global_step;
    state.best_metric = result.best_metric;
    state.best_epoch = result.best_epoch;
    state.recipe = recipe;
    if (task.save_extra) state.extra = task.save_extra();
    if (writer) {
      model.to(torch::kCPU);
      if (task.aux) task.aux->to(torch::kCPU);
      SaveCheckpoint(files.last, model, meta, &state, provenance, task.aux);
      if (improved) SaveCheckpoint(files.best, model, meta, nullptr, provenance);
      model.to(device);
      if (task.aux) task.aux->to(device);
    }
    MLOG(INFO) << "epoch " << epoch + 1 << "/" << loop.epochs << ": train loss "
               << record["train_loss"].get<double>() << " acc " << record["train_acc"].get<double>()
               << (validate ? Msg(", val ", metric, improved ? " (best)" : "") : std::string(", not validated")) << ", "
               << FormatDuration(train_seconds) << ", "
               << static_cast<int64_t>(record["images_per_second"].get<double>()) << " img/s";
    result.epochs_run++;
    if (loop.stop_after > 0 && result.epochs_run >= loop.stop_after && epoch + 1 < loop.epochs) {
      MLOG(WARNING) << "stopping after " << result.epochs_run << " epoch(s) (--stop-after); "
                    << files.out << " is not written yet: continue with --resume";
      result.interrupted = true;
      result.images_per_second = images_total / std::max(1e-9, seconds_total);
      return result;
    }
  }
  result.images_per_second = seconds_total > 0 ? images_total / seconds_total : 0;
  if (!writer) return result;
  if (!PathExists(files.best)) throw Error(Msg(files.best, ": missing; cannot finish ", files.out));
  RenameFile(files.best, files.out);
  // The finished run's history goes beside its checkpoint only now: a run that fails keeps the
  // previous run's history with the previous checkpoint.
  RenameFile(files.last_metrics, files.metrics);
  MLOG(INFO) << "wrote " << files.out << " (best validation " << result.best_metric << " at epoch "
             << result.best_epoch << "); last epoch in " << files.last;
  return result;
}

}  // namespace mlfd
