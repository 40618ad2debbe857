// ResNet-18/34/50 with torchvision's module structure and parameter names (conv1, bn1,
// layer1.0.conv1, ..., layer1.0.downsample.0, fc), plus the options of this project: small-image
// stem (3x3 stride-1 conv1, no max-pool), width multiplier, 1 or 3 input channels, drop-path.
// Levels: "stem" (after the max-pool; after relu with the small stem), "layer1".."layer4".
#include <cmath>

#include "models/zoo.h"
#include "util/error.h"

namespace mlfd {

torch::Tensor DropPath(const torch::Tensor& x, double p, bool training) {
  if (!training || p <= 0) return x;
  std::vector<int64_t> shape(static_cast<size_t>(x.dim()), 1);  // N x 1 x 1 x 1 (x 1 for clips)
  shape[0] = x.size(0);
  torch::Tensor keep = torch::empty(shape, x.options()).bernoulli_(1 - p);
  return x * keep / (1 - p);
}

void ResidualNetImpl::AddLayer(torch::nn::Sequential layer, int out_channels) {
  std::string name = "layer" + std::to_string(layers_.size() + 1);
  layers_.push_back(register_module(name, layer));
  channels_[name] = out_channels;
}

std::vector<std::string> ResidualNetImpl::BackboneMapLevels() const {
  std::vector<std::string> l{"stem"};
  for (size_t i = 0; i < layers_.size(); ++i) l.push_back("layer" + std::to_string(i + 1));
  return l;
}

torch::Tensor ResidualNetImpl::RunBackbone(const torch::Tensor& x, const std::vector<std::string>& want,
                                           const std::string& last, LevelMap* out) {
  auto keep = [&](const std::string& name, const torch::Tensor& t) {
    if (out && std::find(want.begin(), want.end(), name) != want.end()) (*out)[name] = t;
    return name == last;
  };
  torch::Tensor y = Stem(x);
  if (!config_.small_stem) y = torch::max_pool2d(y, 3, 2, 1);
  if (keep("stem", y)) return y;
  for (size_t i = 0; i < layers_.size(); ++i) {
    y = layers_[i]->forward(y);
    if (keep("layer" + std::to_string(i + 1), y)) return y;
  }
  return y;
}

int Scaled(int channels, double width) {
  return std::max(4, static_cast<int>(std::lround(channels * width)));
}

torch::nn::Conv2d Conv(int in, int out, int k, int stride, int pad, int groups, bool bias) {
  return torch::nn::Conv2d(
      torch::nn::Conv2dOptions(in, out, k).stride(stride).padding(pad).groups(groups).bias(bias));
}

void InitConvBn(torch::nn::Module& root) {
  torch::NoGradGuard no_grad;
  for (auto& m : root.modules(/*include_self=*/false)) {
    if (auto* c = m->as<torch::nn::Conv2d>()) {
      torch::nn::init::kaiming_normal_(c->weight, 0.0, torch::kFanOut, torch::kReLU);
      if (c->options.bias()) c->bias.zero_();
    } else if (auto* c3 = m->as<torch::nn::Conv3d>()) {
      torch::nn::init::kaiming_normal_(c3->weight, 0.0, torch::kFanOut, torch::kReLU);
      if (c3->options.bias()) c3->bias.zero_();
    } else if (auto* n = m->as<Norm>()) {
      n->weight.fill_(1.0);
      n->bias.zero_();
    }
  }
}

namespace {

// BasicBlock (expansion 1) and Bottleneck (expansion 4, stride on the 3x3 conv as torchvision).
struct BlockImpl : torch::nn::Module {
  BlockImpl(int inplanes, int planes, int stride, bool bottleneck, double drop_path)
      : bottleneck(bottleneck), drop_path(drop_path) {
    int out = bottleneck ? planes * 4 : planes;
    if (bottleneck) {
      conv1 = register_module("conv1", Conv(inplanes, planes, 1));
      bn1 = register_module("bn1", Norm(planes));
      conv2 = register_module("conv2", Conv(planes, planes, 3, stride, 1));
      bn2 = register_module("bn2", Norm(planes));
      conv3 = register_module("conv3", Conv(planes, out, 1));
      bn3 = register_module("bn3", Norm(out));
    } else {
      conv1 = register_module("conv1", Conv(inplanes, planes, 3, stride, 1));
      bn1 = register_module("bn1", Norm(planes));
      conv2 = register_module("conv2", Conv(planes, planes, 3, 1, 1));
      bn2 = register_module("bn2", Norm(planes));
    }
    if (stride != 1 || inplanes != out)
      downsample = register_module("downsample", torch::nn::Sequential(Conv(inplanes, out, 1, stride),
                                                                      Norm(out)));
  }
  torch::Tensor forward(const torch::Tensor& x) {
    torch::Tensor y = bn1(conv1(x)).relu_();  // in place, as torchvision
    y = bn2(conv2(y));
    if (bottleneck) y = bn3(conv3(y.relu_()));
    torch::Tensor identity = downsample ? downsample->forward(x) : x;
    return (DropPath(y, drop_path, is_training()) + identity).relu_();
  }
  bool bottleneck;
  double drop_path;
  torch::nn::Conv2d conv1{nullptr}, conv2{nullptr}, conv3{nullptr};
  Norm bn1{nullptr}, bn2{nullptr}, bn3{nullptr};
  torch::nn::Sequential downsample{nullptr};
};
TORCH_MODULE(Block);

class ResNetImpl : public ResidualNetImpl {
 public:
  explicit ResNetImpl(const ModelConfig& c) : ResidualNetImpl(c) {
    std::vector<int> depth;
    bool bottleneck = false;
    if (c.arch == "resnet18") depth = {2, 2, 2, 2};
    else if (c.arch == "resnet34") depth = {3, 4, 6, 3};
    else if (c.arch == "resnet50") depth = {3, 4, 6, 3}, bottleneck = true;
    else throw Error("ResNet: unknown arch " + c.arch);
    const int expansion = bottleneck ? 4 : 1;
    int inplanes = Scaled(64, c.width);
    conv1_ = register_module("conv1", c.small_stem ? Conv(c.in_channels, inplanes, 3, 1, 1)
                                                   : Conv(c.in_channels, inplanes, 7, 2, 3));
    bn1_ = register_module("bn1", Norm(inplanes));
    channels_["stem"] = inplanes;
    const int total = depth[0] + depth[1] + depth[2] + depth[3];
    int index = 0;
    for (int s = 0; s < 4; ++s) {
      int planes = Scaled(64 << s, c.width);
      torch::nn::Sequential layer;
      for (int b = 0; b < depth[static_cast<size_t>(s)]; ++b) {
        double dp = total > 1 ? c.drop_path * index / (total - 1) : 0.0;
        layer->push_back(Block(inplanes, planes, b == 0 && s > 0 ? 2 : 1, bottleneck, dp));
        inplanes = planes * expansion;
        ++index;
      }
      AddLayer(layer, inplanes);
    }
    InitConvBn(*this);
    BuildHead(inplanes, "fc");
  }

 protected:
  torch::Tensor Stem(const torch::Tensor& x) override { return bn1_(conv1_(x)).relu_(); }

 private:
  torch::nn::Conv2d conv1_{nullptr};
  Norm bn1_{nullptr};
};

}  // namespace

std::shared_ptr<NetImpl> MakeResNet(const ModelConfig& config) { return std::make_shared<ResNetImpl>(config); }

}  // namespace mlfd
