// Checkpoint writing and strict loading.
#include "models/checkpoint.h"

#include <filesystem>
#include <map>
#include <set>

#include "io/h5.h"
#include "io/tensor_io.h"
#include "util/error.h"
#include "util/json_view.h"
#include "util/provenance.h"
#include "util/sha256.h"

namespace mlfd {

nlohmann::json HeadInfo::ToJson() const {
  nlohmann::json j = {{"dataset", dataset},   {"class_names", class_names}, {"mean", mean},
                      {"std", std},           {"height", height},           {"width", width},
                      {"channels", channels}, {"store_sha256", store_sha256}, {"label_offset", label_offset},
                      {"head", head}};
  if (frames > 0) j["frames"] = frames;  // absent for image networks: their checkpoints are unchanged
  if (train_fold.active())
    j["train_fold"] = {{"index", train_fold.index}, {"count", train_fold.count}, {"seed", train_fold.seed}};
  return j;
}

HeadInfo HeadInfo::FromJson(const nlohmann::json& j, const std::string& where) {
  JsonView v(j, where);
  HeadInfo h;
  h.dataset = v.Str("dataset");
  h.class_names = v.Strs("class_names");
  h.mean = v.Nums("mean");
  h.std = v.Nums("std");
  h.height = v.Int32("height");
  h.width = v.Int32("width");
  h.channels = v.Int32("channels");
  h.frames = v.Int32("frames", 0);
  if (h.frames < 0) throw Error(Msg(where, ".frames: ", h.frames, " is not a frame count"));
  h.store_sha256 = v.Str("store_sha256", "");
  h.label_offset = v.Int("label_offset", 0);
  h.head = v.Int32("head", 0);
  if (v.Has("train_fold")) {
    JsonView f(j.at("train_fold"), where + ".train_fold");
    h.train_fold.index = f.Int32("index");
    h.train_fold.count = f.Int32("count");
    h.train_fold.seed = static_cast<uint64_t>(f.Int("seed", 0));
    if (h.train_fold.count < 2 || h.train_fold.index < 1 || h.train_fold.index > h.train_fold.count)
      throw Error(Msg(where, ".train_fold: fold ", h.train_fold.index, " of ", h.train_fold.count, " is not a fold"));
  }
  return h;
}

const HeadInfo& CheckpointMeta::Dataset(const std::string& name, const std::string& path) const {
  for (const auto& d : datasets)
    if (d.dataset == name) return d;
  std::string list;
  for (const auto& d : datasets) list += (list.empty() ? "" : ", ") + d.dataset;
  throw Error(Msg(path, ": the model has no head for dataset '", name, "' (it predicts: ", list, ")"));
}

namespace {
// Parameters then buffers, by dotted name.
std::map<std::string, torch::Tensor> NamedState(torch::nn::Module& m) {
  std::map<std::string, torch::Tensor> out;
  for (const auto& p : m.named_parameters(true)) out[p.key()] = p.value();
  for (const auto& b : m.named_buffers(true)) out[b.key()] = b.value();
  return out;
}
}  // namespace

void WriteModelState(h5::File& f, const std::string& group, torch::nn::Module& module) {
  if (HasFoldedNorm(module))
    throw Error(Msg("internal: ", f.path(), ":", group, ": a network with BatchNorm folded for inference is not saved"));
  for (const auto& [name, t] : NamedState(module)) WriteTensor(f, group + "/" + name, t);
}

void ReadModelStateStrict(const h5::File& f, const std::string& group, torch::nn::Module& module) {
  auto state = NamedState(module);
  std::vector<std::string> problems;
  std::set<std::string> stored;
  if (f.Exists(group))
    for (const auto& n : f.List(group)) stored.insert(n);
  for (const auto& [name, t] : state) {
    if (!stored.count(name)) {
      problems.push_back(Msg("missing ", name, " (model expects ", h5::ShapeStr(t.sizes().vec()), ")"));
      continue;
    }
    h5::DatasetInfo info = f.Info(group + "/" + name);
    if (info.shape != t.sizes().vec())
      problems.push_back(Msg("mis-shaped ", name, ": checkpoint ", h5::ShapeStr(info.shape), ", model ",
                             h5::ShapeStr(t.sizes().vec())));
  }
  for (const auto& n : stored)
    if (!state.count(n)) problems.push_back(Msg("unexpected ", n));
  if (!problems.empty()) {
    std::string all;
    for (size_t i = 0; i < problems.size() && i < 30; ++i) all += "\n  " + problems[i];
    if (problems.size() > 30) all += Msg("\n  ... and ", problems.size() - 30, " more");
    throw Error(Msg(f.path(), ":", group, ": checkpoint does not match the model (", problems.size(),
                    " problem(s)):", all));
  }
  torch::NoGradGuard no_grad;
  for (auto& [name, t] : state) {
    torch::Tensor v = ReadTensor(f, group + "/" + name);
    t.copy_(v.to(t.scalar_type()));
  }
}

namespace {
namespace fs = std::filesystem;

// T* refers to its teachers by path. In the file the path is relative to the checkpoint's own
// folder, so a run folder can be moved or copied; in memory it is usable from the working
// directory. The sha256 recorded beside it still guards the content.
nlohmann::json ModelJsonForFile(const ModelConfig& model, const std::string& file) {
  nlohmann::json j = model.ToJson();
  if (model.arch != "joint" || !j.contains("joint")) return j;
  fs::path parent = fs::path(file).parent_path();
  fs::path dir = fs::absolute(parent.empty() ? fs::path(".") : parent).lexically_normal();
  for (auto& t : j["joint"]["teachers"]) {
    fs::path p = fs::absolute(t.at("path").get<std::string>()).lexically_normal();
    fs::path rel = p.lexically_relative(dir);
    t["path"] = rel.empty() ? p.string() : rel.string();
  }
  return j;
}

void ResolveJointPaths(ModelConfig& model, const std::string& file) {
  if (model.arch != "joint" || !model.joint.contains("teachers")) return;
  fs::path dir = fs::path(file).parent_path();
  for (auto& t : model.joint["teachers"]) {
    if (!t.is_object() || !t.contains("path") || !t["path"].is_string()) continue;  // FromJson says
    fs::path p = t.at("path").get<std::string>();
    if (p.is_absolute()) continue;
    fs::path beside = (dir / p).lexically_normal();
    // Checkpoints written before paths were stored relative to their folder hold paths relative
    // to the working directory they were built in: accept those when nothing is found beside.
    std::error_code ec;
    if (!fs::exists(beside, ec) && fs::exists(p, ec)) continue;
    t["path"] = beside.string();
  }
}
}  // namespace

void SaveCheckpoint(const std::string& path, torch::nn::Module& net, const CheckpointMeta& meta,
                    const TrainState* state, const Provenance& provenance, torch::nn::Module* aux) {
  h5::CheckOutputPath(path, kCheckpointFormat);
  h5::AtomicFile atomic(path);
  h5::File f = h5::File::Create(atomic);
  f.SetAttr("/", "format", kCheckpointFormat);
  f.SetAttr("/", "format_version", static_cast<int64_t>(kCheckpointVersion));
  f.SetAttr("/", "kind", meta.kind);
  f.SetJsonAttr("/", "model", ModelJsonForFile(meta.model, path));
  nlohmann::json ds = nlohmann::json::array();
  for (const auto& d : meta.datasets) ds.push_back(d.ToJson());
  f.SetJsonAttr("/", "datasets", ds);
  f.SetAttr("/", "epoch", meta.epoch);
  f.SetJsonAttr("/", "metrics", meta.metrics);
  // Class names also as plain string datasets, for h5ls/h5py readers.
  for (const auto& d : meta.datasets) f.WriteStrings("class_names/" + d.dataset, d.class_names);
  WriteModelState(f, "state", net);
  if (state) {
    const auto& o = state->optimizer_archive;
    f.Write("train_state/optimizer", h5::DType::kUInt8, {static_cast<int64_t>(o.size())}, o.data());
    const auto& r = state->torch_rng_state;
    f.Write("train_state/torch_rng", h5::DType::kUInt8, {static_cast<int64_t>(r.size())}, r.data());
    for (size_t i = 0; i < state->cuda_rng_states.size(); ++i) {
      const auto& c = state->cuda_rng_states[i];
      f.Write(Msg("train_state/cuda_rng/", i), h5::DType::kUInt8, {static_cast<int64_t>(c.size())}, c.data());
    }
    for (const auto& [name, archive] : state->group_optimizers)
      f.Write("train_state/optimizer_" + name, h5::DType::kUInt8, {static_cast<int64_t>(archive.size())},
              archive.data());
    f.SetAttr("train_state", "cuda_devices", static_cast<int64_t>(state->cuda_rng_states.size()));
    f.SetAttr("train_state", "loss_scale", state->loss_scale);
    f.SetAttr("train_state", "loss_scale_good_steps", state->loss_scale_good_steps);
    f.SetAttr("train_state", "global_step", state->global_step);
    f.SetAttr("train_state", "best_metric", state->best_metric);
    f.SetAttr("train_state", "best_epoch", state->best_epoch);
    f.SetJsonAttr("train_state", "extra", state->extra);
    if (!state->recipe.is_null()) f.SetJsonAttr("train_state", "recipe", state->recipe);
    if (aux) WriteModelState(f, "train_state/aux", *aux);
  }
  WriteProvenance(f, provenance);
  f.Close();
  atomic.Commit();
}

CheckpointMeta ReadCheckpointMeta(const h5::File& f) {
  if (!f.HasAttr("/", "format") || f.GetStringAttr("/", "format") != kCheckpointFormat)
    throw Error(Msg(f.path(), ": not a checkpoint (no format=\"", kCheckpointFormat, "\" attribute)"));
  int64_t version = f.GetIntAttr("/", "format_version");
  if (version != kCheckpointVersion)
    throw Error(Msg(f.path(), ": checkpoint format version ", version, ", this tool reads ",
                    kCheckpointVersion));
  CheckpointMeta m;
  m.kind = f.GetStringAttr("/", "kind");
  m.model = ModelConfig::FromJson(f.GetJsonAttr("/", "model"), f.path() + ": model");
  ResolveJointPaths(m.model, f.path());
  auto ds = f.GetJsonAttr("/", "datasets");
  if (!ds.is_array()) throw Error(Msg(f.path(), ": attribute 'datasets' is not a list"));
  for (size_t i = 0; i < ds.size(); ++i)
    m.datasets.push_back(HeadInfo::FromJson(ds[i], Msg(f.path(), ": datasets[", i, "]")));
  m.epoch = f.GetIntAttr("/", "epoch");
  m.metrics = f.GetJsonAttr("/", "metrics");
  return m;
}

LoadedCheckpoint LoadCheckpoint(const std::string& path, bool with_train_state) {
  LoadedCheckpoint out;
  h5::File f = h5::File::Open(path);
  out.meta = ReadCheckpointMeta(f);
  out.net = BuildModel(out.meta.model);
  ReadModelStateStrict(f, "state", *out.net);
  if (with_train_state && f.Exists("train_state")) {
    out.has_train_state = true;
    auto o = f.ReadVector<uint8_t>("train_state/optimizer");
    out.state.optimizer_archive.assign(o.begin(), o.end());
    auto r = f.ReadVector<uint8_t>("train_state/torch_rng");
    out.state.torch_rng_state.assign(r.begin(), r.end());
    out.state.global_step = f.GetIntAttr("train_state", "global_step");
    out.state.best_metric = f.GetDoubleAttr("train_state", "best_metric");
    out.state.best_epoch = f.GetIntAttr("train_state", "best_epoch");
    out.state.extra = f.GetJsonAttr("train_state", "extra");
    if (f.HasAttr("train_state", "recipe")) out.state.recipe = f.GetJsonAttr("train_state", "recipe");
  }
  f.Close();
  out.sha256 = Sha256File(path);
  return out;
}

}  // namespace mlfd
