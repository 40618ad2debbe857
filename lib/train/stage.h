// The setup every training stage shares (train_teacher, finetune_joint, distill_student): the
// options they have in common, and one Stage object that chooses the device once, checks the
// outputs before any heavy work, opens and fingerprints the inputs, builds the loaders and the
// validation, and runs the loop. A stage file then holds only its model, its loss and its metadata.
#pragma once

#include <boost/program_options.hpp>
#include <memory>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "data/augment.h"
#include "data/loader.h"
#include "eval/metrics.h"
#include "io/feature_cache.h"
#include "models/checkpoint.h"
#include "models/model.h"
#include "train/optim.h"
#include "train/trainer.h"
#include "util/provenance.h"

namespace mlfd {

class ImageStore;
class ClipStore;

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

// The options of every training stage: augmentation, optimiser, loop, batch size, label smoothing
// of the cross-entropy, and the two splits (the validation split selects the best epoch; it is
// never the test split). The stages' option structs derive from it.
struct StageOptions {
  AugmentOptions augment;
  OptimOptions optim;
  TrainLoopOptions loop;
  int64_t batch_size = 128;
  double label_smoothing;
  std::string train_split = "train";
  std::string val_split = "val";

  explicit StageOptions(double default_label_smoothing) : label_smoothing(default_label_smoothing) {}
  // `batch_help` and `smoothing_help` say what the two mean in this stage.
  void Register(boost::program_options::options_description& d, const std::string& batch_help,
                const std::string& smoothing_help);
  void Check() const;
  LoaderOptions TrainLoader() const;  // the training loader: augmentation, seed, batch dropping, threads
};

// What a model trained on `store` records about its input (classes, normalisation, size = `size`
// or the stored size, channels, the store's fingerprint); head 0, no label offset.
HeadInfo StoreHead(const ImageStore& store, int size = 0);
// The same for a video network trained on clips of `frames` frames (0 = all the store's T).
HeadInfo StoreHead(const ClipStore& store, int size = 0, int frames = 0);

// Cross-entropy in float32 with label smoothing, batch mean.
torch::Tensor CrossEntropy(const torch::Tensor& logits, const torch::Tensor& labels, double label_smoothing);
// One dataset's share of a multi-dataset step: adds `weight` x its cross-entropy to `out->loss`,
// logs it as term "ce_<dataset>" and counts its correct predictions.
void AddDatasetCrossEntropy(StepOutput* out, const torch::Tensor& logits, const torch::Tensor& labels, double weight,
                            double label_smoothing, const std::string& dataset);

// What a training stage prints on success (one JSON line): the checkpoint, best epoch, best
// validation top-1, epochs run, throughput, and `extra` merged in.
nlohmann::json TrainResultJson(const std::string& checkpoint, const TrainResult& r,
                               const nlohmann::json& extra = nlohmann::json::object());

// One training run's setup. Construction chooses the device and checks that the outputs can be
// written (before any data is read).
class Stage {
 public:
  Stage(const StageOptions& opts, std::string out, Provenance provenance);

  torch::Device device() const { return device_; }
  const StageOptions& options() const { return opts_; }
  Provenance& provenance() { return provenance_; }

  // Opens the stores (fingerprinted in the provenance as "store", or "store<i>" when `several`),
  // refuses a dataset given twice and stores without both splits.
  std::vector<std::shared_ptr<const ImageStore>> OpenStores(const std::vector<std::string>& paths, bool several);
  std::shared_ptr<const ImageStore> OpenStore(const std::string& path);
  // The same for clip stores (video networks).
  std::vector<std::shared_ptr<const ClipStore>> OpenClipStores(const std::vector<std::string>& paths, bool several);
  // Loads a checkpoint strictly and records it as input `key`.
  LoadedCheckpoint LoadInput(const std::string& key, const std::string& path);
  // Opens a feature cache and checks that it was made from `model` (path, sha256) over `store`
  // (path, fingerprint), holds `levels` (and `head`'s logits when `head_dataset` is given), loads
  // the training split's levels into memory within `memory_budget` bytes, and records it as `key`.
  std::unique_ptr<FeatureCache> OpenCache(const std::string& key, const std::string& path, const std::string& model_path,
                                          const std::string& model_sha256, const std::string& store_path,
                                          const std::string& store_fingerprint, const std::vector<std::string>& levels,
                                          int64_t memory_budget, const std::string& head_dataset = "",
                                          int head = 0);

  // Top-1 and NLL of `net`'s `info` head on the validation split of `store`.
  ClassificationMetrics Validate(Net& net, const HeadInfo& info, const std::shared_ptr<const ImageStore>& store,
                                 const AugmentConfig& eval);
  // Clips: the centred temporal crop of `info.frames` frames, in batches of at most --batch-size.
  ClassificationMetrics Validate(Net& net, const HeadInfo& info, const std::shared_ptr<const ClipStore>& store,
                                 const AugmentConfig& eval);
  // The validation record of a stage over its datasets (head infos[i] on stores[i]):
  // "<dataset>_top1" and "<dataset>_nll" each, and "metric" = their mean top-1 (what selects the
  // best epoch).
  nlohmann::json ValidateEach(Net& net, const std::vector<HeadInfo>& infos,
                              const std::vector<std::shared_ptr<const ImageStore>>& stores, const AugmentConfig& eval);
  nlohmann::json ValidateEach(Net& net, const std::vector<HeadInfo>& infos,
                              const std::vector<std::shared_ptr<const ClipStore>>& stores, const AugmentConfig& eval);

  // The training loop over `loader`, writing the stage's output.
  TrainResult Run(TrainTask& task, Loader& loader);

 private:
  template <class Store>
  std::vector<std::shared_ptr<const Store>> OpenAll(const std::vector<std::string>& paths, bool several);
  template <class Store>
  nlohmann::json ValidateAll(Net& net, const std::vector<HeadInfo>& infos,
                             const std::vector<std::shared_ptr<const Store>>& stores, const AugmentConfig& eval);

  StageOptions opts_;
  std::string out_;
  Provenance provenance_;
  torch::Device device_;
};

}  // namespace mlfd
