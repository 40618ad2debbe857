// Stage 2 of MLFD: build_joint (assemble T* from stage-1 teachers) and finetune_joint (train its
// adaptors, fusion trunk and heads on samples of every dataset of the group, with teacher maps
// computed online on the augmented view or read from a feature cache of clean images).
#pragma once

#include <boost/program_options.hpp>
#include <string>
#include <vector>

#include "train/teacher.h"
#include "train/trainer.h"

namespace mlfd {

struct Provenance;  // util/provenance.h

struct BuildJointOptions {
  std::vector<std::string> levels;  // fusion level: one for all teachers, or one per teacher
                                    // (empty = each teacher's last map level)
  int adaptor_dim = 512;            // S
  int cout = 0;                     // 0 = the channels of teacher 0 at the level `stages` below the fusion level
  int stages = 0;                   // stride-2 3x3 stages after the trunk
  int input_size = 0;               // 0 = teacher 0's training size
  std::string fuse_pool = "none";   // none (sizes must agree) | adaptive (pool to the smallest)
  std::vector<std::string> heads;   // datasets with a head (empty = every teacher's dataset)
  double dropout = 0.5;             // before each head
  bool embed_teachers = false;      // copy the teachers' weights into the checkpoint
  bool residual_logits = false;     // head d starts from (adds) dataset d's own teacher's logits
  uint64_t seed = 0;

  void Register(boost::program_options::options_description& d);
  void Check() const;
};

// Writes the initial T* checkpoint (kind "joint") and returns a JSON summary.
nlohmann::json BuildJoint(const std::vector<std::string>& teachers, const std::string& out,
                          const BuildJointOptions& opts, Provenance provenance);

struct FinetuneJointOptions : StageOptions {
  // proportional: each batch mixes datasets in proportion to their sizes (one pass over the union
  // per epoch); equal: the same number of samples of each dataset per batch; per_dataset: every
  // step has a full batch of every dataset.
  std::string sampling = "proportional";
  std::string teacher_maps = "online";  // online (augmented view) | cached (clean images)
  std::vector<std::string> features;    // cached: one feature cache per store, same order
  bool unfreeze_last_stage = false;
  double unfreeze_lr_scale = 0.1;       // learning rate of the unfrozen stage, relative
  // all: every training row; held-out: of each dataset only the rows its own teacher never saw
  // (the fold it was trained without, train_teacher --fold), so T* is fitted on maps of unseen images.
  std::string fit_rows = "all";
  double input_dropout = 0;  // channel dropout of the teachers' maps before the adaptors (training)
  double input_noise = 0;    // Gaussian noise on them, relative to each map's standard deviation

  FinetuneJointOptions() : StageOptions(0.1) {}

  void Register(boost::program_options::options_description& d);
  void Check() const;
};

TrainResult FinetuneJoint(const std::string& init, const std::vector<std::string>& stores,
                          const std::string& out, const FinetuneJointOptions& opts, Provenance provenance);

}  // namespace mlfd
