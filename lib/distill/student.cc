// distill_student.
#include "distill/student.h"

#include <torch/torch.h>

#include <algorithm>
#include <cmath>

#include "data/clip_store.h"
#include "data/image_store.h"
#include "data/loader.h"
#include "data/mix.h"
#include "distill/multi_teacher.h"
#include "eval/metrics.h"
#include "io/feature_cache.h"
#include "io/h5.h"
#include "models/checkpoint.h"
#include "util/error.h"
#include "util/log.h"
#include "util/options.h"
#include "util/provenance.h"

namespace mlfd {

namespace {

// One frozen teacher of the run.
struct TeacherRun {
  std::string path;
  LoadedCheckpoint ck;
  const HeadInfo* info = nullptr;  // head for the student's dataset (logits), or its input's
  bool has_logits = false;
  std::vector<std::string> levels;  // what the terms read
  std::unique_ptr<FeatureCache> cache;
};

// The seed of one step's mixing: the run's seed and the global step, so a resumed run mixes as an
// uninterrupted one.
uint64_t MixSeed(uint64_t seed, int64_t step) {
  uint64_t z = seed * 0x9E3779B97F4A7C15ULL + static_cast<uint64_t>(step + 1) * 0xBF58476D1CE4E5B9ULL;
  z = (z ^ (z >> 30)) * 0x94D049BB133111EBULL;
  return z ^ (z >> 31);
}

}  // namespace

int TrainedEpochs(const std::string& checkpoint) {
  h5::File f = h5::File::Open(checkpoint);
  if (f.HasAttr("/", "provenance")) {
    nlohmann::json p = f.GetJsonAttr("/", "provenance");
    if (p.contains("options") && p["options"].contains("epochs") && p["options"]["epochs"].is_number_integer() &&
        p["options"]["epochs"].get<int64_t>() >= 1)
      return static_cast<int>(p["options"]["epochs"].get<int64_t>());
  }
  throw Error(Msg("--epochs-multiple: ", checkpoint, "'s provenance records no epochs it was trained for"));
}

namespace {

int StoredFrames(const ImageStore&) { return 0; }
int StoredFrames(const ClipStore& s) { return s.frames(); }
HeadInfo Head(const ImageStore& s, const StudentOptions& opts) {
  return StoreHead(s, opts.augment.size);
}
HeadInfo Head(const ClipStore& s, const StudentOptions& opts) {
  return StoreHead(s, opts.augment.size, opts.clip_frames);
}

// The stage on an image store, or on a clip store for video teachers and students (their maps are
// N x C x T x H x W; the terms match them alike).
template <class Store>
TrainResult DistillOn(Stage& stage, const std::vector<std::string>& teacher_paths,
                      const std::string& store_path, const std::shared_ptr<const Store>& store,
                      const StudentOptions& opts, const MethodSpec& method) {
  constexpr bool clips = std::is_same<Store, ClipStore>::value;
  const torch::Device device = stage.device();
  std::vector<TeacherRun> runs(teacher_paths.size());
  std::vector<Net> teachers;
  for (size_t k = 0; k < runs.size(); ++k) {
    auto& r = runs[k];
    r.path = teacher_paths[k];
    r.ck = stage.LoadInput(runs.size() == 1 ? std::string("teacher") : Msg("teacher", k), r.path);
    if (IsVideoModel(r.ck.meta.model) != clips)
      throw Error(
          clips
              ? Msg(store_path, ": is a clip store, but the teacher ", r.path, " (",
                    r.ck.meta.model.arch,
                    ") is an image network; distil on clips from a video network (r3d_18, mc3_18, "
                    "r2plus1d_18, or a joint teacher of them)")
              : Msg(store_path, ": is an image store, but the teacher ", r.path, " (",
                    r.ck.meta.model.arch,
                    ") is a video network (input N x C x T x H x W); give it a clip store"));
    for (const auto& d : r.ck.meta.datasets)
      if (d.dataset == store->name()) r.info = &d;
    r.has_logits = r.info != nullptr;
    if (!r.info) r.info = &r.ck.meta.datasets.at(0);
    if (r.has_logits && r.info->class_names != store->class_names())
      throw Error(Msg(store_path, ": its classes differ from those of ", r.path, "'s head for '", store->name(), "'"));
    if (r.info->channels != store->channels())
      throw Error(Msg(r.path, " takes ", r.info->channels, "-channel images, ", store_path, " has ", store->channels()));
    teachers.push_back(r.ck.net);
  }

  ModelConfig config = StudentConfig(opts, *store);
  if (IsVideoArch(config.arch) != clips)
    throw UsageError(
        Msg(opts.like.empty() ? Msg("--arch ", config.arch)
                              : Msg("--like ", opts.like, " (", config.arch, ")"),
            clips ? ": an image network cannot learn from the clip store "
                  : ": a video network cannot learn from the image store ",
            store_path,
            clips ? "; choose r3d_18, mc3_18 or r2plus1d_18" : "; choose an image architecture"));
  if (opts.clip_frames > StoredFrames(*store))
    throw UsageError(Msg("--clip-frames ", opts.clip_frames, ": ", store_path, " holds clips of ",
                         StoredFrames(*store), " frames"));
  torch::manual_seed(opts.loop.seed);
  Net student = BuildModel(config);

  // Terms and their training-only adapters.
  StudentLoss loss = BuildStudentLoss(opts, teachers, student);
  auto aux = std::make_shared<torch::nn::Module>();
  TrainTask task;
  for (size_t k = 0; k < loss.terms.size(); ++k) {
    if (auto a = loss.terms[k]->adapter()) aux->register_module(Msg("term", k), a);
    for (auto& g : loss.terms[k]->param_groups()) {
      g.name = Msg("term", k, "_", g.name);
      task.param_groups.push_back(std::move(g));
    }
  }
  for (size_t k = 0; k < runs.size(); ++k) {
    runs[k].levels = loss.teacher_levels[k];
    if (std::count(runs[k].levels.begin(), runs[k].levels.end(), "logits") && !runs[k].has_logits) {
      std::vector<std::string> known;
      for (const auto& d : runs[k].ck.meta.datasets) known.push_back(d.dataset);
      throw Error(Msg(runs[k].path, ": has no logits for dataset '", store->name(), "' (it predicts: ", JoinNames(known),
                      "); method ", opts.method, " needs logits in the student's label space",
                      method.multi_teacher() ? " from every teacher" : " (--w-kd 0 to drop them)"));
    }
  }
  MLOG(INFO) << "method " << opts.method << " (" << runs.size() << " teacher" << (runs.size() == 1 ? "" : "s")
             << "): " << loss.description;

  if (opts.teacher_signals == "cached") {
    for (size_t k = 0; k < runs.size(); ++k) {
      auto& r = runs[k];
      r.cache = stage.OpenCache(runs.size() == 1 ? std::string("features") : Msg("features", k), opts.features[k],
                                r.path, r.ck.sha256, store_path, store->Fingerprint(), r.levels,
                                (int64_t{4} << 30) / static_cast<int64_t>(runs.size()),
                                r.has_logits ? r.info->dataset : std::string(), r.info->head);
    }
    MLOG(INFO) << "teacher signals of clean images; the student sees augmented views";
  }
  for (auto& t : teachers) {
    t->to(device);
    PrepareFrozen(*t);  // frozen for good: BatchNorm folded, channels-last
  }
  for (auto& t : loss.terms) t->To(device);

  LoaderOptions lo = opts.TrainLoader();
  lo.clip_frames = opts.clip_frames;
  Loader loader({MakeSource(store, store->split(opts.train_split), opts.batch_size)}, lo);
  const HeadInfo sinfo = Head(*store, opts);

  auto per_channel = [&](const std::vector<double>& v, const torch::Tensor& like) {
    std::vector<int64_t> shape(static_cast<size_t>(like.dim()),
                               1);  // 1 x C x 1 x 1 (x 1 for clips)
    shape[1] = -1;
    return torch::tensor(v, like.options()).view(shape);
  };
  const int64_t k = store->num_classes();
  const int64_t spe = loader.steps_per_epoch(), total_steps = spe * opts.loop.epochs;
  int64_t step = 0;  // global step (resumed), for the schedules inside terms
  task.model = student.get();
  task.aux = aux.get();
  task.step = [&](const Batch& b) {
    Signals s;
    s.labels = b.labels;
    s.progress = static_cast<double>(step) / static_cast<double>(std::max<int64_t>(1, total_steps));
    s.epoch = step / std::max<int64_t>(1, spe);
    s.teachers.resize(runs.size());
    torch::Tensor images = b.images;
    if (opts.mix != "none") {  // one shared view: the teachers below and the student see the mixed batch
      MixedBatch m = MixBatch(b.images, b.labels, opts.mix, opts.mix_alpha, MixSeed(opts.loop.seed, step));
      images = m.images;
      s.labels_b = m.labels_b;
      s.mix = m.lambda;
    }
    torch::Tensor raw;
    for (size_t t = 0; t < runs.size(); ++t) {
      auto& r = runs[t];
      if (r.levels.empty()) continue;
      if (r.cache) {
        for (const auto& l : r.levels) s.teachers[t][l] = r.cache->Read(opts.train_split, l, b.indices).to(device);
      } else {
        torch::NoGradGuard g;
        if (!raw.defined()) raw = images * per_channel(sinfo.std, images) + per_channel(sinfo.mean, images);
        torch::Tensor x = (raw - per_channel(r.info->mean, raw)) / per_channel(r.info->std, raw);
        const int64_t hd = x.dim() - 2;  // the frames' height dimension (clips: N x C x T x H x W)
        if (x.size(hd) != r.info->height || x.size(hd + 1) != r.info->width) {
          // Clips: each frame resized, the frame count kept (the teacher takes any T).
          std::vector<int64_t> size{r.info->height, r.info->width};
          if (clips) size.insert(size.begin(), x.size(2));
          torch::nn::functional::InterpolateFuncOptions o;
          o.size(size).align_corners(false);
          if (clips)
            o.mode(torch::kTrilinear);
          else
            o.mode(torch::kBilinear);
          x = torch::nn::functional::interpolate(x, o);
        }
        s.teachers[t] = teachers[t]->Forward(x, r.levels, r.info->head);
        // A concatenated label space: this dataset's slice of the head (a cache holds it already).
        if (s.teachers[t].count("logits"))
          s.teachers[t]["logits"] = s.teachers[t]["logits"].narrow(1, r.info->label_offset, k);
      }
    }
    s.student = student->Forward(images, loss.student_levels, 0);
    StepOutput out;
    out.loss = torch::zeros({}, images.options().dtype(torch::kFloat32));
    for (auto& t : loss.terms) {
      torch::Tensor v = t->Compute(s);
      out.loss = out.loss + v * t->weight();
      out.terms[t->name()] = v.item<double>();
      for (const auto& [key, value] : t->Details()) out.terms[t->name() + "_" + key] = value;
    }
    // On a mixed batch a prediction counts as correct when it names the larger share's label.
    const torch::Tensor& major = s.labels_b.defined() && s.mix < 0.5 ? s.labels_b : b.labels;
    out.correct = s.student.at("logits").argmax(1).eq(major).sum().item<int64_t>();
    out.count = b.images.size(0);
    ++step;
    return out;
  };
  nlohmann::json term_names = nlohmann::json::array();
  for (const auto& t : loss.terms) term_names.push_back(t->name());
  task.save_extra = [&]() { return nlohmann::json{{"step", step}, {"terms", term_names}}; };
  task.load_extra = [&](const nlohmann::json& j) {
    if (!j.is_object() || !j.contains("step") || !j.contains("terms") || j["terms"] != term_names)
      throw Error(Msg("resume: the saved run has a different loss (terms ",
                      j.is_object() && j.contains("terms") ? j["terms"].dump() : std::string("unknown"), ") than these "
                      "options (", term_names.dump(), ")"));
    step = j["step"].get<int64_t>();
  };
  const AugmentConfig eval = opts.augment.Eval();
  task.validate = [&]() { return stage.ValidateEach(student, {sinfo}, {store}, eval); };
  task.meta = [&]() {
    CheckpointMeta meta;
    meta.kind = "student";
    meta.model = config;
    meta.datasets = {sinfo};
    return meta;
  };
  return stage.Run(task, loader);
}

}  // namespace

TrainResult DistillStudent(const std::vector<std::string>& teacher_paths,
                           const std::string& store_path, const std::string& out,
                           const StudentOptions& given, Provenance provenance) {
  StudentOptions opts = given;
  if (opts.epochs_multiple > 0) {
    const std::string& from = !opts.like.empty()      ? opts.like
                              : teacher_paths.empty() ? std::string()
                                                      : teacher_paths[0];
    if (from.empty())
      throw UsageError("--epochs-multiple: needs --like or a --teacher to take the schedule from");
    const int base = TrainedEpochs(from);
    opts.loop.epochs = std::max(1, static_cast<int>(std::lround(opts.epochs_multiple * base)));
    MLOG(INFO) << "epochs: " << opts.loop.epochs << " (" << opts.epochs_multiple << " x the "
               << base << " epochs of " << from << ")";
    provenance.json["options"]["epochs"] = opts.loop.epochs;
    provenance.json["epochs_from"] = {
        {"checkpoint", from}, {"epochs", base}, {"multiple", opts.epochs_multiple}};
    opts.Check();
  }
  const MethodSpec& method = FindMethod(opts.method);
  CheckTeacherCount(method, teacher_paths.size());
  if (opts.teacher_signals == "cached" && opts.features.size() != teacher_paths.size())
    throw UsageError(Msg("--features: ", opts.features.size(), " caches for ", teacher_paths.size(),
                         " teachers (one per --teacher, in order)"));
  Stage stage(opts, out, std::move(provenance));
  if (IsClipStore(store_path)) {
    if (opts.mix != "none")
      throw UsageError(
          Msg("--mix ", opts.mix, ": mixes image batches; ", store_path, " is a clip store"));
    return DistillOn(stage, teacher_paths, store_path,
                     stage.OpenClipStores({store_path}, false).at(0), opts, method);
  }
  if (opts.clip_frames > 0)
    throw UsageError(Msg("--clip-frames: applies to video students on clip stores; ", store_path,
                         " is an image store"));
  return DistillOn(stage, teacher_paths, store_path, stage.OpenStore(store_path), opts, method);
}

namespace {
template <class Store>
ModelConfig StudentConfigFor(const StudentOptions& opts, const Store& store) {
  ModelOptions mo = opts.model;
  if (!opts.like.empty()) {
    h5::File f = h5::File::Open(opts.like);
    ModelConfig c = ReadCheckpointMeta(f).model;
    if (c.arch == "joint") throw UsageError(Msg("--like: ", opts.like, " is a joint teacher; give a stage-1 checkpoint"));
    mo.arch = c.arch, mo.width = c.width, mo.small_stem = c.small_stem, mo.embed_dim = c.embed_dim;
  }
  return mo.ToConfig(store.channels(), {store.num_classes()}, {store.name()});
}
}  // namespace

ModelConfig StudentConfig(const StudentOptions& opts, const ImageStore& store) {
  return StudentConfigFor(opts, store);
}
ModelConfig StudentConfig(const StudentOptions& opts, const ClipStore& store) {
  return StudentConfigFor(opts, store);
}

}  // namespace mlfd
