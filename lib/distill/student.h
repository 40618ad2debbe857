// Stage 3 of MLFD (distill_student): a randomly initialised student for one dataset, trained with
// a composed loss (distill/losses.h) against a frozen teacher (the joint teacher T*, or a stage-1
// teacher for the KD and FitNet baselines) whose signals come from a feature cache of clean images
// or from the teacher run online on the same augmented view.
//
// Methods (presets; every weight and level pair can be overridden):
//   mlfd       KD (T=2, 0.6) + MSE at every fused level and the dense level (0.2 each) + CE (0.2)
//   mlfd_code  KD (T=2, 0.6) + MSE at the last map (0.2) + CE (0.2), as the official code
//   kd         KD (T=4, 0.9) + CE (0.1)
//   fitnet     MSE hint at the middle map level through a 1x1 regressor (1.0) + CE (1.0)
//   ce         CE only (the student trained alone, with this stage's recipe; no teacher needed)
// Multi-teacher methods (distill/multi_teacher.h; any number of --teacher):
//   unic       UNIC: projector ladder, running teacher standardisation, teacher dropping (1.0) + CE (1.0)
//   amtml      AMTML-KD: instance-weighted integrated soft target (T=5, alpha 0.7), RKD angle,
//              multi-group hints + CE (1 - alpha)
//   mtkd       uniform multi-teacher KD: amtml with uniform weights, no RKD, no hints
//   feed       FEED: parallel non-linear transforms of the last map, beta 500 * L1 of normalised maps + CE
#pragma once

#include <boost/program_options.hpp>
#include <memory>
#include <string>
#include <vector>

#include "distill/losses.h"
#include "train/teacher.h"
#include "train/trainer.h"
#include "util/provenance.h"

namespace mlfd {

struct StudentOptions {
  ModelOptions model;
  std::string like;  // take arch/width/stem/embed from this checkpoint (e.g. the dataset's teacher)
  AugmentOptions augment;
  OptimOptions optim;
  TrainLoopOptions loop;
  int64_t batch_size = 128;
  std::string method = "mlfd";
  double temperature = 0;  // 0 = the method's default
  double w_kd = -1, w_ce = -1, w_feat = -1;  // < 0 = the method's default
  std::vector<std::string> pairs;  // "student_level:teacher_level[:weight[:regressor]]" (replace the preset's)
  double label_smoothing = 0.0;    // of the CE term
  std::string teacher_signals = "online";  // online | cached
  std::vector<std::string> features;       // cached: extract_features output of each teacher on this store
  bool pool_mismatch = false;              // average-pool the larger map on a spatial mismatch
  std::string train_split = "train";
  std::string val_split = "val";
  // Multi-teacher methods: per-teacher levels (empty entry = the default: the last map, and the
  // dense vector: "embed" or "pool"; "pool" for the joint teacher) and the student's map level.
  std::vector<std::string> teacher_map_levels, teacher_vector_levels;
  std::string student_level;  // default: the student's last map
  // UNIC
  std::vector<std::string> unic_stages;  // default: every student map level but the stem
  int unic_hidden = 768, unic_hidden_last = 0;  // 0 = twice --unic-hidden
  double unic_drop_p = 0.5, unic_momentum_start = 1.0, unic_momentum_end = 0.001;
  std::string unic_targets = "both";  // both | vector | map
  // AMTML-KD (mtkd: weights uniform, no RKD, no hints)
  std::string amtml_weights = "instance", amtml_pool = "avg", amtml_schedule = "joint", amtml_hints = "stages";
  std::vector<double> amtml_teacher_weights;
  double amtml_alpha = 0.7, amtml_reg = 0.1, amtml_w_angle = 1.0, amtml_w_dist = 0.0, amtml_w_hint = 1.0,
         amtml_lr = 1e-3;
  bool amtml_detach = false;
  int amtml_phase1_epochs = 1;
  // FEED
  double feed_beta = 500;
  std::string feed_norm = "flat";  // flat | position

  void Register(boost::program_options::options_description& d);
  void Check() const;
};

std::vector<std::string> MethodNames();
bool IsMultiTeacherMethod(const std::string& method);

// One feature pair of the loss.
struct LevelPair {
  std::string student, teacher;
  double weight = 0;
  std::string regressor = "auto";  // auto | conv | none

  // Parses one --pairs entry "student:teacher[:weight[:auto|conv|none]]" (a missing or empty weight
  // is `default_weight`). False with `why` set when a field is bad: the count of fields, an empty
  // level, a weight that is not a finite number >= 0, an unknown regressor.
  static bool TryParse(const std::string& spec, double default_weight, LevelPair* out, std::string* why);
  // The same, throwing UsageError "--pairs: <why>".
  static LevelPair Parse(const std::string& spec, double default_weight);
};

// The loss terms of a method for this teacher/student pair (options override the preset).
struct ResolvedLoss {
  double temperature = 0, w_kd = 0, w_ce = 0;
  std::vector<LevelPair> pairs;
  std::vector<std::string> TeacherLevels() const;  // what the teacher has to provide
};
ResolvedLoss ResolveLoss(const StudentOptions& opts, Net& teacher, Net& student);

// The loss terms of a multi-teacher method. `teacher_shapes[k]` gives the shape of every level of
// teacher k (one probe forward), `student_shapes` the student's.
std::vector<std::unique_ptr<LossTerm>> MultiTeacherTerms(const StudentOptions& opts, std::vector<Net>& teachers,
                                                         Net& student);

// `teachers`: one for mlfd, mlfd_code, kd and fitnet; none or one for ce; any number for the
// multi-teacher methods.
TrainResult DistillStudent(const std::vector<std::string>& teachers, const std::string& store, const std::string& out,
                           const StudentOptions& opts, Provenance provenance);

}  // namespace mlfd
