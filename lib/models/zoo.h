// Internal: constructors of the architectures (models/resnet.cc, efficientnet.cc, seresnext.cc),
// and building blocks shared by them.
#pragma once

#include <torch/torch.h>

#include <memory>

#include "models/model.h"

namespace mlfd {

std::shared_ptr<NetImpl> MakeResNet(const ModelConfig& config);
std::shared_ptr<NetImpl> MakeEfficientNetB0(const ModelConfig& config);
std::shared_ptr<NetImpl> MakeSEResNeXt26t(const ModelConfig& config);

// Stochastic depth: drops the whole residual branch per sample with probability p in training,
// scaling kept samples by 1/(1-p); identity in evaluation.
torch::Tensor DropPath(const torch::Tensor& x, double p, bool training);

// Channels scaled by the width multiplier (at least 4).
int Scaled(int channels, double width);

// torchvision's init: Kaiming-normal (fan_out, ReLU) convolutions, BN weight 1 bias 0.
void InitConvBn(torch::nn::Module& m);

// The part of RunBackbone shared by the ResNet family: given the stem's activation, applies the
// max-pool (unless small stem) and layer1..layerN, storing requested levels and stopping at `last`.
torch::Tensor RunResidualStages(torch::Tensor y, bool maxpool, std::vector<torch::nn::Sequential>& layers,
                                const std::vector<std::string>& want, const std::string& last, LevelMap* out);

torch::nn::Conv2d Conv(int in, int out, int k, int stride = 1, int pad = 0, int groups = 1, bool bias = false);

}  // namespace mlfd
