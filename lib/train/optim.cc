// Optimisers, schedules, optimiser (de)serialisation and loss scaling.
#include "train/optim.h"

#include <algorithm>
#include <cmath>
#include <map>
#include <tuple>
#include <sstream>
#include <cstring>
#include <mutex>

#include <ATen/CPUGeneratorImpl.h>

#include "util/options.h"
#include "util/error.h"

namespace mlfd {

namespace po = boost::program_options;

void OptimOptions::Register(po::options_description& d, const std::string& p) {
  d.add_options()((p + "optimizer").c_str(), po::value(&optimizer)->default_value(optimizer), "sgd | adam | adamw")(
      (p + "lr").c_str(), po::value(&lr)->default_value(lr), "peak learning rate")(
      (p + "momentum").c_str(), po::value(&momentum)->default_value(momentum), "SGD momentum")(
      (p + "nesterov").c_str(), po::value(&nesterov)->default_value(nesterov)->implicit_value(true), "SGD Nesterov momentum")(
      (p + "beta1").c_str(), po::value(&beta1)->default_value(beta1), "Adam/AdamW beta1")(
      (p + "beta2").c_str(), po::value(&beta2)->default_value(beta2), "Adam/AdamW beta2")(
      (p + "eps").c_str(), po::value(&eps)->default_value(eps), "Adam/AdamW epsilon")(
      (p + "weight-decay").c_str(), po::value(&weight_decay)->default_value(weight_decay), "weight decay")(
      (p + "no-decay-norm-bias").c_str(), po::value(&no_decay_norm_bias)->default_value(no_decay_norm_bias)->implicit_value(true),
      "no weight decay on biases and normalisation parameters")(
      (p + "schedule").c_str(), po::value(&schedule)->default_value(schedule), "constant | step | cosine | onecycle")(
      (p + "warmup-epochs").c_str(), po::value(&warmup_epochs)->default_value(warmup_epochs), "linear warm-up (epochs, may be fractional)")(
      (p + "step-epochs").c_str(), po::value(&step_epochs)->default_value(step_epochs), "step schedule: epochs between decays")(
      (p + "gamma").c_str(), po::value(&gamma)->default_value(gamma), "step schedule: decay factor")(
      (p + "min-lr").c_str(), po::value(&min_lr)->default_value(min_lr), "cosine schedule: final learning rate")(
      (p + "onecycle-pct").c_str(), po::value(&onecycle_pct)->default_value(onecycle_pct), "one-cycle: fraction of steps rising")(
      (p + "onecycle-div").c_str(), po::value(&onecycle_div)->default_value(onecycle_div), "one-cycle: initial lr = lr / div")(
      (p + "onecycle-final-div").c_str(), po::value(&onecycle_final_div)->default_value(onecycle_final_div),
      "one-cycle: final lr = initial lr / final-div")(
      (p + "clip-grad").c_str(), po::value(&clip_grad)->default_value(clip_grad), "max global gradient norm (0 = off)");
}

nlohmann::json OptimOptions::ToJson() const {
  return {{"optimizer", optimizer}, {"lr", lr}, {"momentum", momentum}, {"nesterov", nesterov},
          {"beta1", beta1}, {"beta2", beta2}, {"eps", eps}, {"weight-decay", weight_decay},
          {"no-decay-norm-bias", no_decay_norm_bias}, {"schedule", schedule},
          {"warmup-epochs", warmup_epochs}, {"step-epochs", step_epochs}, {"gamma", gamma},
          {"min-lr", min_lr}, {"onecycle-pct", onecycle_pct}, {"onecycle-div", onecycle_div},
          {"onecycle-final-div", onecycle_final_div}, {"clip-grad", clip_grad}};
}

void OptimOptions::Check(const std::string& p) const {
  OptionChecker c(p);
  c.Require(optimizer == "sgd" || optimizer == "adam" || optimizer == "adamw", "optimizer",
            "must be sgd, adam or adamw");
  c.Require(lr > 0 && std::isfinite(lr), "lr", "must be > 0");
  c.Require(momentum >= 0 && momentum < 1, "momentum", "must be in [0, 1)");
  c.Require(!(nesterov && optimizer == "sgd" && momentum == 0), "nesterov", "needs momentum > 0");
  c.Require(beta1 >= 0 && beta1 < 1, "beta1", "must be in [0, 1)");
  c.Require(beta2 >= 0 && beta2 < 1, "beta2", "must be in [0, 1)");
  c.Require(eps > 0, "eps", "must be > 0");
  c.Require(weight_decay >= 0, "weight-decay", "must be >= 0");
  c.Require(schedule == "constant" || schedule == "step" || schedule == "cosine" || schedule == "onecycle",
            "schedule", "must be constant, step, cosine or onecycle");
  c.Require(warmup_epochs >= 0, "warmup-epochs", "must be >= 0");
  c.Require(step_epochs > 0, "step-epochs", "must be > 0");
  c.Require(gamma > 0 && gamma <= 1, "gamma", "must be in (0, 1]");
  c.Require(min_lr >= 0 && min_lr <= lr, "min-lr", "must be in [0, lr]");
  c.Require(onecycle_pct > 0 && onecycle_pct < 1, "onecycle-pct", "must be in (0, 1)");
  c.Require(onecycle_div >= 1, "onecycle-div", "must be >= 1");
  c.Require(onecycle_final_div >= 1, "onecycle-final-div", "must be >= 1");
  c.Require(clip_grad >= 0, "clip-grad", "must be >= 0");
  c.Throw();
}

std::unique_ptr<torch::optim::Optimizer> MakeOptimizer(const OptimOptions& o, torch::nn::Module& module) {
  std::vector<std::pair<std::string, torch::Tensor>> named;
  for (const auto& p : module.named_parameters(true)) named.emplace_back(p.key(), p.value());
  return MakeOptimizer(o, named);
}

std::unique_ptr<torch::optim::Optimizer> MakeOptimizer(
    const OptimOptions& o, const std::vector<std::pair<std::string, torch::Tensor>>& named_params,
    const std::function<double(const std::string&)>& lr_scale, std::vector<double>* group_scales) {
  // Groups keyed by (lr scale, decay); scale 1 with decay first, as before.
  std::map<std::pair<double, bool>, std::vector<torch::Tensor>> by_key;
  for (const auto& [name, t] : named_params) {
    if (!t.requires_grad()) continue;
    bool is_bias_or_norm = t.dim() <= 1;  // biases, BN/LN weights and biases
    double scale = lr_scale ? lr_scale(name) : 1.0;
    by_key[{-scale, !(o.no_decay_norm_bias && is_bias_or_norm)}].push_back(t);
  }
  if (by_key.empty()) throw Error("optimizer: no trainable parameters");
  std::vector<std::tuple<std::vector<torch::Tensor>, double, double, bool>> plan;  // params, wd, scale, decay
  for (auto& [key, ts] : by_key) plan.emplace_back(ts, key.second ? o.weight_decay : 0.0, -key.first, key.second);
  // Within a scale the decay group comes first (std::map put it second).
  std::stable_sort(plan.begin(), plan.end(), [](const auto& a, const auto& b) {
    if (std::get<2>(a) != std::get<2>(b)) return std::get<2>(a) > std::get<2>(b);
    return std::get<3>(a) && !std::get<3>(b);
  });
  if (group_scales) {
    group_scales->clear();
    for (auto& p : plan) group_scales->push_back(std::get<2>(p));
  }
  auto groups = [&](auto make_options) {
    std::vector<torch::optim::OptimizerParamGroup> g;
    for (auto& p : plan) g.emplace_back(std::get<0>(p), make_options(std::get<1>(p)));
    return g;
  };
  if (o.optimizer == "sgd") {
    return std::make_unique<torch::optim::SGD>(
        groups([&](double wd) {
          return std::make_unique<torch::optim::SGDOptions>(torch::optim::SGDOptions(o.lr)
                                                                .momentum(o.momentum)
                                                                .nesterov(o.nesterov)
                                                                .weight_decay(wd));
        }),
        torch::optim::SGDOptions(o.lr));
  }
  if (o.optimizer == "adam") {
    return std::make_unique<torch::optim::Adam>(
        groups([&](double wd) {
          return std::make_unique<torch::optim::AdamOptions>(
              torch::optim::AdamOptions(o.lr).betas({o.beta1, o.beta2}).eps(o.eps).weight_decay(wd));
        }),
        torch::optim::AdamOptions(o.lr));
  }
  return std::make_unique<torch::optim::AdamW>(
      groups([&](double wd) {
        return std::make_unique<torch::optim::AdamWOptions>(
            torch::optim::AdamWOptions(o.lr).betas({o.beta1, o.beta2}).eps(o.eps).weight_decay(wd));
      }),
      torch::optim::AdamWOptions(o.lr));
}

double LearningRate(const OptimOptions& o, int64_t step, int64_t total_steps, int64_t steps_per_epoch) {
  const double t = static_cast<double>(step);
  const double total = static_cast<double>(std::max<int64_t>(1, total_steps));
  if (o.schedule == "onecycle") {  // PyTorch OneCycleLR, cosine annealing, no momentum cycling
    double rise = std::max(1.0, o.onecycle_pct * total);
    double init = o.lr / o.onecycle_div, final_lr = init / o.onecycle_final_div;
    if (t < rise) return init + (o.lr - init) * (1 - std::cos(M_PI * t / rise)) / 2;
    double f = std::min(1.0, (t - rise) / std::max(1.0, total - rise));
    return final_lr + (o.lr - final_lr) * (1 + std::cos(M_PI * f)) / 2;
  }
  double warm = o.warmup_epochs * static_cast<double>(steps_per_epoch);
  if (t < warm) return o.lr * (t + 1) / warm;
  if (o.schedule == "constant") return o.lr;
  if (o.schedule == "step") {
    double epoch = t / static_cast<double>(std::max<int64_t>(1, steps_per_epoch));
    return o.lr * std::pow(o.gamma, std::floor(epoch / o.step_epochs));
  }
  double f = std::min(1.0, (t - warm) / std::max(1.0, total - warm));  // cosine
  return o.min_lr + (o.lr - o.min_lr) * (1 + std::cos(M_PI * f)) / 2;
}

void SetLearningRate(torch::optim::Optimizer& opt, double lr) {
  for (auto& g : opt.param_groups()) g.options().set_lr(lr);
}

void SetLearningRate(torch::optim::Optimizer& opt, double lr, const std::vector<double>& scales) {
  auto& groups = opt.param_groups();
  for (size_t i = 0; i < groups.size(); ++i) groups[i].options().set_lr(lr * (i < scales.size() ? scales[i] : 1.0));
}

std::string SerializeOptimizer(torch::optim::Optimizer& opt) {
  torch::serialize::OutputArchive archive;
  opt.save(archive);
  std::ostringstream os;
  archive.save_to(os);
  return os.str();
}

void DeserializeOptimizer(torch::optim::Optimizer& opt, const std::string& bytes) {
  torch::serialize::InputArchive archive;
  std::istringstream is(bytes);
  try {
    archive.load_from(is);
    opt.load(archive);
  } catch (const c10::Error& e) {
    throw Error(Msg("optimizer state does not match this optimizer (different --optimizer or "
                    "model?): ", e.what_without_backtrace()));
  }
}

std::string TorchRngState() {
  at::Generator gen = at::detail::getDefaultCPUGenerator();
  std::lock_guard<std::mutex> lock(gen.mutex());
  torch::Tensor s = gen.get_state();
  return std::string(reinterpret_cast<const char*>(s.data_ptr<uint8_t>()), static_cast<size_t>(s.numel()));
}

void SetTorchRngState(const std::string& bytes) {
  torch::Tensor s = torch::empty({static_cast<int64_t>(bytes.size())}, torch::kUInt8);
  std::memcpy(s.data_ptr<uint8_t>(), bytes.data(), bytes.size());
  at::Generator gen = at::detail::getDefaultCPUGenerator();
  std::lock_guard<std::mutex> lock(gen.mutex());
  gen.set_state(s);
}

std::vector<std::string> CudaRngStates() {
  std::vector<std::string> out;
  if (!torch::cuda::is_available()) return out;
  for (int64_t i = 0; i < static_cast<int64_t>(torch::cuda::device_count()); ++i) {
    at::Generator gen = at::globalContext().defaultGenerator(at::Device(at::kCUDA, static_cast<c10::DeviceIndex>(i)));
    std::lock_guard<std::mutex> lock(gen.mutex());
    torch::Tensor s = gen.get_state();
    out.emplace_back(reinterpret_cast<const char*>(s.data_ptr<uint8_t>()), static_cast<size_t>(s.numel()));
  }
  return out;
}

size_t SetCudaRngStates(const std::vector<std::string>& states) {
  const size_t n = torch::cuda::is_available() ? static_cast<size_t>(torch::cuda::device_count()) : 0;
  const size_t m = std::min(n, states.size());
  for (size_t i = 0; i < m; ++i) {
    const std::string& bytes = states[i];
    torch::Tensor s = torch::empty({static_cast<int64_t>(bytes.size())}, torch::kUInt8);
    std::memcpy(s.data_ptr<uint8_t>(), bytes.data(), bytes.size());
    at::Generator gen = at::globalContext().defaultGenerator(at::Device(at::kCUDA, static_cast<c10::DeviceIndex>(i)));
    std::lock_guard<std::mutex> lock(gen.mutex());
    gen.set_state(s);
  }
  return m;
}

void LossScaler::Restore(double scale, int good_steps) {
  if (!std::isfinite(scale) || scale <= 0 || good_steps < 0)
    throw Error(Msg("resume: invalid saved loss-scaler state (scale ", scale, ", good steps ", good_steps, ")"));
  scale_ = scale;
  good_steps_ = good_steps;
}

bool LossScaler::UnscaleAndCheck(const std::vector<torch::Tensor>& params) {
  torch::NoGradGuard no_grad;
  bool finite = true;
  for (const auto& p : params) {
    if (!p.grad().defined()) continue;
    p.grad().mul_(1.0 / scale_);
    finite = finite && torch::isfinite(p.grad()).all().item<bool>();
  }
  if (!finite) {
    scale_ /= 2;
    good_steps_ = 0;
    for (const auto& p : params)
      if (p.grad().defined()) p.grad().zero_();
    return false;
  }
  if (++good_steps_ >= growth_interval_) {
    scale_ *= 2;
    good_steps_ = 0;
  }
  return true;
}

}  // namespace mlfd
