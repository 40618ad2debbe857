// Checkpoints (format "mlfd.checkpoint", docs/formats.md): every parameter and buffer under its
// dotted module path in /state, the model config and per-head class names as attributes, the
// optimizer and RNG state and epoch for exact resume, and provenance. Loading is strict: missing,
// unexpected and mis-shaped keys are all listed, with both shapes.
#pragma once

#include <torch/torch.h>

#include <nlohmann/json.hpp>
#include <map>
#include <string>
#include <vector>

#include "data/image_store.h"
#include "models/model.h"

namespace mlfd {

namespace h5 {
class File;
}
struct Provenance;

inline constexpr const char* kCheckpointFormat = "mlfd.checkpoint";
inline constexpr int kCheckpointVersion = 1;

// What a head predicts: the dataset it was trained on, its classes and its input normalisation.
struct HeadInfo {
  std::string dataset;                   // image store name
  std::vector<std::string> class_names;
  std::vector<double> mean, std;         // per channel, [0,1] units
  int height = 0, width = 0, channels = 0;  // stored image size the model was trained on
  int frames = 0;  // video networks: frames per clip the model was trained on (0: an image network)
  std::string store_sha256;              // fingerprint of the training store
  int64_t label_offset = 0;  // concatenated label space: this dataset's first label in the head
  int head = 0;              // which head of the network predicts this dataset
  RowFold train_fold;        // trained without this fold of the training split (train_teacher --fold)
  nlohmann::json ToJson() const;
  static HeadInfo FromJson(const nlohmann::json& j, const std::string& where);
};

struct CheckpointMeta {
  std::string kind = "teacher";  // teacher | joint_baseline | student | ...
  ModelConfig model;
  std::vector<HeadInfo> datasets;  // one per dataset the network predicts
  int64_t epoch = 0;               // epochs completed
  nlohmann::json metrics = nlohmann::json::object();  // e.g. best validation accuracy
  // Finds the entry for a dataset by name; throws Error listing the datasets if absent.
  const HeadInfo& Dataset(const std::string& name, const std::string& path) const;
};

// Training state for exact resume.
struct TrainState {
  std::string optimizer_archive;  // torch::optim state, serialised by LibTorch's archive
  std::string torch_rng_state;    // CPU generator state bytes
  std::vector<std::string> cuda_rng_states;  // per CUDA device (none on CPU-only machines)
  std::map<std::string, std::string> group_optimizers;  // ParamGroup name -> its optimiser archive
  double loss_scale = 0;          // fp16 loss scaler (0 = not recorded)
  int64_t loss_scale_good_steps = 0;
  int64_t global_step = 0;
  double best_metric = -1.0;
  int64_t best_epoch = -1;
  nlohmann::json extra = nlohmann::json::object();
  // What shapes the trajectory (optimiser options, epochs, seed, steps per epoch): --resume refuses
  // a run whose recipe differs. Null in checkpoints written before it was recorded.
  nlohmann::json recipe;
};

void WriteModelState(h5::File& f, const std::string& group, torch::nn::Module& module);
// Strict: every parameter/buffer of `module` must be present with the same shape, and nothing
// else may be in the group. Errors list every problem with both shapes.
void ReadModelStateStrict(const h5::File& f, const std::string& group, torch::nn::Module& module);

// Writes a checkpoint atomically to `path` (refusing to overwrite a file that is not a checkpoint).
// `aux` (training-only modules) is stored with the training state under /train_state/aux.
void SaveCheckpoint(const std::string& path, torch::nn::Module& net, const CheckpointMeta& meta,
                    const TrainState* state, const Provenance& provenance, torch::nn::Module* aux = nullptr);

struct LoadedCheckpoint {
  Net net{nullptr};
  CheckpointMeta meta;
  bool has_train_state = false;
  TrainState state;
  std::string sha256;
};
// Rebuilds the network from the checkpoint's config and loads its weights strictly (on CPU; move
// it to the device afterwards).
LoadedCheckpoint LoadCheckpoint(const std::string& path, bool with_train_state = false);
CheckpointMeta ReadCheckpointMeta(const h5::File& f);

}  // namespace mlfd
