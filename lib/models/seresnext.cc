// SE-ResNeXt-26t-32x4d in the layout of timm's `seresnext26t_32x4d`: a tiered deep stem
// (conv1.0/.3/.6 = 3x3 convs to 24, 32, 64 channels with BN + ReLU between, then bn1, max-pool),
// ResNeXt bottlenecks (cardinality 32, base width 4) with squeeze-excitation (se.fc1, se.fc2 1x1
// convs with bias, reduction 16 rounded to multiples of 8), average-pool downsampling
// (downsample.0 pool, .1 conv, .2 BN), layers [2, 2, 2, 2], fc. Options as for ResNets.
// Levels: "stem", "layer1".."layer4".
#include <cmath>
#include <numeric>

#include "models/zoo.h"

namespace mlfd {
namespace {

int Divisible8(double v) {  // timm make_divisible(v, 8, round_limit=0)
  return std::max(8, static_cast<int>(v + 4) / 8 * 8);
}

struct SEModuleImpl : torch::nn::Module {
  explicit SEModuleImpl(int channels) {
    int rd = Divisible8(channels / 16.0);
    fc1 = register_module("fc1", Conv(channels, rd, 1, 1, 0, 1, true));
    fc2 = register_module("fc2", Conv(rd, channels, 1, 1, 0, 1, true));
  }
  torch::Tensor forward(const torch::Tensor& x) {
    torch::Tensor s = x.mean({2, 3}, /*keepdim=*/true);
    return x * torch::sigmoid(fc2(torch::relu(fc1(s))));
  }
  torch::nn::Conv2d fc1{nullptr}, fc2{nullptr};
};
TORCH_MODULE(SEModule);

struct AvgDownImpl : torch::nn::Module {  // parameter-free downsample.0
  explicit AvgDownImpl(int stride) : stride(stride) {}
  torch::Tensor forward(const torch::Tensor& x) {
    if (stride == 1) return x;
    return torch::avg_pool2d(x, 2, stride, 0, /*ceil_mode=*/true, /*count_include_pad=*/false);
  }
  int stride;
};
TORCH_MODULE(AvgDown);

struct XBlockImpl : torch::nn::Module {
  // ResNeXt 32x4d: width = floor(planes * 4 / 64) * 32 = 2 * planes at width multiplier 1; the
  // group count follows the multiplier and always divides the width.
  XBlockImpl(int inplanes, int planes, int stride, int cardinality, double drop_path)
      : drop_path(drop_path) {
    int width = 2 * planes;
    cardinality = std::gcd(width, cardinality);
    int out = planes * 4;
    conv1 = register_module("conv1", Conv(inplanes, width, 1));
    bn1 = register_module("bn1", Norm(width));
    conv2 = register_module("conv2", Conv(width, width, 3, stride, 1, cardinality));
    bn2 = register_module("bn2", Norm(width));
    conv3 = register_module("conv3", Conv(width, out, 1));
    bn3 = register_module("bn3", Norm(out));
    se = register_module("se", SEModule(out));
    if (stride != 1 || inplanes != out)
      downsample = register_module("downsample", torch::nn::Sequential(AvgDown(stride), Conv(inplanes, out, 1),
                                                                      Norm(out)));
  }
  torch::Tensor forward(const torch::Tensor& x) {
    torch::Tensor y = bn1(conv1(x)).relu_();  // in place, as torchvision
    y = bn2(conv2(y)).relu_();
    y = se(bn3(conv3(y)));
    torch::Tensor identity = downsample ? downsample->forward(x) : x;
    return (DropPath(y, drop_path, is_training()) + identity).relu_();
  }
  double drop_path;
  torch::nn::Conv2d conv1{nullptr}, conv2{nullptr}, conv3{nullptr};
  Norm bn1{nullptr}, bn2{nullptr}, bn3{nullptr};
  SEModule se{nullptr};
  torch::nn::Sequential downsample{nullptr};
};
TORCH_MODULE(XBlock);

class SEResNeXtImpl : public ResidualNetImpl {
 public:
  explicit SEResNeXtImpl(const ModelConfig& c) : ResidualNetImpl(c) {
    const int cardinality = std::max(1, static_cast<int>(std::lround(32 * c.width)));
    int s1 = Scaled(24, c.width), s2 = Scaled(32, c.width), inplanes = Scaled(64, c.width);
    stem_ = register_module("conv1", torch::nn::Sequential(
        Conv(c.in_channels, s1, 3, c.small_stem ? 1 : 2, 1), Norm(s1), torch::nn::ReLU(),
        Conv(s1, s2, 3, 1, 1), Norm(s2), torch::nn::ReLU(), Conv(s2, inplanes, 3, 1, 1)));
    bn1_ = register_module("bn1", Norm(inplanes));
    channels_["stem"] = inplanes;
    int index = 0;
    for (int s = 0; s < 4; ++s) {
      int planes = Scaled(64 << s, c.width);
      torch::nn::Sequential layer;
      for (int b = 0; b < 2; ++b) {
        layer->push_back(XBlock(inplanes, planes, b == 0 && s > 0 ? 2 : 1, cardinality,
                                c.drop_path * index / 7.0));
        inplanes = planes * 4;
        ++index;
      }
      AddLayer(layer, inplanes);
    }
    InitConvBn(*this);
    BuildHead(inplanes, "fc");
  }

 protected:
  torch::Tensor Stem(const torch::Tensor& x) override { return bn1_(stem_->forward(x)).relu_(); }

 private:
  torch::nn::Sequential stem_{nullptr};
  Norm bn1_{nullptr};
};

}  // namespace

std::shared_ptr<NetImpl> MakeSEResNeXt26t(const ModelConfig& config) {
  return std::make_shared<SEResNeXtImpl>(config);
}

}  // namespace mlfd
