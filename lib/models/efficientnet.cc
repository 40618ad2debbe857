// EfficientNet-B0 with torchvision's structure and names: features.0 (stem Conv2dNormActivation),
// features.1..7 (MBConv stages, each block.N a Sequential of expand / depthwise / squeeze-excite /
// project), features.8 (1x1 head conv), classifier.1 (Linear). Options: small stem (stride-1
// stem conv for small images), width multiplier (channels rounded to multiples of 8), 1 or 3
// input channels, drop-path (stochastic depth; torchvision's default 0.2 when drop_path is 0 is
// not applied: the rate is the config's). Levels: "stem", "stage1".."stage7", "head_conv".
#include <cmath>

#include "models/zoo.h"

namespace mlfd {
namespace {

int MakeDivisible(double v, int divisor = 8) {
  int nv = std::max(divisor, static_cast<int>(v + divisor / 2.0) / divisor * divisor);
  if (nv < 0.9 * v) nv += divisor;
  return nv;
}

// A Sequential with a plain forward, so Sequentials can nest (as torchvision's do).
struct SeqImpl : torch::nn::SequentialImpl {
  using SequentialImpl::SequentialImpl;
  torch::Tensor forward(torch::Tensor x) { return SequentialImpl::forward(x); }
};
TORCH_MODULE(Seq);

// Conv2dNormActivation: Sequential(conv, BN, [SiLU]).
Seq ConvBnAct(int in, int out, int k, int stride, int groups, bool act) {
  Seq s(Conv(in, out, k, stride, (k - 1) / 2, groups), Norm(out));
  if (act) s->push_back(torch::nn::SiLU());
  return s;
}

struct SqueezeExcitationImpl : torch::nn::Module {
  SqueezeExcitationImpl(int channels, int squeeze) {
    fc1 = register_module("fc1", Conv(channels, squeeze, 1, 1, 0, 1, true));
    fc2 = register_module("fc2", Conv(squeeze, channels, 1, 1, 0, 1, true));
  }
  torch::Tensor forward(const torch::Tensor& x) {
    torch::Tensor s = torch::adaptive_avg_pool2d(x, {1, 1});
    s = torch::sigmoid(fc2(torch::silu(fc1(s))));
    return x * s;
  }
  torch::nn::Conv2d fc1{nullptr}, fc2{nullptr};
};
TORCH_MODULE(SqueezeExcitation);

struct MBConvImpl : torch::nn::Module {
  MBConvImpl(int in, int out, int expand, int k, int stride, double drop_path)
      : residual(stride == 1 && in == out), drop_path(drop_path) {
    int exp = MakeDivisible(in * expand);
    Seq b;
    if (exp != in) b->push_back(ConvBnAct(in, exp, 1, 1, 1, true));
    b->push_back(ConvBnAct(exp, exp, k, stride, exp, true));
    b->push_back(SqueezeExcitation(exp, std::max(1, in / 4)));
    b->push_back(ConvBnAct(exp, out, 1, 1, 1, false));
    block = register_module("block", b);
  }
  torch::Tensor forward(const torch::Tensor& x) {
    torch::Tensor y = block->forward(x);
    return residual ? DropPath(y, drop_path, is_training()) + x : y;
  }
  bool residual;
  double drop_path;
  Seq block{nullptr};
};
TORCH_MODULE(MBConv);

class EfficientNetImpl : public NetImpl {
 public:
  explicit EfficientNetImpl(const ModelConfig& c) : NetImpl(c) {
    struct Stage { int expand, k, stride, in, out, n; };
    const Stage stages[] = {{1, 3, 1, 32, 16, 1},   {6, 3, 2, 16, 24, 2},  {6, 5, 2, 24, 40, 2},
                            {6, 3, 2, 40, 80, 3},   {6, 5, 1, 80, 112, 3}, {6, 5, 2, 112, 192, 4},
                            {6, 3, 1, 192, 320, 1}};
    auto w = [&](int ch) { return MakeDivisible(ch * c.width); };
    torch::nn::ModuleList features;
    features->push_back(ConvBnAct(c.in_channels, w(32), 3, c.small_stem ? 1 : 2, 1, true));
    channels_["stem"] = w(32);
    int total = 0;
    for (const auto& s : stages) total += s.n;
    int id = 0;
    for (int i = 0; i < 7; ++i) {
      const Stage& s = stages[i];
      Seq stage;
      for (int b = 0; b < s.n; ++b) {
        double dp = c.drop_path * id / total;  // torchvision: sd_prob * block_id / total_blocks
        stage->push_back(MBConv(b == 0 ? w(s.in) : w(s.out), w(s.out), s.expand, s.k, b == 0 ? s.stride : 1, dp));
        ++id;
      }
      features->push_back(stage);
      channels_["stage" + std::to_string(i + 1)] = w(s.out);
    }
    int last = 4 * w(320);
    features->push_back(ConvBnAct(w(320), last, 1, 1, 1, true));
    channels_["head_conv"] = last;
    features_ = register_module("features", features);
    InitConvBn(*this);
    BuildHead(last, "classifier.1");
    torch::NoGradGuard no_grad;  // torchvision: uniform(-1/sqrt(out), 1/sqrt(out)), zero bias
    for (auto& h : heads_) {
      double r = 1.0 / std::sqrt(static_cast<double>(h->options.out_features()));
      h->weight.uniform_(-r, r);
      h->bias.zero_();
    }
  }

 protected:
  std::vector<std::string> BackboneMapLevels() const override {
    return {"stem", "stage1", "stage2", "stage3", "stage4", "stage5", "stage6", "stage7", "head_conv"};
  }
  std::map<std::string, int> MapChannels() const override { return channels_; }
  torch::Tensor RunBackbone(const torch::Tensor& x, const std::vector<std::string>& want,
                            const std::string& last, LevelMap* out) override {
    const auto names = BackboneMapLevels();
    torch::Tensor y = x;
    for (size_t i = 0; i < features_->size(); ++i) {
      y = features_[i]->as<SeqImpl>()->forward(y);
      const std::string& n = names[i];
      if (out && std::find(want.begin(), want.end(), n) != want.end()) (*out)[n] = y;
      if (n == last) return y;
    }
    return y;
  }

 private:
  torch::nn::ModuleList features_{nullptr};
  std::map<std::string, int> channels_;
};

}  // namespace

std::shared_ptr<NetImpl> MakeEfficientNetB0(const ModelConfig& config) {
  return std::make_shared<EfficientNetImpl>(config);
}

}  // namespace mlfd
