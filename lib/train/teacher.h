// Stage 1 (train_teacher): one backbone + MLFD head trained on one image store, or the
// joint-training baseline on several (one concatenated label space with per-dataset offsets, or
// one head per dataset with loss weights 1/m), batches drawn from every dataset each step. A video
// network (r3d_18, mc3_18, r2plus1d_18) trains the same way on clip stores.
#pragma once

#include <boost/program_options.hpp>
#include <string>
#include <vector>

#include "train/stage.h"

namespace mlfd {

// batch_size is per step, split equally over the datasets.
struct TeacherOptions : StageOptions {
  ModelOptions model;
  std::string label_space = "heads";   // several stores: heads | concat
  std::string fold;                    // "i/k": train without fold i of k of each training split
  uint64_t fold_seed = 0;              // the folds' draw (not the training seed: fold teachers of
                                       // every seed share their folds)
  int clip_frames = 0;                 // video networks: frames per training clip (0 = all stored)
  TeacherOptions() : StageOptions(0.1) {}
  void Register(boost::program_options::options_description& d);
  void Check() const;
};

// Trains and writes the best checkpoint (by mean validation top-1) to `out`.
TrainResult TrainTeacher(const std::vector<std::string>& stores, const std::string& out,
                         const TeacherOptions& opts, Provenance provenance);

}  // namespace mlfd
