// ModelConfig (JSON), the shared NetImpl logic (levels, head, features) and the model factory.
#include "models/model.h"

#include <algorithm>
#include <cmath>
#include <numeric>

#include "data/clip_store.h"
#include "dist/dist.h"
#include "models/joint.h"
#include "models/zoo.h"
#include "util/error.h"
#include "util/options.h"
#include "util/json_view.h"

namespace mlfd {

namespace {

// BatchNorm over the global batch of a data-parallel run (PyTorch's SyncBatchNorm): each rank's
// count, mean and sum of squared deviations are all-gathered and combined (Chan et al.) in
// float64; the backward all-reduces the two per-channel sums the input gradient needs, and leaves
// the weight and bias gradients local (DDP's reducer averages them).
struct SyncNormFunction : public torch::autograd::Function<SyncNormFunction> {
  static torch::Tensor forward(torch::autograd::AutogradContext* ctx, const torch::Tensor& x, const torch::Tensor& weight,
                               const torch::Tensor& bias, torch::Tensor running_mean, torch::Tensor running_var,
                               double momentum, double eps) {
    const int64_t C = x.size(1);
    std::vector<int64_t> dims{0};
    for (int64_t d = 2; d < x.dim(); ++d) dims.push_back(d);
    std::vector<int64_t> shape(static_cast<size_t>(x.dim()), 1);
    shape[1] = C;
    torch::Tensor xd = x.to(torch::kFloat64);
    const double count = static_cast<double>(x.numel() / C);
    torch::Tensor mean = xd.mean(dims);
    torch::Tensor m2 = (xd - mean.view(shape)).pow(2).sum(dims);
    torch::Tensor row = torch::cat({torch::full({1}, count, torch::kFloat64), mean, m2}).view({1, 1 + 2 * C});
    torch::Tensor all = dist::AllGatherRows(row.to(torch::kCPU)).to(x.device());
    torch::Tensor n = all.select(1, 0), means = all.narrow(1, 1, C), m2s = all.narrow(1, 1 + C, C);
    const double total = n.sum().item<double>();
    torch::Tensor gmean = (means * n.unsqueeze(1)).sum(0) / total;
    torch::Tensor gm2 = (m2s + (means - gmean).pow(2) * n.unsqueeze(1)).sum(0);
    torch::Tensor var = gm2 / total;
    {
      torch::NoGradGuard no_grad;
      running_mean.mul_(1 - momentum).add_(gmean.to(running_mean.dtype()), momentum);
      running_var.mul_(1 - momentum).add_((gm2 / std::max(1.0, total - 1)).to(running_var.dtype()), momentum);
    }
    torch::Tensor invstd = (var + eps).rsqrt();
    torch::Tensor xhat = ((xd - gmean.view(shape)) * invstd.view(shape)).to(x.scalar_type());
    ctx->save_for_backward({xhat, weight, invstd.to(x.scalar_type())});
    ctx->saved_data["total"] = total;
    return xhat * weight.view(shape) + bias.view(shape);
  }

