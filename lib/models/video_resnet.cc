// torchvision's video ResNets (torchvision.models.video.resnet, 0.14): r3d_18 (3x3x3 convolutions
// throughout), mc3_18 (3x3x3 in layer1, 1x3x3 "no temporal" convolutions in layers 2-4) and
// r2plus1d_18 ((2+1)-D convolutions: a 1x3x3 spatial and a 3x1x1 temporal one with a BatchNorm and
// ReLU between, torchvision's midplanes). Module structure and names are torchvision's (stem.0,
// stem.1, layer1.0.conv1.0, layer1.0.conv1.1, layer2.0.downsample.0, r2plus1d's
// layer1.0.conv1.0.{0,1,3}, fc), so a torchvision state dict maps 1:1. Options of this project:
// width multiplier, 1 or 3 input channels, drop-path, the MLFD head, and small_stem: the stem
// without spatial stride and with a 3x3 spatial kernel (BasicStem 3x3x3, R2Plus1dStem 1x3x3 then
// 3x1x1) for small frames in tests and demos.
// Input N x C x T x H x W. Levels: "stem", "layer1".."layer4" (N x C x T x H x W maps), then the
// shared "pool" (global average over T, H, W), "embed", "logits".
#include <algorithm>
#include <array>

#include "models/zoo.h"
#include "util/error.h"

namespace mlfd {

namespace {

using Triple = std::array<int64_t, 3>;

torch::nn::Conv3d Conv3(int in, int out, Triple k, Triple stride, Triple pad) {
  return torch::nn::Conv3d(torch::nn::Conv3dOptions(in, out, torch::ExpandingArray<3>(k))
                               .stride(torch::ExpandingArray<3>(stride))
                               .padding(torch::ExpandingArray<3>(pad))
                               .bias(false));
}

torch::nn::ReLU Relu() { return torch::nn::ReLU(torch::nn::ReLUOptions(/*inplace=*/true)); }

// PyTorch's nn.Sequential as torchvision nests it: children named "0", "1", ..., which may
// themselves be Chains (torch::nn::Sequential cannot hold a Sequential; its forward is a template).
struct ChainImpl : torch::nn::Module {
  void Add(torch::nn::AnyModule module) {
    register_module(std::to_string(steps.size()), module.ptr());
    steps.push_back(std::move(module));
  }
  template <typename M>
  void Add(torch::nn::ModuleHolder<M> module) {
    Add(torch::nn::AnyModule(module));
  }
  torch::Tensor forward(const torch::Tensor& x) {
    torch::Tensor y = x;
    for (auto& s : steps) y = s.forward(y);
    return y;
  }
  std::vector<torch::nn::AnyModule> steps;
};
TORCH_MODULE(Chain);

enum class ConvKind { kSimple, kNoTemporal, k2Plus1D };

// torchvision's conv_builder(in_planes, out_planes, midplanes, stride): Conv3DSimple,
// Conv3DNoTemporal or Conv2Plus1D (Sequential: 1x3x3 conv, BN, ReLU, 3x1x1 conv).
torch::nn::AnyModule Builder(ConvKind kind, int in, int out, int mid, int64_t s) {
  switch (kind) {
    case ConvKind::kSimple:
      return torch::nn::AnyModule(Conv3(in, out, {3, 3, 3}, {s, s, s}, {1, 1, 1}));
    case ConvKind::kNoTemporal:
      return torch::nn::AnyModule(Conv3(in, out, {1, 3, 3}, {1, s, s}, {0, 1, 1}));
    case ConvKind::k2Plus1D: {
      Chain c;
      c->Add(Conv3(in, mid, {1, 3, 3}, {1, s, s}, {0, 1, 1}));
      c->Add(Norm(mid));
      c->Add(Relu());
      c->Add(Conv3(mid, out, {3, 1, 1}, {s, 1, 1}, {1, 0, 0}));
      return torch::nn::AnyModule(c);
    }
  }
  throw Error("internal: unknown video convolution kind");
}

// torchvision's get_downsample_stride: Conv3DNoTemporal keeps the temporal size.
Triple DownsampleStride(ConvKind kind, int64_t s) {
  return kind == ConvKind::kNoTemporal ? Triple{1, s, s} : Triple{s, s, s};
}

// torchvision's video BasicBlock: conv1 = Sequential(builder, BN, ReLU), conv2 =
// Sequential(builder, BN), both with the midplanes of (inplanes, planes); residual add, ReLU.
struct VideoBlockImpl : torch::nn::Module {
  VideoBlockImpl(ConvKind kind, int inplanes, int planes, int64_t stride, double drop_path)
      : drop_path(drop_path) {
    const int mid = (inplanes * planes * 3 * 3 * 3) / (inplanes * 3 * 3 + 3 * planes);
    conv1 = Chain();
    conv1->Add(Builder(kind, inplanes, planes, mid, stride));
    conv1->Add(Norm(planes));
    conv1->Add(Relu());
    conv1 = register_module("conv1", conv1);
    conv2 = Chain();
    conv2->Add(Builder(kind, planes, planes, mid, 1));
    conv2->Add(Norm(planes));
    conv2 = register_module("conv2", conv2);
    if (stride != 1 || inplanes != planes) {
      downsample = Chain();
      downsample->Add(
          Conv3(inplanes, planes, {1, 1, 1}, DownsampleStride(kind, stride), {0, 0, 0}));
      downsample->Add(Norm(planes));
      downsample = register_module("downsample", downsample);
    }
  }
  torch::Tensor forward(const torch::Tensor& x) {
    torch::Tensor y = conv2(conv1(x));
    torch::Tensor identity = downsample ? downsample(x) : x;
    return (DropPath(y, drop_path, is_training()) + identity).relu_();
  }
  double drop_path;
  Chain conv1{nullptr}, conv2{nullptr}, downsample{nullptr};
};
TORCH_MODULE(VideoBlock);

class VideoResNetImpl : public NetImpl {
 public:
  explicit VideoResNetImpl(const ModelConfig& c) : NetImpl(c) {
    std::array<ConvKind, 4> kinds;
    if (c.arch == "r3d_18")
      kinds = {ConvKind::kSimple, ConvKind::kSimple, ConvKind::kSimple, ConvKind::kSimple};
    else if (c.arch == "mc3_18")
      kinds = {ConvKind::kSimple, ConvKind::kNoTemporal, ConvKind::kNoTemporal,
               ConvKind::kNoTemporal};
    else if (c.arch == "r2plus1d_18")
      kinds = {ConvKind::k2Plus1D, ConvKind::k2Plus1D, ConvKind::k2Plus1D, ConvKind::k2Plus1D};
    else
      throw Error("video ResNet: unknown arch " + c.arch);
    int inplanes = Scaled(64, c.width);
    // Spatial stride 2 and a 7x7 spatial kernel (torchvision), or stride 1 and 3x3 (small_stem).
    const int64_t k = c.small_stem ? 3 : 7, s = c.small_stem ? 1 : 2, p = c.small_stem ? 1 : 3;
    stem_ = Chain();
    if (c.arch == "r2plus1d_18") {  // R2Plus1dStem
      const int mid = Scaled(45, c.width);
      stem_->Add(Conv3(c.in_channels, mid, {1, k, k}, {1, s, s}, {0, p, p}));
      stem_->Add(Norm(mid));
      stem_->Add(Relu());
      stem_->Add(Conv3(mid, inplanes, {3, 1, 1}, {1, 1, 1}, {1, 0, 0}));
      stem_->Add(Norm(inplanes));
      stem_->Add(Relu());
    } else {  // BasicStem
      stem_->Add(Conv3(c.in_channels, inplanes, {3, k, k}, {1, s, s}, {1, p, p}));
      stem_->Add(Norm(inplanes));
      stem_->Add(Relu());
    }
    stem_ = register_module("stem", stem_);
    channels_["stem"] = inplanes;
    const int total = 8;
    int index = 0;
    for (int st = 0; st < 4; ++st) {
      const int planes = Scaled(64 << st, c.width);
      torch::nn::Sequential layer;
      for (int b = 0; b < 2; ++b) {
        const double dp = c.drop_path * index / (total - 1);
        layer->push_back(VideoBlock(kinds[static_cast<size_t>(st)], inplanes, planes,
                                    b == 0 && st > 0 ? 2 : 1, dp));
        inplanes = planes;
        ++index;
      }
      std::string name = "layer" + std::to_string(st + 1);
      layers_.push_back(register_module(name, layer));
      channels_[name] = inplanes;
    }
    InitConvBn(*this);
    BuildHead(inplanes, "fc");
    // torchvision's video ResNets initialise every Linear N(0, 0.01) with zero bias.
    torch::NoGradGuard no_grad;
    for (auto& m : modules(/*include_self=*/false))
      if (auto* l = m->as<torch::nn::Linear>()) {
        torch::nn::init::normal_(l->weight, 0.0, 0.01);
        l->bias.zero_();
      }
  }

