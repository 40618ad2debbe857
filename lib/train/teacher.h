// Stage 1 (train_teacher): one backbone + MLFD head trained on one image store, or the
// joint-training baseline on several (one concatenated label space with per-dataset offsets, or
// one head per dataset with loss weights 1/m), batches drawn from every dataset each step.
#pragma once

#include <boost/program_options.hpp>
#include <string>
#include <vector>

#include "data/augment.h"
#include "models/model.h"
#include "train/optim.h"
#include "train/trainer.h"

namespace mlfd {

// Model options shared by every stage that builds a network.
struct ModelOptions {
  std::string arch = "resnet18";
  double width = 1.0;
  bool small_stem = false;
  int embed_dim = 2048;
  double dropout = 0.0;
  double drop_path = 0.0;
  void Register(boost::program_options::options_description& d, const std::string& prefix = "");
  void Check(const std::string& prefix = "") const;
  // The config for `in_channels` and heads (validated).
  ModelConfig ToConfig(int in_channels, std::vector<int> head_classes,
                       std::vector<std::string> head_names) const;
};

// Augmentation options (training); the evaluation transform uses only --size.
struct AugmentOptions {
  int size = 0;  // 0 = stored size
  int pad = 0;
  bool rrc = false;
  double rrc_scale_min = 0.08;
  bool hflip = false;
  bool autoaugment = false;
  void Register(boost::program_options::options_description& d, const std::string& prefix = "");
  void Check(const std::string& prefix = "") const;
  AugmentConfig Train() const;
  AugmentConfig Eval() const;
};

struct TeacherOptions {
  ModelOptions model;
  AugmentOptions augment;
  OptimOptions optim;
  TrainLoopOptions loop;
  int64_t batch_size = 128;            // per step, split equally over the datasets
  double label_smoothing = 0.1;
  std::string label_space = "heads";   // several stores: heads | concat
  std::string train_split = "train";
  std::string val_split = "val";
  void Register(boost::program_options::options_description& d);
  void Check() const;
};

// Trains and writes the best checkpoint (by mean validation top-1) to `out`.
TrainResult TrainTeacher(const std::vector<std::string>& stores, const std::string& out,
                         const TeacherOptions& opts, Provenance provenance);

}  // namespace mlfd
