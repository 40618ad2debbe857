// Distillation losses as composable terms (docs/mlfd.md, "How the methods fit together"): a student loss is a list of
// weighted terms, each naming the student and teacher signals it reads. Training-only adapters
// (regressors) are modules owned by the term and registered in the run's auxiliary module, so
// they are trained and resumed with the student but never exported.
#pragma once

#include <torch/torch.h>

#include <map>
#include <memory>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "models/model.h"
#include "train/trainer.h"

namespace mlfd {

// What one batch offers the terms.
struct Signals {
  LevelMap student;               // student levels (with "logits")
  std::vector<LevelMap> teachers; // per teacher: its levels ("logits" in the student's label space)
  torch::Tensor labels;           // int64 N
  // A mixed batch (--mix): each image holds `mix` of its own and 1 - mix of the image labelled
  // labels_b (undefined when the batch is not mixed); the label term weighs the two labels so.
  torch::Tensor labels_b;
  double mix = 1.0;
  double progress = 0;            // fraction of training done before this step, in [0, 1)
  int64_t epoch = 0;              // 0-based epoch of this step
  const LevelMap& teacher(size_t k = 0) const { return teachers.at(k); }
};

// A teacher signal a term reads: teacher index and level name.
struct TeacherLevel {
  int teacher = 0;
  std::string level;
};

class LossTerm {
 public:
  LossTerm(std::string name, double weight) : name_(std::move(name)), weight_(weight) {}
  virtual ~LossTerm() = default;
  const std::string& name() const { return name_; }
  double weight() const { return weight_; }
  virtual std::vector<std::string> student_levels() const { return {}; }
  virtual std::vector<TeacherLevel> teacher_levels() const { return {}; }
  // Training-only modules of the term trained by the run's optimiser (nullptr = none); their
  // parameters and buffers (e.g. running statistics) are resumed with the student, never exported.
  virtual std::shared_ptr<torch::nn::Module> adapter() { return nullptr; }
  // The unweighted value (scalar).
  virtual torch::Tensor Compute(const Signals& s) = 0;
  // Sub-values of the last Compute() to log (e.g. per-teacher errors), keyed by a name suffix.
  virtual std::map<std::string, double> Details() const { return {}; }
  // Parameters of adapter() that the trainer steps with an optimiser of their own instead of the
  // run's (e.g. AMTML-KD's weighting); still zeroed, unscaled, clipped and resumed by the trainer.
  virtual std::vector<ParamGroup> param_groups() { return {}; }
  // What the description of the loss adds for this term, e.g. "T = 4" ("" = nothing).
  virtual std::string note() const { return ""; }
  // Moves constant tensors outside adapter() to the training device.
  virtual void To(torch::Device) {}

 private:
  std::string name_;
  double weight_;
};

// Cross-entropy with the labels (label smoothing optional); on a mixed batch
// mix * CE(labels) + (1 - mix) * CE(labels_b).
std::unique_ptr<LossTerm> MakeCeTerm(double weight, double label_smoothing);
// Hinton's soft-target loss: T^2 * CE(softmax(zT/T), log_softmax(zS/T)), batch mean.
std::unique_ptr<LossTerm> MakeKdTerm(double weight, double temperature, int teacher = 0);
// MSE between a student level (through `regressor`: "conv" = a 1x1 Conv2d for maps, a 1x1x1 Conv3d
// for clip maps, a linear layer for vectors; "none"; or "auto" = one only when the channels differ)
// and a teacher level. `map_dims`: 4 for N x C x H x W maps, 5 for N x C x T x H x W clip maps
// (video networks), 0 for N x C vectors. `pool`: average-pool the larger map to the smaller one on
// a size mismatch (H, W, and T of clip maps; else an error naming both sizes).
std::unique_ptr<LossTerm> MakeHintTerm(double weight, const std::string& student_level,
                                       int student_channels, const std::string& teacher_level,
                                       int teacher_channels, int map_dims,
                                       const std::string& regressor, bool pool, int teacher = 0);

// The soft-target loss itself (exposed for tests): mean over the batch.
torch::Tensor SoftTargetLoss(const torch::Tensor& student_logits, const torch::Tensor& teacher_logits,
                             double temperature);

// Brings two maps (N x C x H x W) or two clip maps (N x C x T x H x W) to one size: per dimension
// the smaller of the two, by adaptive average pooling of the larger (`pool`), else Error naming
// both sizes. Vectors and maps of equal size pass unchanged; a 4-d and a 5-d level are refused.
std::pair<torch::Tensor, torch::Tensor> MatchSpatial(const torch::Tensor& a, const torch::Tensor& b, bool pool,
                                                     const std::string& what);

}  // namespace mlfd
