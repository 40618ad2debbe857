// Optimisers (SGD with momentum/Nesterov, Adam, AdamW), parameter groups without weight decay on
// biases and normalisation parameters, learning-rate schedules (constant, step, cosine with
// linear warm-up, one-cycle) and gradient clipping, configured by one options struct.
#pragma once

#include <torch/torch.h>

#include <boost/program_options.hpp>
#include <functional>
#include <memory>
#include <nlohmann/json.hpp>
#include <string>

namespace mlfd {

struct OptimOptions {
  std::string optimizer = "sgd";  // sgd | adam | adamw
  double lr = 0.1;                // peak learning rate
  double momentum = 0.9;          // sgd
  bool nesterov = true;           // sgd
  double beta1 = 0.9, beta2 = 0.999, eps = 1e-8;  // adam, adamw
  double weight_decay = 5e-4;
  bool no_decay_norm_bias = true;  // no weight decay on biases and 1-D (norm) parameters
  std::string schedule = "cosine";  // constant | step | cosine | onecycle
  double warmup_epochs = 0.0;       // linear warm-up from 0 (constant, step, cosine)
  double step_epochs = 30;          // step: multiply by gamma every step_epochs
  double gamma = 0.1;
  double min_lr = 0.0;              // cosine floor
  double onecycle_pct = 0.3;        // onecycle: fraction of steps rising
  double onecycle_div = 25.0;       // onecycle: initial lr = lr / div
  double onecycle_final_div = 1e4;  // onecycle: final lr = initial / final_div
  double clip_grad = 0.0;           // max global gradient norm (0 = off)

  void Register(boost::program_options::options_description& d, const std::string& prefix = "");
  void Check(const std::string& prefix = "") const;
  // Every field under its option name ("lr", "weight-decay", ...), for resume checks.
  nlohmann::json ToJson() const;
};

// Builds the optimiser over `module`'s trainable parameters (two groups when no_decay_norm_bias).
std::unique_ptr<torch::optim::Optimizer> MakeOptimizer(const OptimOptions& o, torch::nn::Module& module);
// The same over an explicit list of parameters (names decide the no-decay group).
// `lr_scale` (optional) gives a parameter's learning rate relative to the schedule's; the groups'
// scales are returned in `group_scales` for SetLearningRate.
std::unique_ptr<torch::optim::Optimizer> MakeOptimizer(
    const OptimOptions& o, const std::vector<std::pair<std::string, torch::Tensor>>& named_params,
    const std::function<double(const std::string&)>& lr_scale = nullptr,
    std::vector<double>* group_scales = nullptr);

// Learning rate at `step` (0-based) of `total_steps`, with `steps_per_epoch` for epoch-based knobs.
double LearningRate(const OptimOptions& o, int64_t step, int64_t total_steps, int64_t steps_per_epoch);
void SetLearningRate(torch::optim::Optimizer& opt, double lr);
// Group i gets lr * scales[i].
void SetLearningRate(torch::optim::Optimizer& opt, double lr, const std::vector<double>& scales);

// Optimiser state <-> bytes (LibTorch's archive format), for checkpoints and exact resume.
std::string SerializeOptimizer(torch::optim::Optimizer& opt);
void DeserializeOptimizer(torch::optim::Optimizer& opt, const std::string& bytes);
// CPU generator state <-> bytes.
std::string TorchRngState();
void SetTorchRngState(const std::string& bytes);
// The state of every CUDA device's default generator (none without CUDA), and its restore onto
// the devices present now (returns how many were restored: fewer than saved or present means the
// continuation is not exact).
std::vector<std::string> CudaRngStates();
size_t SetCudaRngStates(const std::vector<std::string>& states);

// Dynamic loss scaling for float16 training (what PyTorch's GradScaler does): scale the loss,
// unscale the gradients, skip the step and halve the scale when they are not finite, double it
// after `growth_interval` good steps.
class LossScaler {
 public:
  explicit LossScaler(double init_scale = 65536.0, int growth_interval = 2000)
      : scale_(init_scale), growth_interval_(growth_interval) {}
  torch::Tensor Scale(const torch::Tensor& loss) const { return loss * scale_; }
  // Unscales the gradients in place; returns false (and lowers the scale) if any is not finite.
  bool UnscaleAndCheck(const std::vector<torch::Tensor>& params);
  double scale() const { return scale_; }
  int good_steps() const { return good_steps_; }
  // Restores a saved state (for --resume); Error when it is not a valid one.
  void Restore(double scale, int good_steps);

 private:
  double scale_;
  int growth_interval_;
  int good_steps_ = 0;
};

}  // namespace mlfd
