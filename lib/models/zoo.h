// Internal: constructors of the architectures (models/resnet.cc, efficientnet.cc, seresnext.cc,
// video_resnet.cc),
// and building blocks shared by them.
#pragma once

#include <torch/torch.h>

#include <memory>

#include "models/model.h"

namespace mlfd {

std::shared_ptr<NetImpl> MakeResNet(const ModelConfig& config);
// torchvision's video ResNets r3d_18, mc3_18, r2plus1d_18 (input N x C x T x H x W).
std::shared_ptr<NetImpl> MakeVideoResNet(const ModelConfig& config);
std::shared_ptr<NetImpl> MakeEfficientNetB0(const ModelConfig& config);
std::shared_ptr<NetImpl> MakeSEResNeXt26t(const ModelConfig& config);

// Stochastic depth: drops the whole residual branch per sample with probability p in training,
// scaling kept samples by 1/(1-p); identity in evaluation.
torch::Tensor DropPath(const torch::Tensor& x, double p, bool training);

// Channels scaled by the width multiplier (at least 4).
int Scaled(int channels, double width);

// The backbones' BatchNorm2d (and, on 5-D input, the video ResNets' BatchNorm3d):
// torch::nn::BatchNorm2d's computation (torch::batch_norm, momentum 0.1, eps 1e-5), parameters,
// buffers and names (weight, bias, running_mean, running_var, num_batches_tracked), and one
// addition: FoldBatchNorm can fold it into the convolution before it, after which it passes its
// input through and refuses to run in training mode. (A subclass of torch::nn::BatchNorm2dImpl
// cannot be linked against LibTorch 1.13: its base's pretty_print is not exported.)
class NormImpl : public torch::nn::Module {
 public:
  explicit NormImpl(int64_t channels);
  torch::Tensor forward(const torch::Tensor& x);
  void pretty_print(std::ostream& stream) const override;
  static constexpr double kEps = 1e-5, kMomentum = 0.1;
  torch::Tensor weight, bias, running_mean, running_var, num_batches_tracked;
  bool folded = false;
};
TORCH_MODULE(Norm);

// torchvision's init: Kaiming-normal (fan_out, ReLU) convolutions (2-D and 3-D), BN weight 1,
// bias 0.
void InitConvBn(torch::nn::Module& m);

// The ResNet family (ResNet, SE-ResNeXt): a stem, an optional max-pool, then layer1..layer4.
// Subclasses build the stem and call AddLayer() for each stage, then BuildHead().
class ResidualNetImpl : public NetImpl {
 protected:
  explicit ResidualNetImpl(const ModelConfig& c) : NetImpl(c) {}
  // Stem convolutions + BN + ReLU (before the max-pool).
  virtual torch::Tensor Stem(const torch::Tensor& x) = 0;
  // Registers the next stage as "layer<k>" with its output channels.
  void AddLayer(torch::nn::Sequential layer, int out_channels);
  std::vector<std::string> BackboneMapLevels() const override;
  std::map<std::string, int> MapChannels() const override { return channels_; }
  torch::Tensor RunBackbone(const torch::Tensor& x, const std::vector<std::string>& want,
                            const std::string& last, LevelMap* out) override;
  std::map<std::string, int> channels_;  // the subclass sets "stem"

 private:
  std::vector<torch::nn::Sequential> layers_;
};

torch::nn::Conv2d Conv(int in, int out, int k, int stride = 1, int pad = 0, int groups = 1, bool bias = false);

}  // namespace mlfd
