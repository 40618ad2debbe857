// The model zoo: backbones with named feature levels and the MLFD classifier head
// (pool -> optional Linear F->E "embed", identity activation -> Linear E->C per head).
// Parameter and buffer names follow torchvision (ResNet, EfficientNet-B0, the video ResNets
// r3d_18, mc3_18, r2plus1d_18, whose inputs are N x C x T x H x W clips) and timm
// (SE-ResNeXt-26t-32x4d), because the names are the checkpoint format: weights move between
// PyTorch and this tool with h5py (tools/torch_to_h5.py, tools/h5_to_torch.py).
#pragma once

#include <torch/torch.h>

#include <map>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

namespace mlfd {

// Fully describes a network; stored as JSON in every checkpoint so any stage rebuilds the model
// from the checkpoint alone.
struct ModelConfig {
  std::string arch = "resnet18";   // see ArchNames()
  int in_channels = 3;             // 1 or 3
  std::vector<int> head_classes{10};  // classes per head (one head, or one per dataset)
  std::vector<std::string> head_names;  // dataset name of each head (may be empty)
  bool small_stem = false;  // 3x3 stride-1 stem conv, no max-pool (28-64 px inputs); video
                            // ResNets: a 3x3 spatial stem kernel without spatial stride
  double width = 1.0;       // channel multiplier (tiny test/demo models)
  int embed_dim = 2048;     // MLFD dense "embed" level size; 0 = none; skipped when == feature dim
  double dropout = 0.0;     // before the head(s)
  double drop_path = 0.0;   // stochastic depth rate (linearly increasing over blocks)
  // arch "joint" only: the MLFD joint teacher's specification (models/joint.h, JointSpec).
  nlohmann::json joint;

  nlohmann::json ToJson() const;
  // Validates every key (unknown arch lists the valid ones); `where` prefixes error messages.
  static ModelConfig FromJson(const nlohmann::json& j, const std::string& where);
  void Check() const;  // throws UsageError listing every invalid value
};

std::vector<std::string> ArchNames();
// Whether `arch` is a video network (input N x C x T x H x W, 5-D maps): r3d_18, mc3_18,
// r2plus1d_18.
bool IsVideoArch(const std::string& arch);
// Whether a network of this config reads clips: a video architecture, or a joint teacher (arch
// "joint") whose member teachers are video networks (its maps are then N x C x T x H x W too).
bool IsVideoModel(const ModelConfig& config);
// Refuses, with one line naming the file and the architecture, a store of the wrong kind for
// `arch`: a video network reads clip stores, an image network image stores.
void CheckStoreKind(const std::string& store_path, const std::string& arch);
// The same for a network of this config (a joint teacher of video networks reads clips).
void CheckStoreKind(const std::string& store_path, const ModelConfig& model);

using LevelMap = std::map<std::string, torch::Tensor>;

class NetImpl : public torch::nn::Module {
 public:
  virtual ~NetImpl() = default;
  const ModelConfig& config() const { return config_; }

  // Every level in forward order: backbone maps (e.g. "stem", "layer1".."layer4" for ResNets,
  // "stem", "stage1".."stage7", "head_conv" for EfficientNet), then "pool" (N x F), "embed"
  // (N x E, only if the model has one) and "logits".
  virtual std::vector<std::string> LevelNames() const;
  // The network's own feature-map levels in forward order, what level pairs, fusion and hints
  // choose from (for a joint teacher: "fused", "fused1", ..., not its member teachers' maps).
  virtual std::vector<std::string> MapLevels() const { return BackboneMapLevels(); }
  // MapLevels() without the stem (a ladder's or hints' stages), or all of them when that leaves none.
  std::vector<std::string> StageLevels() const;
  // Throws UsageError "<who> (<arch>) has no level '<level>' (valid: ...)" when it has no such level.
  void RequireLevel(const std::string& level, const std::string& who) const;
  // The dense level the heads read: "embed" when the network has one, else "pool".
  std::string DenseLevel() const { return has_embed_ ? "embed" : "pool"; }
  // Runs the network and returns the requested levels (computing only as far as needed);
  // "logits" are those of head `head`. An unknown name throws Error listing the valid names.
  virtual LevelMap Forward(const torch::Tensor& x, const std::vector<std::string>& levels, int head = 0);
  // Logits of head `head`.
  virtual torch::Tensor forward(const torch::Tensor& x, int head = 0);
  // Backbone + pool + embed: the vector every head reads (N x E, or N x F without embed).
  torch::Tensor Features(const torch::Tensor& x);
  // Applies dropout (in training) and head `head` to Features() output.
  torch::Tensor Head(const torch::Tensor& features, int head);