 protected:
  std::vector<std::string> BackboneMapLevels() const override {
    return {"stem", "layer1", "layer2", "layer3", "layer4"};
  }
  std::map<std::string, int> MapChannels() const override { return channels_; }
  torch::Tensor RunBackbone(const torch::Tensor& x, const std::vector<std::string>& want,
                            const std::string& last, LevelMap* out) override {
    if (x.dim() != 5)
      throw Error(Msg(config_.arch, " takes clips N x C x T x H x W, not a ", x.dim(),
                      "-D input of shape ", x.sizes()));
    auto keep = [&](const std::string& name, const torch::Tensor& t) {
      if (out && std::find(want.begin(), want.end(), name) != want.end()) (*out)[name] = t;
      return name == last;
    };
    torch::Tensor y = stem_->forward(x);
    if (keep("stem", y)) return y;
    for (size_t i = 0; i < layers_.size(); ++i) {
      y = layers_[i]->forward(y);
      if (keep("layer" + std::to_string(i + 1), y)) return y;
    }
    return y;
  }

 private:
  Chain stem_{nullptr};
  std::vector<torch::nn::Sequential> layers_;
  std::map<std::string, int> channels_;
};

}  // namespace

std::shared_ptr<NetImpl> MakeVideoResNet(const ModelConfig& config) {
  return std::make_shared<VideoResNetImpl>(config);
}

}  // namespace mlfd
