// The MLFD joint teacher T*.
#include "models/joint.h"

#include <algorithm>
#include <cmath>
#include <set>

#include "models/zoo.h"
#include "util/error.h"
#include "util/file_roles.h"
#include "util/fs.h"
#include "util/json_view.h"
#include "util/sha256.h"

namespace mlfd {

nlohmann::json JointSpec::ToJson() const {
  nlohmann::json ts = nlohmann::json::array();
  for (const auto& t : teachers) {
    nlohmann::json ds = nlohmann::json::array();
    for (const auto& d : t.datasets) ds.push_back(d.ToJson());
    ts.push_back({{"path", t.path}, {"sha256", t.sha256}, {"level", t.level}, {"model", t.model.ToJson()},
                  {"datasets", ds}});
  }
  nlohmann::json j = {{"teachers", ts},
          {"adaptor_dim", adaptor_dim},
          {"cout", cout},
          {"stages", stages},
          {"input_size", input_size},
          {"teacher_map_size", teacher_map_size},
          {"fuse_size", fuse_size},
          {"embedded", embedded},
          {"residual_logits", residual_logits},
          {"own_teacher", own_teacher}};
  if (frames > 0) {  // image joints keep their recorded configuration unchanged
    j["frames"] = frames;
    j["fuse_frames"] = fuse_frames;
  }
  return j;
}

JointSpec JointSpec::FromJson(const nlohmann::json& j, const std::string& where) {
  JsonView v(j, where);
  v.AllowOnly({"teachers", "adaptor_dim", "cout", "stages", "input_size", "teacher_map_size", "fuse_size",
               "embedded", "residual_logits", "own_teacher", "frames", "fuse_frames"});
  JointSpec s;
  if (!v.Has("teachers") || !j.at("teachers").is_array() || j.at("teachers").empty())
    throw Error(Msg(where, ": teachers must be a non-empty list"));
  const auto& ts = j.at("teachers");
  for (size_t i = 0; i < ts.size(); ++i) {
    std::string w = Msg(where, ": teachers[", i, "]");
    JsonView tv(ts[i], w);
    JointTeacher t;
    t.path = tv.Str("path");
    t.sha256 = tv.Str("sha256");
    t.level = tv.Str("level");
    t.model = ModelConfig::FromJson(tv.Child("model").json(), w + ": model");
    auto datasets = tv.Array("datasets");
    for (size_t k = 0; k < datasets.size(); ++k)
      t.datasets.push_back(HeadInfo::FromJson(datasets[k].json(), Msg(w, ": datasets[", k, "]")));
    s.teachers.push_back(t);
  }
  s.adaptor_dim = v.Int32("adaptor_dim");
  s.cout = v.Int32("cout");
  s.stages = v.Int32("stages");
  s.input_size = v.Int("input_size");
  for (double x : v.Nums("teacher_map_size")) {
    if (!(std::fabs(x) <= INT32_MAX)) v.Fail("teacher_map_size", Msg("not a map size: ", x));
    s.teacher_map_size.push_back(static_cast<int64_t>(x));
  }
  s.fuse_size = v.Int("fuse_size");
  s.embedded = v.Bool("embedded", false);
  s.residual_logits = v.Bool("residual_logits", false);
  s.frames = v.Int("frames", 0);
  s.fuse_frames = v.Int("fuse_frames", 0);
  if (s.frames < 0 || s.fuse_frames < 0 || (s.frames > 0) != (s.fuse_frames > 0))
    throw Error(Msg(where, ": frames and fuse_frames must both be > 0 (video teachers) or both 0"));
  for (double x : v.Nums("own_teacher")) {
    if (!(std::fabs(x) <= INT32_MAX)) v.Fail("own_teacher", Msg("not a teacher index: ", x));
    s.own_teacher.push_back(static_cast<int>(x));
  }
  if (s.adaptor_dim < 1 || s.cout < 1 || s.stages < 0 || s.input_size < 1 || s.fuse_size < 1 ||
      s.teacher_map_size.size() != s.teachers.size())
    throw Error(Msg(where, ": inconsistent joint specification"));
  return s;
}

JointNetImpl::JointNetImpl(const ModelConfig& config) : NetImpl(config) {
  spec_ = JointSpec::FromJson(config.joint, "joint");
  if (static_cast<int>(spec_.own_teacher.size()) != num_heads())
    throw Error(Msg("joint: own_teacher has ", spec_.own_teacher.size(), " entries for ", num_heads(), " heads"));
  torch::nn::ModuleList teacher_list;
  for (size_t i = 0; i < spec_.teachers.size(); ++i) {
    const JointTeacher& t = spec_.teachers[i];
    if (IsVideoArch(t.model.arch) != (spec_.frames > 0))
      throw UsageError(Msg("joint teacher ", i, (t.path.empty() ? "" : " (" + t.path + ")"), ": ", t.model.arch,
                           " is ", IsVideoArch(t.model.arch) ? "a video" : "an image", " network, but the joint ",
                           "teacher fuses ", spec_.frames > 0 ? "video" : "image",
                           " feature maps; its teachers are all image networks or all video networks"));
    Net net{nullptr};
    if (spec_.embedded) {
      net = BuildModel(t.model);
    } else {
      DeclareInput(Msg("teacher ", i, " of the joint teacher"), t.path);  // never an output of this command
      if (!PathExists(t.path))
        throw Error(Msg("joint teacher ", i, ": ", t.path, " does not exist (the joint checkpoint refers to it)"));
      std::string sha = Sha256File(t.path);
      if (sha != t.sha256)
        throw Error(Msg("joint teacher ", i, ": ", t.path, " changed since the joint teacher was built (sha256 ",
                        sha.substr(0, 12), ", expected ", t.sha256.substr(0, 12), "); rebuild the joint teacher"));
      LoadedCheckpoint ck = LoadCheckpoint(t.path);
      if (ck.meta.model.ToJson() != t.model.ToJson())
        throw Error(Msg("joint teacher ", i, ": ", t.path, ": model config differs from the recorded one"));
      net = ck.net;
    }
    for (auto& p : net->parameters()) p.set_requires_grad(false);
    net->eval();
    teachers_.push_back(net);
    teacher_list->push_back(net);
  }
  if (spec_.embedded) register_module("teachers", teacher_list);

  // The trunk in 2-D for image teachers, in 3-D (time, height, width) for video teachers.
  const bool v3 = spec_.frames > 0;
  auto bn = [v3](int c) -> torch::nn::AnyModule {
    return v3 ? torch::nn::AnyModule(torch::nn::BatchNorm3d(c)) : torch::nn::AnyModule(torch::nn::BatchNorm2d(c));
  };
  auto pointwise = [v3](int in, int out) -> torch::nn::AnyModule {
    return v3 ? torch::nn::AnyModule(torch::nn::Conv3d(torch::nn::Conv3dOptions(in, out, 1)))
              : torch::nn::AnyModule(torch::nn::Conv2d(torch::nn::Conv2dOptions(in, out, 1)));
  };
  auto seq = [](std::vector<torch::nn::AnyModule> ms) {
    torch::nn::Sequential s;
    for (auto& m : ms) s->push_back(std::move(m));
    return s;
  };
  adaptors_ = torch::nn::ModuleList();
  for (size_t i = 0; i < teachers_.size(); ++i) {
    int c = teachers_[i]->LevelChannels().at(spec_.teachers[i].level);
    adaptors_->push_back(seq({bn(c), pointwise(c, spec_.adaptor_dim)}));
  }
  register_module("adaptors", adaptors_);
  const int mS = spec_.adaptor_dim * num_teachers();
  fusion_ = seq({bn(mS), torch::nn::AnyModule(torch::nn::GELU()), pointwise(mS, spec_.cout), bn(spec_.cout),
                 torch::nn::AnyModule(torch::nn::GELU())});
  register_module("fusion", fusion_);
  stages_ = torch::nn::ModuleList();
  for (int k = 0; k < spec_.stages; ++k) {
    torch::nn::AnyModule conv =
        v3 ? torch::nn::AnyModule(torch::nn::Conv3d(
                 torch::nn::Conv3dOptions(spec_.cout, spec_.cout, 3).stride({1, 2, 2}).padding(1)))
           : torch::nn::AnyModule(
                 torch::nn::Conv2d(torch::nn::Conv2dOptions(spec_.cout, spec_.cout, 3).stride(2).padding(1)));
    stages_->push_back(seq({std::move(conv), bn(spec_.cout), torch::nn::AnyModule(torch::nn::GELU())}));
  }
  register_module("stages", stages_);
  BuildHead(spec_.cout, "fc");
  if (spec_.residual_logits) {  // start from the own teacher's prediction
    torch::NoGradGuard g;
    for (int h = 0; h < num_heads(); ++h)
      if (spec_.own_teacher[static_cast<size_t>(h)] >= 0) {
        heads_[static_cast<size_t>(h)]->weight.zero_();
        heads_[static_cast<size_t>(h)]->bias.zero_();
      }
  }
}

std::string JointNetImpl::TeacherLevel(int i) const {
  return Msg("teacher", i, ".", spec_.teachers[static_cast<size_t>(i)].level);
}
std::string JointNetImpl::TeacherLogitsLevel(int i) const { return Msg("teacher", i, ".logits"); }

std::vector<std::string> JointNetImpl::BackboneMapLevels() const {
  std::vector<std::string> l;
  for (int i = 0; i < num_teachers(); ++i) l.push_back(TeacherLevel(i));
  l.push_back("fused");
  for (int k = 1; k <= spec_.stages; ++k) l.push_back(Msg("fused", k));
  return l;
}

std::vector<std::string> JointNetImpl::MapLevels() const {
  std::vector<std::string> l{"fused"};
  for (int k = 1; k <= spec_.stages; ++k) l.push_back(Msg("fused", k));
  return l;
}

std::map<std::string, int> JointNetImpl::MapChannels() const {
  std::map<std::string, int> m;
  for (int i = 0; i < num_teachers(); ++i)
    m[TeacherLevel(i)] = teachers_[static_cast<size_t>(i)]->LevelChannels().at(spec_.teachers[static_cast<size_t>(i)].level);
  m["fused"] = spec_.cout;
  for (int k = 1; k <= spec_.stages; ++k) m[Msg("fused", k)] = spec_.cout;
  return m;
}

std::vector<std::string> JointNetImpl::LevelNames() const {
  std::vector<std::string> l = BackboneMapLevels();
  for (int i = 0; i < num_teachers(); ++i) l.insert(l.begin() + num_teachers() + i, TeacherLogitsLevel(i));
  l.push_back("pool");
  l.push_back("logits");
  return l;
}

std::map<std::string, int> JointNetImpl::LevelChannels() const {
  auto m = MapChannels();
  m["pool"] = spec_.cout;
  return m;
}

torch::Tensor JointNetImpl::TeacherInput(const torch::Tensor& x, int i) const {
  const JointTeacher& t = spec_.teachers[static_cast<size_t>(i)];
  const HeadInfo& h = t.datasets.at(0);
  torch::Tensor y = x;
  const int want = t.model.in_channels;
  const int64_t want_dim = spec_.frames > 0 ? 5 : 4;
  if (y.dim() != want_dim)
    throw Error(Msg("joint teacher: input of ", y.dim(), " dimensions; it takes ",
                    spec_.frames > 0 ? "clips N x C x T x H x W" : "images N x C x H x W"));
  std::vector<int64_t> shape(static_cast<size_t>(want_dim), 1);  // 1 x C x 1 x 1 (x 1)
  shape[1] = -1;
  if (y.size(1) == 1 && want == 3) {
    std::vector<int64_t> e(static_cast<size_t>(want_dim), -1);
    e[1] = 3;
    y = y.expand(e);
  }
  if (y.size(1) == 3 && want == 1) {
    auto w = torch::tensor({0.299, 0.587, 0.114}, y.options()).view(shape);
    y = (y * w).sum(1, true);
  }
  auto opt = y.options();
  torch::Tensor mean = torch::tensor(std::vector<double>(h.mean.begin(), h.mean.end()), opt).view(shape);
  torch::Tensor std = torch::tensor(std::vector<double>(h.std.begin(), h.std.end()), opt).view(shape);
  return (y - mean) / std;
}

namespace {
// Teacher i's logits for its first dataset (the head and label range of that dataset).
torch::Tensor OwnLogits(const torch::Tensor& z, const HeadInfo& h) {
  return z.narrow(1, h.label_offset, static_cast<int64_t>(h.class_names.size()));
}
}  // namespace

LevelMap JointNetImpl::RunTeachers(const torch::Tensor& x, bool logits, int head) {
  std::unique_ptr<torch::NoGradGuard> guard;
  if (!unfrozen_) guard = std::make_unique<torch::NoGradGuard>();
  LevelMap out;
  const int own = logits && spec_.residual_logits ? spec_.own_teacher[static_cast<size_t>(head)] : -1;
  for (int i = 0; i < num_teachers(); ++i) {
    const JointTeacher& t = spec_.teachers[static_cast<size_t>(i)];
    std::vector<std::string> want{t.level};
    if (i == own) want.push_back("logits");
    LevelMap r = teachers_[static_cast<size_t>(i)]->Forward(TeacherInput(x, i), want, t.datasets[0].head);
    out[TeacherLevel(i)] = r.at(t.level);
    if (i == own) out[TeacherLogitsLevel(i)] = OwnLogits(r.at("logits"), t.datasets[0]);
  }
  return out;
}

std::vector<std::string> JointNetImpl::TeacherInputLevels(int head) const {
  std::vector<std::string> l;
  for (int i = 0; i < num_teachers(); ++i) l.push_back(TeacherLevel(i));
  int own = spec_.residual_logits ? spec_.own_teacher.at(static_cast<size_t>(head)) : -1;
  if (own >= 0) l.push_back(TeacherLogitsLevel(own));
  return l;
}

void JointNetImpl::SetInputRegularisation(double channel_dropout, double noise) {
  if (!(channel_dropout >= 0 && channel_dropout < 1) || !(noise >= 0))
    throw Error(Msg("joint teacher: input channel dropout must be in [0, 1) and noise >= 0 (got ", channel_dropout,
                    ", ", noise, ")"));
  input_dropout_ = channel_dropout;
  input_noise_ = noise;
}

LevelMap JointNetImpl::ForwardFromTeachers(const LevelMap& inputs, const std::vector<std::string>& levels,
                                           int head) {
  if (head < 0 || head >= num_heads()) throw Error(Msg("joint teacher has ", num_heads(), " head(s); no head ", head));
  LevelMap out;
  std::vector<torch::Tensor> adapted;
  for (int i = 0; i < num_teachers(); ++i) {
    auto it = inputs.find(TeacherLevel(i));
    if (it == inputs.end()) throw Error(Msg("joint teacher: missing input level ", TeacherLevel(i)));
    torch::Tensor m = it->second.to(torch::kFloat32);
    if (m.dim() != (video() ? 5 : 4))
      throw Error(Msg("joint teacher: input level ", TeacherLevel(i), " has ", m.dim(), " dimensions, expected ",
                      video() ? "N x C x T x H x W" : "N x C x H x W"));
    if (video()) {
      if (m.size(2) != spec_.fuse_frames || m.size(3) != spec_.fuse_size || m.size(4) != spec_.fuse_size)
        m = torch::adaptive_avg_pool3d(m, {spec_.fuse_frames, spec_.fuse_size, spec_.fuse_size});
    } else if (m.size(2) != spec_.fuse_size || m.size(3) != spec_.fuse_size) {
      m = torch::adaptive_avg_pool2d(m, {spec_.fuse_size, spec_.fuse_size});
    }
    if (is_training() && input_dropout_ > 0)  // whole channels (of every frame) dropped
      m = video() ? torch::nn::functional::dropout3d(
                        m, torch::nn::functional::Dropout3dFuncOptions().p(input_dropout_).training(true))
                  : torch::nn::functional::dropout2d(
                        m, torch::nn::functional::Dropout2dFuncOptions().p(input_dropout_).training(true));
    if (is_training() && input_noise_ > 0) m = m + torch::randn_like(m) * (input_noise_ * m.detach().std());
    adapted.push_back(adaptors_[static_cast<size_t>(i)]->as<torch::nn::SequentialImpl>()->forward(m));
  }
  torch::Tensor f = fusion_->forward(torch::cat(adapted, 1));
  out["fused"] = f;
  for (int k = 0; k < spec_.stages; ++k) {
    f = stages_[static_cast<size_t>(k)]->as<torch::nn::SequentialImpl>()->forward(f);
    out[Msg("fused", k + 1)] = f;
  }
  torch::Tensor pooled = video() ? torch::adaptive_avg_pool3d(f, {1, 1, 1}).flatten(1)
                                 : torch::adaptive_avg_pool2d(f, {1, 1}).flatten(1);
  out["pool"] = pooled;
  if (std::find(levels.begin(), levels.end(), "logits") != levels.end()) {
    torch::Tensor z = Head(pooled, head);
    int own = spec_.residual_logits ? spec_.own_teacher[static_cast<size_t>(head)] : -1;
    if (own >= 0) {
      auto it = inputs.find(TeacherLogitsLevel(own));
      if (it == inputs.end()) throw Error(Msg("joint teacher: missing input level ", TeacherLogitsLevel(own)));
      z = z + it->second.to(z.scalar_type());
    }
    out["logits"] = z;
  }
  for (const auto& [k, t] : inputs) out.emplace(k, t);
  for (auto it = out.begin(); it != out.end();)
    it = std::find(levels.begin(), levels.end(), it->first) == levels.end() ? out.erase(it) : std::next(it);
  return out;
}

LevelMap JointNetImpl::Forward(const torch::Tensor& x, const std::vector<std::string>& levels, int head) {
  const auto all = LevelNames();
  bool only_teachers = true, teacher_logits = false;
  for (const auto& l : levels) {
    if (std::find(all.begin(), all.end(), l) == all.end()) {
      std::string list;
      for (const auto& n : all) list += (list.empty() ? "" : ", ") + n;
      throw Error(Msg("unknown level '", l, "' for the joint teacher (valid: ", list, ")"));
    }
    if (l.rfind("teacher", 0) != 0) only_teachers = false;
    if (l.size() > 7 && l.substr(l.size() - 7) == ".logits") teacher_logits = true;
  }
  LevelMap t;
  if (teacher_logits) {  // every teacher's own logits
    std::unique_ptr<torch::NoGradGuard> guard;
    if (!unfrozen_) guard = std::make_unique<torch::NoGradGuard>();
    for (int i = 0; i < num_teachers(); ++i) {
      const JointTeacher& jt = spec_.teachers[static_cast<size_t>(i)];
      LevelMap r = teachers_[static_cast<size_t>(i)]->Forward(TeacherInput(x, i), {jt.level, "logits"}, jt.datasets[0].head);
      t[TeacherLevel(i)] = r.at(jt.level);
      t[TeacherLogitsLevel(i)] = OwnLogits(r.at("logits"), jt.datasets[0]);
    }
  } else {
    bool logits = std::find(levels.begin(), levels.end(), "logits") != levels.end();
    t = RunTeachers(x, logits, logits ? head : 0);
  }
  if (only_teachers) {
    for (auto it = t.begin(); it != t.end();)
      it = std::find(levels.begin(), levels.end(), it->first) == levels.end() ? t.erase(it) : std::next(it);
    return t;
  }
  return ForwardFromTeachers(t, levels, head);
}

torch::Tensor JointNetImpl::forward(const torch::Tensor& x, int head) { return Forward(x, {"logits"}, head).at("logits"); }

torch::Tensor JointNetImpl::RunBackbone(const torch::Tensor& x, const std::vector<std::string>& want,
                                        const std::string&, LevelMap* out) {
  std::vector<std::string> levels = want;
  std::string last = spec_.stages > 0 ? Msg("fused", spec_.stages) : "fused";
  levels.push_back(last);
  LevelMap r = Forward(x, levels, 0);
  if (out)
    for (const auto& w : want) (*out)[w] = r.at(w);
  return r.at(last);
}

std::vector<std::string> JointNetImpl::UnfreezeLastStage() {
  if (!spec_.embedded)
    throw Error("unfreezing the teachers' last stage needs embedded teachers (build_joint --embed-teachers)");
  std::vector<std::string> names;
  for (const auto& p : named_parameters(true)) {
    for (int i = 0; i < num_teachers(); ++i) {
      std::string prefix = Msg("teachers.", i, ".", spec_.teachers[static_cast<size_t>(i)].level, ".");
      if (p.key().rfind(prefix, 0) == 0) {
        p.value().set_requires_grad(true);
        names.push_back(p.key());
      }
    }
  }
  if (names.empty())
    throw Error("unfreezing: no teacher parameters are named after the fusion level (only the ResNet family's "
                "levels are modules)");
  unfrozen_ = true;
  return names;
}

void JointNetImpl::to(torch::Device device, torch::Dtype dtype, bool non_blocking) {
  Module::to(device, dtype, non_blocking);
  if (!spec_.embedded)
    for (auto& t : teachers_) t->to(device, dtype, non_blocking);
}
void JointNetImpl::to(torch::Dtype dtype, bool non_blocking) {
  Module::to(dtype, non_blocking);
  if (!spec_.embedded)
    for (auto& t : teachers_) t->to(dtype, non_blocking);
}
void JointNetImpl::to(torch::Device device, bool non_blocking) {
  Module::to(device, non_blocking);
  if (!spec_.embedded)
    for (auto& t : teachers_) t->to(device, non_blocking);
}
void JointNetImpl::train(bool on) {
  Module::train(on);
  for (auto& t : teachers_) t->eval();  // frozen BN statistics, no dropout, always
}

Net BuildJointNet(const ModelConfig& config) {
  return Net(std::shared_ptr<NetImpl>(std::make_shared<JointNetImpl>(config)));
}

JointNetImpl& AsJoint(Net& net, const std::string& what) {
  auto* j = dynamic_cast<JointNetImpl*>(net.get());
  if (!j) throw Error(Msg(what, ": not a joint teacher (arch ", net->config().arch, ")"));
  return *j;
}

Net EmbedTeachers(Net joint) {
  JointNetImpl& src = AsJoint(joint, "EmbedTeachers");
  if (src.spec().embedded) return joint;
  ModelConfig c = joint->config();
  JointSpec s = src.spec();
  s.embedded = true;
  c.joint = s.ToJson();
  Net out = BuildModel(c);
  JointNetImpl& dst = AsJoint(out, "EmbedTeachers");
  torch::NoGradGuard g;
  auto src_state = src.named_parameters(true);
  for (auto& p : dst.named_parameters(true)) {
    if (p.key().rfind("teachers.", 0) == 0) continue;
    p.value().copy_(src_state[p.key()]);
  }
  auto src_buf = src.named_buffers(true);
  for (auto& b : dst.named_buffers(true)) {
    if (b.key().rfind("teachers.", 0) == 0) continue;
    b.value().copy_(src_buf[b.key()]);
  }
  for (int i = 0; i < src.num_teachers(); ++i) {
    auto tp = src.teacher(i)->named_parameters(true);
    for (auto& p : dst.teacher(i)->named_parameters(true)) p.value().copy_(tp[p.key()]);
    auto tb = src.teacher(i)->named_buffers(true);
    for (auto& b : dst.teacher(i)->named_buffers(true)) b.value().copy_(tb[b.key()]);
  }
  return out;
}

}  // namespace mlfd