  int num_heads() const { return static_cast<int>(config_.head_classes.size()); }
  int feature_dim() const { return feature_dim_; }   // F: channels after the backbone
  int embed_dim() const { return has_embed_ ? config_.embed_dim : 0; }
  // Output channels of each backbone map level (for adaptors and regressors).
  virtual std::map<std::string, int> LevelChannels() const;

 protected:
  explicit NetImpl(ModelConfig config) : config_(std::move(config)) {}
  // Every map level the backbone computes, in forward order (a joint teacher's include its member
  // teachers' maps, "teacher<i>.<level>").
  virtual std::vector<std::string> BackboneMapLevels() const = 0;
  virtual std::map<std::string, int> MapChannels() const = 0;
  // Runs the backbone up to (and including) map level `last`, storing in `out` every map level
  // named in `want`. Returns the output of `last` (the final map when `last` is empty).
  virtual torch::Tensor RunBackbone(const torch::Tensor& x, const std::vector<std::string>& want,
                                    const std::string& last, LevelMap* out) = 0;
  // Registers the embed layer and the head(s) under the architecture's names: called at the end of
  // every subclass constructor, once feature_dim_ is known. Single head: "fc" (ResNet, timm) or
  // "classifier.1" (EfficientNet, `head_name`); several heads: "heads.<i>".
  void BuildHead(int feature_dim, const std::string& single_head_name);

  ModelConfig config_;
  int feature_dim_ = 0;
  bool has_embed_ = false;
  torch::nn::Linear embed_{nullptr};
  std::vector<torch::nn::Linear> heads_;
  torch::nn::Dropout dropout_{nullptr};
};
TORCH_MODULE(Net);

// Builds a randomly initialised network (torchvision's init schemes) for the config.
Net BuildModel(const ModelConfig& config);

// For a network that only runs frozen from now on (a teacher's signals, extract_features,
// evaluate): puts it in evaluation mode and folds every backbone BatchNorm into the convolution
// that feeds it (weight * gamma / sqrt(var + eps), bias (b - mean) * gamma / sqrt(var + eps) + beta),
// so the BatchNorm passes are skipped. Outputs equal the unfolded network's within float rounding.
// A folded network must stay in evaluation mode and is never saved (WriteModelState refuses it).
// Returns how many BatchNorms were folded.
int FoldBatchNorm(torch::nn::Module& net);
// Whether any BatchNorm of `module` is folded.
bool HasFoldedNorm(torch::nn::Module& module);
// Every 4-D parameter (the 2-D convolutions' weights) in channels-last order, every 5-D one (the
// video networks' 3-D convolutions) in channels-last-3d order: a convolution's output follows its
// weight's layout, so the forward pass runs channels-last from the first one on.
void ToChannelsLast(torch::nn::Module& net);
// What the stages do to a network that only runs frozen (evaluate, extract_features, a student's
// teachers): FoldBatchNorm, then ToChannelsLast. Outputs equal the
// unprepared network's within float rounding (docs/performance.md measures the speed).
void PrepareFrozen(torch::nn::Module& net);

}  // namespace mlfd
