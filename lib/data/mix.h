// Batch-level mixing for patient, consistent distillation (Beyer et al., "Knowledge distillation: a
// good teacher is patient and consistent", CVPR 2022): the student's augmented batch is mixed with a
// permutation of itself before the student and the (online) teachers both see it, so the teachers
// are matched as functions on the very images the student is trained on.
//   mixup:  x = lambda * x + (1 - lambda) * x[perm]
//   cutmix: a box of area about (1 - lambda) * H * W is pasted from x[perm] (Yun et al., ICCV 2019);
//           lambda is then the exact share of pixels kept after clipping the box to the image.
// lambda ~ Beta(alpha, alpha), drawn once per batch; the label term reads
// lambda * CE(y) + (1 - lambda) * CE(y[perm]).
#pragma once

#include <torch/torch.h>

#include <cstdint>
#include <string>

namespace mlfd {

struct MixedBatch {
  torch::Tensor images;    // same shape, dtype and device as the input
  torch::Tensor labels_b;  // int64 N: labels of the images mixed in (labels[perm])
  torch::Tensor perm;      // int64 N: the partner of each row
  double lambda = 1.0;     // share of each row's own image (and label)
  // cutmix: the pasted box, rows [y0, y1) and columns [x0, x1) (empty for mixup)
  int64_t y0 = 0, y1 = 0, x0 = 0, x1 = 0;
};

// The modes MixBatch accepts: "mixup", "cutmix".
bool IsMixMode(const std::string& mode);

// Mixes an N x C x H x W batch (any float dtype) with a permutation of itself. Deterministic given
// `seed` (lambda, permutation and box come from one std::mt19937_64 seeded with it); alpha > 0.
MixedBatch MixBatch(const torch::Tensor& images, const torch::Tensor& labels, const std::string& mode, double alpha,
                    uint64_t seed);

}  // namespace mlfd
