// Multi-teacher loss terms of the related methods (docs/methods.md), composed with the
// terms of distill/losses.h by distill_student:
//   UNIC      projector ladder + running teacher standardisation + cosine/smooth-L1 + teacher dropping
//   AMTML-KD  instance-adaptive teacher weights, integrated soft target (KL), RKD angle/distance,
//             multi-group hints on channel-normalised maps
//   FEED      parallel non-linear feature transforms, L2-normalised maps, L1 distance
// Every adapter (projectors, regressors, NTLs, weighting parameters) exists only during training.
// The closed forms are exposed for the tests.
#pragma once

#include <torch/torch.h>

#include <memory>
#include <string>
#include <vector>

#include "distill/losses.h"

namespace mlfd {

// ---------------------------------------------------------------- UNIC
// Momentum of the teacher standardisation after `progress` (0..1) of training: a cosine from
// `start` to `end`.
double UnicMomentum(double progress, double start = 1.0, double end = 0.001);
// Standardises x (N x D, N x D x H x W or N x D x T x H x W: statistics over images and positions)
// per dimension with the running mean/std, then moves them towards the batch's statistics: stat =
// (1 - m) * stat + m * batch_stat. Returns the standardised x (from the old statistics).
torch::Tensor StandardizeAndUpdate(const torch::Tensor& x, torch::Tensor& mean, torch::Tensor& std, double momentum);
// Per-image loss between a prediction and its target: 0.5 * (1 - cos) + 0.5 * SmoothL1(beta 1,
// mean over dimensions); for maps (N x D x H x W, or T x H x W) per position along D, then the mean
// over positions.
torch::Tensor UnicPerImageLoss(const torch::Tensor& pred, const torch::Tensor& target);
// Teacher dropping. `loss` N x K (per image and teacher), `uniform` N x K draws in [0, 1): teacher
// k of image i is dropped when uniform < p, except the teacher with the largest loss of each image,
// which is always kept. Returns the coefficients (0 or 1) divided by their sum over the batch.
torch::Tensor TeacherDropCoefficients(const torch::Tensor& loss, double p, const torch::Tensor& uniform);
// Truncated normal (at +-2 std) initialisation, as timm's trunc_normal_.
void TruncNormal_(torch::Tensor t, double std);

struct UnicTeacher {
  std::string vector_level, map_level;  // the teacher's pooled vector ("CLS") and final map
  int vector_dim = 0, map_channels = 0;
};
struct UnicSpec {
  std::vector<std::string> stages;   // student map levels feeding the ladder
  std::vector<int> stage_channels;
  std::vector<UnicTeacher> teachers;
  int hidden = 768, hidden_last = 1536;
  double drop_p = 0.5;
  double momentum_start = 1.0, momentum_end = 0.001;
  bool vector_target = true, map_target = true;
  bool clips = false;  // video student and teachers: maps are N x C x T x H x W (1x1x1 projectors)
};
std::unique_ptr<LossTerm> MakeUnicTerm(double weight, const UnicSpec& spec);

// ---------------------------------------------------------------- AMTML-KD
// Instance weights: softmax over teachers of a_ik = w . (beta_i * theta_k). beta N x C,
// w C, theta K x C -> N x K.
torch::Tensor AmtmlInstanceWeights(const torch::Tensor& beta, const torch::Tensor& w, const torch::Tensor& theta);
// q_i = sum_k weights_ik softmax(z_ik / T); teacher_logits K tensors of N x classes.
torch::Tensor IntegratedTarget(const torch::Tensor& weights, const std::vector<torch::Tensor>& teacher_logits,
                               double temperature);
// T^2 * KL(q || softmax(zs / T)), mean over images.
torch::Tensor KlToTarget(const torch::Tensor& q, const torch::Tensor& student_logits, double temperature);
// Relational KD (Park et al.) between two embeddings N x D: the pairwise-distance loss (distances
// divided by their mean over pairs) and the angle loss over triplets, both smooth-L1, mean reduction.
torch::Tensor RkdDistance(const torch::Tensor& student, const torch::Tensor& teacher);
torch::Tensor RkdAngle(const torch::Tensor& student, const torch::Tensor& teacher);

struct AmtmlSpec {
  int teachers = 0;
  std::string student_map;  // level pooled into beta
  int student_channels = 0;
  std::string weights = "instance";  // instance | teacher | uniform
  std::vector<double> fixed_teacher_weights;  // teacher mode: fixed (frozen) weights; empty = learned
  std::string pool = "avg";          // avg | max
  double reg = 0.1;
  bool detach = false;               // no gradient from the weighting into the student
  double temperature = 5, alpha = 0.7;
  double w_angle = 1.0, w_dist = 0.0;
  std::string schedule = "joint";    // joint | two_phase
  int phase1_epochs = 1;             // two_phase: epochs in which the weighting is trained
  double lr = 1e-3;                  // the weighting's own Adam optimiser
};
// The integrated-target term: alpha * T^2 * KL(q || p_S) + w_angle * RKD angle + w_dist * RKD
// distance (student probabilities vs q) + reg * (|w|^2 + sum |theta_k|^2). Logs kl, angle, dist, reg
// and the mean weight of each teacher.
std::unique_ptr<LossTerm> MakeAmtmlTerm(const AmtmlSpec& spec);
// One hint of the multi-group hints: 1x1 regressor (no bias, U[-0.005, 0.005]) on the
// channel-L2-normalised student map, MSE to the channel-L2-normalised teacher map; the larger map
// is average-pooled on a size mismatch. `clips`: clip maps (N x C x T x H x W), a 1x1x1 regressor.
std::unique_ptr<LossTerm> MakeNormalizedHintTerm(double weight, int teacher,
                                                 const std::string& teacher_level,
                                                 int teacher_channels,
                                                 const std::string& student_level,
                                                 int student_channels, bool clips = false);

// ---------------------------------------------------------------- FEED
// L2-normalises every sample: "flat" over the whole flattened map, "position" along the channels.
torch::Tensor FeedNormalize(const torch::Tensor& x, const std::string& mode);
// mean | a/|a| - b/|b| | over every element.
torch::Tensor FeedDistance(const torch::Tensor& student, const torch::Tensor& teacher, const std::string& mode);

struct FeedTeacher {
  std::string level;
  int channels = 0;
};
struct FeedSpec {
  std::string student_level;
  int student_channels = 0;
  std::vector<FeedTeacher> teachers;
  std::string norm = "flat";  // flat | position
  bool clips = false;  // clip maps (N x C x T x H x W): the transforms use 3x3x3 convolutions
};
// sum over teachers of FeedDistance(NTL_n(x_S), x_T_n); logs each teacher's reconstruction error.
std::unique_ptr<LossTerm> MakeFeedTerm(double beta, const FeedSpec& spec);

}  // namespace mlfd
