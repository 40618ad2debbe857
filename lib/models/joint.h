// The MLFD joint teacher T* (docs/mlfd.md, stage 2): frozen stage-1 teachers, each cut at
// its fusion level, a trainable adaptor per teacher (BN -> 1x1 conv to S channels), the fusion
// trunk (concat -> BN -> GELU -> 1x1 conv to Cout -> BN -> GELU = level "fused"), optional
// stride-2 3x3 stages ("fused1", "fused2", ...), global pooling ("pool") and one head per dataset
// (dropout -> Linear). It is a Net of arch "joint": evaluate, extract_features and the PyTorch
// tools treat it like any other checkpoint.
//
// Input: raw [0,1] pixels (its HeadInfo mean/std are 0/1); every teacher normalises them as it was
// trained. Teachers are referenced by path and sha256 (loading refuses a changed teacher) or
// embedded in the checkpoint under "teachers.<i>.". They always run in evaluation mode.
//
// Levels: "teacher<i>.<level>" (teacher i's fusion map), "teacher<i>.logits" (its own logits for
// its first dataset), "fused", "fused1".., "pool", "logits".
//
// Video teachers (r3d_18, mc3_18, r2plus1d_18; all of them video networks, or none): input clips
// N x C x T x H x W, the same trunk in 3-D (BatchNorm3d, 1x1x1 Conv3d adaptors and fusion conv,
// stages of 3x3x3 Conv3d with stride 1 in time and 2 in space), maps N x C x T' x H' x W'.
#pragma once

#include <torch/torch.h>

#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "models/checkpoint.h"
#include "models/model.h"

namespace mlfd {

struct JointTeacher {
  std::string path;    // stage-1 checkpoint
  std::string sha256;  // its fingerprint when the joint was built
  std::string level;   // fusion level
  ModelConfig model;
  std::vector<HeadInfo> datasets;
};

struct JointSpec {
  std::vector<JointTeacher> teachers;
  int adaptor_dim = 512;   // S
  int cout = 0;            // channels of the fused levels
  int stages = 0;          // stride-2 stages after the fusion trunk
  int64_t input_size = 0;  // H = W of the images every teacher sees
  std::vector<int64_t> teacher_map_size;  // per teacher: H of its fusion map at input_size
  int64_t fuse_size = 0;   // H = W of the fused maps (teachers' maps are pooled to it if needed)
  // Video teachers (every teacher a video network): clips of `frames` frames in, maps
  // N x C x T x H x W fused at `fuse_frames` x fuse_size x fuse_size. 0 and 0 for image teachers.
  int64_t frames = 0;
  int64_t fuse_frames = 0;
  bool embedded = false;   // teachers' weights live in the checkpoint
  bool residual_logits = false;  // logits of head d += logits of dataset d's own teacher
  std::vector<int> own_teacher;  // per head: index of the teacher trained on that dataset (-1 none)

  nlohmann::json ToJson() const;
  static JointSpec FromJson(const nlohmann::json& j, const std::string& where);
};

class JointNetImpl : public NetImpl {
 public:
  // Teachers: loaded from their paths (sha256 checked) unless `spec.embedded`.
  explicit JointNetImpl(const ModelConfig& config);

  const JointSpec& spec() const { return spec_; }
  int num_teachers() const { return static_cast<int>(teachers_.size()); }
  bool video() const { return spec_.frames > 0; }
  Net teacher(int i) const { return teachers_[static_cast<size_t>(i)]; }
  // Level name of teacher i's fusion map ("teacher<i>.<level>") and of its logits.
  std::string TeacherLevel(int i) const;
  std::string TeacherLogitsLevel(int i) const;

  std::vector<std::string> LevelNames() const override;
  // "fused", then "fused1".."fused<stages>" (the member teachers' maps are not its own).
  std::vector<std::string> MapLevels() const override;
  std::map<std::string, int> LevelChannels() const override;
  LevelMap Forward(const torch::Tensor& x, const std::vector<std::string>& levels, int head = 0) override;
  torch::Tensor forward(const torch::Tensor& x, int head = 0) override;
  // The trainable part on teacher maps (and, with residual logits, teacher logits) computed
  // elsewhere, e.g. read from a feature cache: `inputs` holds "teacher<i>.<level>" (and
  // "teacher<i>.logits") tensors.
  LevelMap ForwardFromTeachers(const LevelMap& inputs, const std::vector<std::string>& levels, int head = 0);
  // The levels a ForwardFromTeachers call needs for head `head`.
  std::vector<std::string> TeacherInputLevels(int head) const;

  // Makes the teachers' fusion-level stage trainable (ResNet family: the level is a module).
  // Needs embedded teachers. Returns the names of the parameters it unfroze.
  std::vector<std::string> UnfreezeLastStage();

  // Regularisation of the teachers' maps before the adaptors, in training mode only (a remedy for
  // T* fitted on maps of images its teachers memorised): each channel of each map dropped with
  // probability `channel_dropout` (the rest scaled by 1/(1-p), as Dropout2d), then Gaussian noise
  // of `noise` times the map's standard deviation added. Not part of the checkpoint: a training option.
  void SetInputRegularisation(double channel_dropout, double noise);

  using torch::nn::Module::to;
  void to(torch::Device device, torch::Dtype dtype, bool non_blocking = false) override;
  void to(torch::Dtype dtype, bool non_blocking = false) override;
  void to(torch::Device device, bool non_blocking = false) override;
  void train(bool on = true) override;

 protected:
  std::vector<std::string> BackboneMapLevels() const override;
  std::map<std::string, int> MapChannels() const override;
  torch::Tensor RunBackbone(const torch::Tensor& x, const std::vector<std::string>& want,
                            const std::string& last, LevelMap* out) override;

 private:
  torch::Tensor TeacherInput(const torch::Tensor& x, int i) const;
  LevelMap RunTeachers(const torch::Tensor& x, bool logits, int head);

  JointSpec spec_;
  std::vector<Net> teachers_;
  bool unfrozen_ = false;
  double input_dropout_ = 0, input_noise_ = 0;
  torch::nn::ModuleList adaptors_{nullptr};
  torch::nn::Sequential fusion_{nullptr};
  torch::nn::ModuleList stages_{nullptr};
};
TORCH_MODULE(JointNet);

// The factory for arch "joint" (BuildModel calls it).
Net BuildJointNet(const ModelConfig& config);

// The joint network inside a Net, or Error naming `what` when it is not one.
JointNetImpl& AsJoint(Net& net, const std::string& what);

// A copy of `joint` whose teachers are embedded (same weights).
Net EmbedTeachers(Net joint);

}  // namespace mlfd
