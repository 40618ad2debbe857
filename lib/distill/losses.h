// Distillation losses as composable terms (METHODS.md section 5): a student loss is a list of
// weighted terms, each naming the student and teacher signals it reads. Training-only adapters
// (regressors) are modules owned by the term and registered in the run's auxiliary module, so
// they are trained and resumed with the student but never exported.
#pragma once

#include <torch/torch.h>

#include <memory>
#include <string>
#include <vector>

#include "models/model.h"

namespace mlfd {

// What one batch offers the terms.
struct Signals {
  LevelMap student;       // student levels (with "logits")
  LevelMap teacher;       // teacher levels ("logits" in the student's label space)
  torch::Tensor labels;   // int64 N
};

class LossTerm {
 public:
  LossTerm(std::string name, double weight) : name_(std::move(name)), weight_(weight) {}
  virtual ~LossTerm() = default;
  const std::string& name() const { return name_; }
  double weight() const { return weight_; }
  virtual std::vector<std::string> student_levels() const { return {}; }
  virtual std::vector<std::string> teacher_levels() const { return {}; }
  // Training-only parameters of the term (nullptr = none).
  virtual std::shared_ptr<torch::nn::Module> adapter() { return nullptr; }
  // The unweighted value (scalar).
  virtual torch::Tensor Compute(const Signals& s) = 0;

 private:
  std::string name_;
  double weight_;
};

// Cross-entropy with the labels (label smoothing optional).
std::unique_ptr<LossTerm> MakeCeTerm(double weight, double label_smoothing);
// Hinton's soft-target loss: T^2 * CE(softmax(zT/T), log_softmax(zS/T)), batch mean.
std::unique_ptr<LossTerm> MakeKdTerm(double weight, double temperature);
// MSE between a student level (through `regressor`: "conv" 1x1 conv for maps / linear for vectors,
// "none", or "auto" = one only when the channels differ) and a teacher level. `pool`: average-pool
// the larger map to the smaller one on a spatial mismatch (else an error naming both sizes).
std::unique_ptr<LossTerm> MakeHintTerm(double weight, const std::string& student_level, int student_channels,
                                       const std::string& teacher_level, int teacher_channels, bool map,
                                       const std::string& regressor, bool pool);

// The soft-target loss itself (exposed for tests): mean over the batch.
torch::Tensor SoftTargetLoss(const torch::Tensor& student_logits, const torch::Tensor& teacher_logits,
                             double temperature);

// Brings two maps to one spatial size (adaptive average pooling of the larger) or throws.
std::pair<torch::Tensor, torch::Tensor> MatchSpatial(const torch::Tensor& a, const torch::Tensor& b, bool pool,
                                                     const std::string& what);

}  // namespace mlfd
