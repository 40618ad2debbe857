// Classification metrics (top-1, top-5, per-class accuracy, confusion matrix, negative
// log-likelihood, expected calibration error) and the prediction pass that produces the logits
// of one dataset's split with the right head (images, or clips for video networks).
#pragma once

#include <torch/torch.h>

#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "data/augment.h"
#include "data/clip_store.h"
#include "data/image_store.h"
#include "models/checkpoint.h"
#include "models/model.h"

namespace mlfd {

struct ClassificationMetrics {
  int64_t count = 0;
  double top1 = 0, top5 = 0, nll = 0, ece = 0;
  std::vector<double> per_class_accuracy;  // NaN for classes absent from the split
  std::vector<int64_t> per_class_count;
  std::vector<int64_t> confusion;          // K x K, row = true class, column = predicted
  int num_classes = 0;
  nlohmann::json ToJson(const std::vector<std::string>& class_names) const;
};

// `logits` N x K (any float dtype/device), `labels` N. ECE uses `ece_bins` equal-width bins of the
// top-1 confidence.
ClassificationMetrics ComputeMetrics(const torch::Tensor& logits, const torch::Tensor& labels,
                                     int num_classes, int ece_bins = 15);

// Logits of `net` for the samples of `indices` in `store`, restricted to the dataset's own
// classes (head `info.head`, columns [label_offset, label_offset + K)). Returns N x K float on
// CPU and the labels; the images get `eval_transform` (resize only).
struct Predictions {
  torch::Tensor logits, labels;
};
Predictions Predict(Net& net, const HeadInfo& info, std::shared_ptr<const ImageStore> store,
                    const std::vector<int64_t>& indices, const AugmentConfig& eval_transform,
                    torch::Device device, int64_t batch_size = 256, int workers = 2, int crops = 1);
// The same for a video network on a clip store: temporal crops of `info.frames` frames (0 = all
// stored); the logits are the mean over `views` uniformly spaced crops per clip (1 = the centred
// crop) and, for each, `crops` spatial crops (1, 3 or 5: AugmentConfig::eval_crops).
Predictions Predict(Net& net, const HeadInfo& info, std::shared_ptr<const ClipStore> store,
                    const std::vector<int64_t>& indices, const AugmentConfig& eval_transform,
                    torch::Device device, int64_t batch_size = 256, int workers = 2, int views = 1,
                    int crops = 1);

}  // namespace mlfd