  static torch::autograd::variable_list backward(torch::autograd::AutogradContext* ctx,
                                                 torch::autograd::variable_list grads) {
    auto saved = ctx->get_saved_variables();
    const torch::Tensor& xhat = saved[0];
    const torch::Tensor& weight = saved[1];
    const torch::Tensor& invstd = saved[2];
    const double total = ctx->saved_data["total"].toDouble();
    const torch::Tensor g = grads[0].contiguous();
    const int64_t C = xhat.size(1);
    std::vector<int64_t> dims{0};
    for (int64_t d = 2; d < xhat.dim(); ++d) dims.push_back(d);
    std::vector<int64_t> shape(static_cast<size_t>(xhat.dim()), 1);
    shape[1] = C;
    torch::Tensor sum_g = g.sum(dims), sum_gx = (g * xhat).sum(dims);
    torch::Tensor both = torch::cat({sum_g, sum_gx}).to(torch::kCPU, torch::kFloat64).contiguous();
    dist::AllReduceSum(both);
    both = both.to(g.device(), g.scalar_type());
    torch::Tensor mean_g = both.narrow(0, 0, C) / total, mean_gx = both.narrow(0, C, C) / total;
    torch::Tensor gx = (weight * invstd).view(shape) * (g - mean_g.view(shape) - xhat * mean_gx.view(shape));
    return {gx, sum_gx, sum_g, torch::Tensor(), torch::Tensor(), torch::Tensor(), torch::Tensor()};
  }
};

}  // namespace

NormImpl::NormImpl(int64_t channels) {
  weight = register_parameter("weight", torch::ones({channels}));
  bias = register_parameter("bias", torch::zeros({channels}));
  running_mean = register_buffer("running_mean", torch::zeros({channels}));
  running_var = register_buffer("running_var", torch::ones({channels}));
  num_batches_tracked = register_buffer("num_batches_tracked", torch::tensor(0, torch::kLong));
}

torch::Tensor NormImpl::forward(const torch::Tensor& x) {
  if (folded) {
    if (is_training()) throw Error("internal: a BatchNorm folded for inference was run in training mode");
    return x;
  }
  if (is_training()) num_batches_tracked += 1;
  if (is_training() && dist::SyncBatchNorm())
    return SyncNormFunction::apply(x, weight, bias, running_mean, running_var, kMomentum, kEps);
  return torch::batch_norm(x, weight, bias, running_mean, running_var, is_training(), kMomentum, kEps,
                           at::globalContext().userEnabledCuDNN());
}

void NormImpl::pretty_print(std::ostream& stream) const {
  stream << "mlfd::Norm(" << weight.size(0) << (folded ? ", folded" : "") << ")";
}

namespace {

// The convolution whose output `module` returns: a Conv2d or Conv3d itself, or the last child of a
// module that ends in a Conv3d (r2plus1d's Conv2Plus1D Sequential, whose BatchNorm follows it).
// Its weight and bias are what folding rewrites.
struct ConvRef {
  torch::Tensor* weight = nullptr;
  torch::Tensor* bias = nullptr;
};
ConvRef FeedingConv(const std::shared_ptr<torch::nn::Module>& module) {
  if (auto* c = module->as<torch::nn::Conv2d>()) return {&c->weight, &c->bias};
  if (auto* c = module->as<torch::nn::Conv3d>()) return {&c->weight, &c->bias};
  const auto kids = module->children();
  if (!kids.empty())
    if (auto* c = kids.back()->as<torch::nn::Conv3d>()) return {&c->weight, &c->bias};
  return {};
}

}  // namespace

int FoldBatchNorm(torch::nn::Module& net) {
  torch::NoGradGuard no_grad;
  net.eval();
  int folded = 0;
  for (const auto& parent : net.modules(/*include_self=*/true)) {
    const auto kids = parent->named_children();
    for (size_t i = 0; i + 1 < kids.size(); ++i) {
      // The backbones register each BatchNorm right after the convolution that feeds it.
      auto* norm = dynamic_cast<NormImpl*>(kids[i + 1].value().get());
      if (!norm || norm->folded) continue;
      ConvRef conv = FeedingConv(kids[i].value());
      if (!conv.weight) continue;
      torch::Tensor& weight = *conv.weight;
      torch::Tensor& bias = *conv.bias;
      const int64_t c = weight.size(0);
      if (norm->running_mean.numel() != c)
        throw Error(Msg("internal: ", kids[i + 1].key(), " (", norm->running_mean.numel(), " channels) does not follow ",
                        kids[i].key(), " (", c, ")"));
      const double eps = NormImpl::kEps;
      const torch::Tensor& gamma = norm->weight;
      const torch::Tensor& beta = norm->bias;
      // In float64, then back: the folded weights are as close to the exact product as float32 allows.
      torch::Tensor scale = gamma.to(torch::kFloat64) / (norm->running_var.to(torch::kFloat64) + eps).sqrt();
      std::vector<int64_t> shape(static_cast<size_t>(weight.dim()), 1);  // C_out x 1 x 1 (x 1) x 1
      shape[0] = -1;
      torch::Tensor w = weight.to(torch::kFloat64) * scale.view(shape);
      torch::Tensor b0 = bias.defined() ? bias.to(torch::kFloat64) : torch::zeros_like(scale);
      torch::Tensor b = (b0 - norm->running_mean.to(torch::kFloat64)) * scale + beta.to(torch::kFloat64);
      weight.copy_(w);
      if (bias.defined()) bias.copy_(b);
      else bias = b.to(weight.options());  // what forward adds; not a registered parameter
      norm->folded = true;
      ++folded;
    }
  }
  return folded;
}

bool HasFoldedNorm(torch::nn::Module& module) {
  for (const auto& m : module.modules(/*include_self=*/true))
    if (auto* n = dynamic_cast<NormImpl*>(m.get()); n && n->folded) return true;
  return false;
}

void ToChannelsLast(torch::nn::Module& net) {
  torch::NoGradGuard no_grad;
  for (auto& p : net.parameters())
    if (p.dim() == 4) p.set_data(p.contiguous(torch::MemoryFormat::ChannelsLast));
    else if (p.dim() == 5) p.set_data(p.contiguous(torch::MemoryFormat::ChannelsLast3d));
}

void PrepareFrozen(torch::nn::Module& net) {
  FoldBatchNorm(net);
  ToChannelsLast(net);
}

std::vector<std::string> ArchNames() {
  return {"resnet18",           "resnet34", "resnet50", "efficientnet_b0",
          "seresnext26t_32x4d", "r3d_18",   "mc3_18",   "r2plus1d_18"};
}

bool IsVideoArch(const std::string& arch) {
  return arch == "r3d_18" || arch == "mc3_18" || arch == "r2plus1d_18";
}

bool IsVideoModel(const ModelConfig& c) {
  if (IsVideoArch(c.arch)) return true;
  if (c.arch != "joint" || !c.joint.is_object() || !c.joint.contains("teachers") ||
      !c.joint["teachers"].is_array())
    return false;
  for (const auto& t : c.joint["teachers"])
    if (t.is_object() && t.contains("model") && t["model"].is_object() &&
        t["model"].contains("arch") && t["model"]["arch"].is_string() &&
        IsVideoArch(t["model"]["arch"].get<std::string>()))
      return true;
  return false;
}

namespace {
void CheckStoreKindOf(const std::string& store_path, const std::string& arch, bool video) {
  const bool clips = IsClipStore(store_path);
  if (video && !clips)
    throw Error(Msg(store_path, ": is an image store, but ", arch,
                    " is a video network (input N x C x T x H x W); give it a clip store "
                    "(prepare_data with a video or frame-folder manifest)"));
  if (!video && clips)
    throw Error(Msg(store_path, ": is a clip store, but ", arch,
                    " is an image network; train a video network (r3d_18, mc3_18, r2plus1d_18) on clips"));
}
}  // namespace

void CheckStoreKind(const std::string& store_path, const std::string& arch) {
  CheckStoreKindOf(store_path, arch, IsVideoArch(arch));
}

void CheckStoreKind(const std::string& store_path, const ModelConfig& model) {
  CheckStoreKindOf(store_path, model.arch, IsVideoModel(model));
}

nlohmann::json ModelConfig::ToJson() const {
  nlohmann::json j = {{"arch", arch},           {"in_channels", in_channels}, {"head_classes", head_classes},
          {"head_names", head_names}, {"small_stem", small_stem}, {"width", width},
          {"embed_dim", embed_dim}, {"dropout", dropout},         {"drop_path", drop_path}};
  if (!joint.is_null()) j["joint"] = joint;
  return j;
}

ModelConfig ModelConfig::FromJson(const nlohmann::json& j, const std::string& where) {
  JsonView v(j, where);
  v.AllowOnly({"arch", "in_channels", "head_classes", "head_names", "small_stem", "width", "embed_dim",
               "dropout", "drop_path", "joint"});
  ModelConfig c;
  c.arch = v.Str("arch");
  c.in_channels = v.Int32("in_channels");
  c.head_classes.clear();
  for (double x : v.Nums("head_classes")) {
    if (!(std::fabs(x) <= INT32_MAX)) v.Fail("head_classes", Msg("a head cannot have ", x, " classes"));
    c.head_classes.push_back(static_cast<int>(x));
  }
  c.head_names = v.Has("head_names") ? v.Strs("head_names") : std::vector<std::string>{};
  c.small_stem = v.Bool("small_stem", false);
  c.width = v.Num("width", 1.0);
  c.embed_dim = v.Int32("embed_dim", 0);
  c.dropout = v.Num("dropout", 0.0);
  c.drop_path = v.Num("drop_path", 0.0);
  if (j.contains("joint")) c.joint = j.at("joint");
  try {
    c.Check();
  } catch (const Error& e) {
    throw Error(Msg(where, ": ", e.what()));
  }
  return c;
}

void ModelConfig::Check() const {
  std::vector<std::string> p;
  auto archs = ArchNames();
  if (arch == "joint" ? !joint.is_object() : !joint.is_null())
    p.push_back(arch == "joint" ? "arch joint needs its joint specification" : "only arch joint has a joint specification");
  if (arch != "joint" && std::find(archs.begin(), archs.end(), arch) == archs.end())
    p.push_back("unknown architecture '" + arch + "' (valid: " +
                std::accumulate(archs.begin() + 1, archs.end(), archs[0],
                                [](std::string a, const std::string& b) { return a + ", " + b; }) + ")");
  if (in_channels != 1 && in_channels != 3) p.push_back(Msg("in_channels must be 1 or 3, not ", in_channels));
  if (head_classes.empty()) p.push_back("at least one head is needed");
  for (int k : head_classes)
    if (k < 1) p.push_back(Msg("a head needs >= 1 class, not ", k));
  if (!head_names.empty() && head_names.size() != head_classes.size())
    p.push_back("head_names must name every head");
  if (!(width > 0 && width <= 4)) p.push_back("width must be in (0, 4]");
  if (embed_dim < 0) p.push_back("embed_dim must be >= 0");
  if (!(dropout >= 0 && dropout < 1)) p.push_back("dropout must be in [0, 1)");
  if (!(drop_path >= 0 && drop_path < 1)) p.push_back("drop_path must be in [0, 1)");
  if (!p.empty()) {
    std::string all;
    for (auto& s : p) all += (all.empty() ? "" : "; ") + s;
    throw UsageError("model: " + all);
  }
}

std::vector<std::string> NetImpl::LevelNames() const {
  std::vector<std::string> l = BackboneMapLevels();
  l.push_back("pool");
  if (has_embed_) l.push_back("embed");
  l.push_back("logits");
  return l;
}

void NetImpl::RequireLevel(const std::string& level, const std::string& who) const {
  auto l = LevelNames();
  if (std::find(l.begin(), l.end(), level) == l.end())
    throw UsageError(Msg(who, " (", config_.arch, ") has no level '", level, "' (valid: ", JoinNames(l), ")"));
}

std::vector<std::string> NetImpl::StageLevels() const {
  std::vector<std::string> v;
  for (const auto& l : MapLevels())
    if (l != "stem") v.push_back(l);
  return v.empty() ? MapLevels() : v;
}

std::map<std::string, int> NetImpl::LevelChannels() const {
  auto m = MapChannels();
  m["pool"] = feature_dim_;
  if (has_embed_) m["embed"] = config_.embed_dim;
  return m;
}

void NetImpl::BuildHead(int feature_dim, const std::string& single_head_name) {
  feature_dim_ = feature_dim;
  has_embed_ = config_.embed_dim > 0 && config_.embed_dim != feature_dim;
  int e = has_embed_ ? config_.embed_dim : feature_dim;
  if (has_embed_) embed_ = register_module("embed", torch::nn::Linear(feature_dim, e));
  // Registered so train()/eval() reach it (it has no tensors: no checkpoint keys).
  dropout_ = register_module("dropout", torch::nn::Dropout(config_.dropout));
  if (config_.head_classes.size() == 1) {
    torch::nn::Linear fc(e, config_.head_classes[0]);
    auto dot = single_head_name.find('.');
    if (dot == std::string::npos) {
      register_module(single_head_name, fc);
    } else {  // e.g. EfficientNet's "classifier.1": Sequential(Dropout, Linear)
      torch::nn::Sequential seq(torch::nn::Dropout(config_.dropout), fc);
      register_module(single_head_name.substr(0, dot), seq);
    }
    heads_.push_back(fc);
  } else {
    torch::nn::ModuleList list;
    for (int k : config_.head_classes) {
      torch::nn::Linear fc(e, k);
      list->push_back(fc);
      heads_.push_back(fc);
    }
    register_module("heads", list);
  }
  // torchvision-style init for the linear layers we add: default uniform for the head; the embed
  // layer too (LibTorch's Linear default = PyTorch's).
}

namespace {
// Global average pool of the last map: over H x W, or T x H x W for a video network's 5-D maps.
torch::Tensor GlobalPool(const torch::Tensor& f) {
  return (f.dim() == 5 ? torch::adaptive_avg_pool3d(f, {1, 1, 1})
                       : torch::adaptive_avg_pool2d(f, {1, 1}))
      .flatten(1);
}
}  // namespace

torch::Tensor NetImpl::Features(const torch::Tensor& x) {
  torch::Tensor f = RunBackbone(x, {}, "", nullptr);
  f = GlobalPool(f);
  if (has_embed_) f = embed_->forward(f);
  return f;
}

torch::Tensor NetImpl::Head(const torch::Tensor& features, int head) {
  if (head < 0 || head >= num_heads()) throw Error(Msg("model has ", num_heads(), " head(s); no head ", head));
  return heads_[static_cast<size_t>(head)]->forward(dropout_->forward(features));
}

torch::Tensor NetImpl::forward(const torch::Tensor& x, int head) { return Head(Features(x), head); }

LevelMap NetImpl::Forward(const torch::Tensor& x, const std::vector<std::string>& levels, int head) {
  const auto maps = BackboneMapLevels();
  const auto all = LevelNames();
  bool need_full = false;
  int deepest = -1;
  std::vector<std::string> want_maps;
  for (const auto& l : levels) {
    if (std::find(all.begin(), all.end(), l) == all.end()) {
      std::string list;
      for (const auto& n : all) list += (list.empty() ? "" : ", ") + n;
      throw Error(Msg("unknown level '", l, "' for ", config_.arch, " (valid: ", list, ")"));
    }
    auto it = std::find(maps.begin(), maps.end(), l);
    if (it == maps.end()) {
      need_full = true;
    } else {
      deepest = std::max(deepest, static_cast<int>(it - maps.begin()));
      want_maps.push_back(l);
    }
  }
  LevelMap out;
  std::string last = need_full || deepest < 0 ? "" : maps[static_cast<size_t>(deepest)];
  torch::Tensor f = RunBackbone(x, want_maps, last, &out);
  if (!need_full) return out;
  torch::Tensor pooled = GlobalPool(f);
  out["pool"] = pooled;
  torch::Tensor feat = pooled;
  if (has_embed_) {
    feat = embed_->forward(pooled);
    out["embed"] = feat;
  }
  if (std::find(levels.begin(), levels.end(), "logits") != levels.end()) out["logits"] = Head(feat, head);
  for (auto it = out.begin(); it != out.end();)  // return exactly what was asked for
    it = std::find(levels.begin(), levels.end(), it->first) == levels.end() ? out.erase(it) : std::next(it);
  return out;
}

Net BuildModel(const ModelConfig& config) {
  config.Check();
  if (config.arch == "joint") return BuildJointNet(config);
  if (config.arch.rfind("resnet", 0) == 0) return Net(MakeResNet(config));
  if (IsVideoArch(config.arch)) return Net(MakeVideoResNet(config));
  if (config.arch == "efficientnet_b0") return Net(MakeEfficientNetB0(config));
  return Net(MakeSEResNeXt26t(config));
}

}  // namespace mlfd
