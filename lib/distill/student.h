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
//   ce         CE only (the student trained alone, with this stage's recipe)
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
  std::string features;                    // cached: extract_features output of the teacher on this store
  bool pool_mismatch = false;              // average-pool the larger map on a spatial mismatch
  std::string train_split = "train";
  std::string val_split = "val";

  void Register(boost::program_options::options_description& d);
  void Check() const;
};

std::vector<std::string> MethodNames();

// One feature pair of the loss.
struct LevelPair {
  std::string student, teacher;
  double weight = 0;
  std::string regressor = "auto";  // auto | conv | none
};

// The loss terms of a method for this teacher/student pair (options override the preset).
struct ResolvedLoss {
  double temperature = 0, w_kd = 0, w_ce = 0;
  std::vector<LevelPair> pairs;
  std::vector<std::string> TeacherLevels() const;  // what the teacher has to provide
};
ResolvedLoss ResolveLoss(const StudentOptions& opts, Net& teacher, Net& student);

TrainResult DistillStudent(const std::string& teacher, const std::string& store, const std::string& out,
                           const StudentOptions& opts, Provenance provenance);

}  // namespace mlfd
