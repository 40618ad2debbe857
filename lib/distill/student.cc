// distill_student.
#include "distill/student.h"

#include <torch/torch.h>

#include <algorithm>
#include <cmath>
#include <set>

#include "data/image_store.h"
#include "data/loader.h"
#include "io/feature_cache.h"
#include "distill/multi_teacher.h"
#include "eval/metrics.h"
#include "models/checkpoint.h"
#include "util/options.h"
#include "models/device.h"
#include "util/error.h"
#include "util/log.h"
#include "util/sha256.h"

namespace mlfd {

namespace po = boost::program_options;

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

}  // namespace

TrainResult DistillStudent(const std::vector<std::string>& teacher_paths, const std::string& store_path,
                           const std::string& out, const StudentOptions& opts, Provenance provenance) {
  const bool multi = IsMultiTeacherMethod(opts.method);
  if (!multi && opts.method != "ce" && teacher_paths.size() != 1)
    throw UsageError(Msg("method ", opts.method, " takes one --teacher (got ", teacher_paths.size(),
                         "); the multi-teacher methods are unic, amtml, mtkd and feed"));
  if (opts.method == "ce" && teacher_paths.size() > 1)
    throw UsageError("method ce takes at most one --teacher (it reads no signal from it)");
  if (multi && teacher_paths.empty()) throw UsageError(Msg("method ", opts.method, " needs at least one --teacher"));
  if (opts.teacher_signals == "cached" && opts.features.size() != teacher_paths.size())
    throw UsageError(Msg("--features: ", opts.features.size(), " caches for ", teacher_paths.size(),
                         " teachers (one per --teacher, in order)"));
  torch::Device device = ParseDevice(opts.loop.device);
  RunFiles(out).CheckWritable(opts.loop.resume);
  auto store = std::make_shared<ImageStore>(ImageStore::Open(store_path));
  provenance.AddInputFingerprint("store", store_path, store->Fingerprint());
  std::vector<TeacherRun> runs(teacher_paths.size());
  std::vector<Net> teachers;
  for (size_t k = 0; k < runs.size(); ++k) {
    auto& r = runs[k];
    r.path = teacher_paths[k];
    r.ck = LoadCheckpoint(r.path);
    provenance.AddInputFingerprint(runs.size() == 1 ? std::string("teacher") : Msg("teacher", k), r.path, r.ck.sha256);
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

  ModelOptions mo = opts.model;
  if (!opts.like.empty()) {
    h5::File f = h5::File::Open(opts.like);
    ModelConfig c = ReadCheckpointMeta(f).model;
    if (c.arch == "joint") throw UsageError(Msg("--like: ", opts.like, " is a joint teacher; give a stage-1 checkpoint"));
    mo.arch = c.arch, mo.width = c.width, mo.small_stem = c.small_stem, mo.embed_dim = c.embed_dim;
  }
  ModelConfig config = mo.ToConfig(store->channels(), {store->num_classes()}, {store->name()});
  torch::manual_seed(opts.loop.seed);
  Net student = BuildModel(config);

  // Terms and their training-only adapters.
  std::vector<std::unique_ptr<LossTerm>> terms;
  std::string temperature;
  if (multi) {
    terms = MultiTeacherTerms(opts, teachers, student);
  } else if (opts.method == "ce" && teachers.empty()) {
    terms.push_back(MakeCeTerm(opts.w_ce >= 0 ? opts.w_ce : 1.0, opts.label_smoothing));
  } else {
    ResolvedLoss loss = ResolveLoss(opts, teachers[0], student);
    auto tchan = teachers[0]->LevelChannels(), schan = student->LevelChannels();
    if (loss.w_kd > 0) terms.push_back(MakeKdTerm(loss.w_kd, loss.temperature));
    for (const auto& p : loss.pairs) {
      bool map = p.student != "pool" && p.student != "embed";
      terms.push_back(MakeHintTerm(p.weight, p.student, schan.at(p.student), p.teacher, tchan.at(p.teacher), map,
                                   p.regressor, opts.pool_mismatch));
    }
    if (loss.w_ce > 0) terms.push_back(MakeCeTerm(loss.w_ce, opts.label_smoothing));
    if (loss.w_kd > 0) temperature = Msg(" (T = ", loss.temperature, ")");
  }
  auto aux = std::make_shared<torch::nn::Module>();
  std::set<std::string> student_levels{"logits"};
  std::vector<std::set<std::string>> tlevels(runs.size());
  for (size_t k = 0; k < terms.size(); ++k) {
    if (auto a = terms[k]->adapter()) aux->register_module(Msg("term", k), a);
    for (const auto& l : terms[k]->student_levels()) student_levels.insert(l);
    for (const auto& tl : terms[k]->teacher_levels()) tlevels.at(tl.teacher).insert(tl.level);
  }
  for (size_t k = 0; k < runs.size(); ++k) {
    runs[k].levels.assign(tlevels[k].begin(), tlevels[k].end());
    if (tlevels[k].count("logits") && !runs[k].has_logits) {
      std::vector<std::string> known;
      for (const auto& d : runs[k].ck.meta.datasets) known.push_back(d.dataset);
      throw Error(Msg(runs[k].path, ": has no logits for dataset '", store->name(), "' (it predicts: ", JoinNames(known),
                      "); method ", opts.method, " needs logits in the student's label space",
                      multi ? " from every teacher" : " (--w-kd 0 to drop them)"));
    }
  }
  {
    std::string desc;
    for (const auto& t : terms) desc += Msg(desc.empty() ? "" : " + ", t->weight(), " * ", t->name());
    MLOG(INFO) << "method " << opts.method << " (" << runs.size() << " teacher" << (runs.size() == 1 ? "" : "s")
               << "): " << desc << temperature;
  }

  if (opts.teacher_signals == "cached") {
    for (size_t k = 0; k < runs.size(); ++k) {
      auto& r = runs[k];
      r.cache = std::make_unique<FeatureCache>(opts.features[k]);
      r.cache->CheckModel(r.path, r.ck.sha256);
      r.cache->CheckStore(store_path, store->Fingerprint());
      if (r.has_logits) r.cache->CheckHead(r.info->dataset, r.info->head);
      r.cache->RequireLevels(r.levels);
      bool mem = r.cache->Preload(opts.train_split, r.levels, (int64_t{4} << 30) / static_cast<int64_t>(runs.size()));
      provenance.AddInputFingerprint(runs.size() == 1 ? std::string("features") : Msg("features", k), opts.features[k],
                                     Sha256File(opts.features[k]));
      MLOG(INFO) << opts.features[k] << ": teacher signals " << (mem ? "loaded into memory" : "read from disk")
                 << " (clean images; the student sees augmented views)";
    }
  }
  for (auto& t : teachers) {
    t->to(device);
    t->eval();
  }
  for (auto& t : terms) t->To(device);

  LoaderOptions lo;
  lo.augment = opts.augment.Train();
  lo.seed = opts.loop.seed;
  lo.drop_last = !opts.loop.keep_last_batch;
  lo.workers = opts.loop.workers;
  lo.prefetch = opts.loop.prefetch;
  Loader loader({LoaderSource{store, store->split(opts.train_split), opts.batch_size}}, lo);
  store->split(opts.val_split);

  HeadInfo sinfo;
  sinfo.dataset = store->name();
  sinfo.class_names = store->class_names();
  sinfo.mean = store->mean();
  sinfo.std = store->std();
  sinfo.height = opts.augment.size > 0 ? opts.augment.size : store->height();
  sinfo.width = opts.augment.size > 0 ? opts.augment.size : store->width();
  sinfo.channels = store->channels();
  sinfo.store_sha256 = store->Fingerprint();

  auto per_channel = [&](const std::vector<double>& v, const torch::Tensor& like) {
    return torch::tensor(v, like.options()).view({1, -1, 1, 1});
  };
  const int64_t k = store->num_classes();
  const int64_t spe = loader.steps_per_epoch(), total_steps = spe * opts.loop.epochs;
  int64_t step = 0;  // global step (resumed), for the schedules inside terms
  std::vector<std::string> slev(student_levels.begin(), student_levels.end());
  TrainTask task;
  task.model = student.get();
  task.aux = aux.get();
  task.step = [&](const Batch& b) {
    Signals s;
    s.labels = b.labels;
    s.progress = static_cast<double>(step) / static_cast<double>(std::max<int64_t>(1, total_steps));
    s.epoch = step / std::max<int64_t>(1, spe);
    s.teachers.resize(runs.size());
    torch::Tensor raw;
    for (size_t t = 0; t < runs.size(); ++t) {
      auto& r = runs[t];
      if (r.levels.empty()) continue;
      if (r.cache) {
        for (const auto& l : r.levels) s.teachers[t][l] = r.cache->Read(opts.train_split, l, b.indices).to(device);
      } else {
        torch::NoGradGuard g;
        if (!raw.defined()) raw = b.images * per_channel(sinfo.std, b.images) + per_channel(sinfo.mean, b.images);
        torch::Tensor x = (raw - per_channel(r.info->mean, raw)) / per_channel(r.info->std, raw);
        if (x.size(2) != r.info->height || x.size(3) != r.info->width)
          x = torch::nn::functional::interpolate(
              x, torch::nn::functional::InterpolateFuncOptions()
                     .size(std::vector<int64_t>{r.info->height, r.info->width})
                     .mode(torch::kBilinear)
                     .align_corners(false));
        s.teachers[t] = teachers[t]->Forward(x, r.levels, r.info->head);
        // A concatenated label space: this dataset's slice of the head (a cache holds it already).
        if (s.teachers[t].count("logits"))
          s.teachers[t]["logits"] = s.teachers[t]["logits"].narrow(1, r.info->label_offset, k);
      }
    }
    s.student = student->Forward(b.images, slev, 0);
    StepOutput out;
    out.loss = torch::zeros({}, b.images.options().dtype(torch::kFloat32));
    for (auto& t : terms) {
      torch::Tensor v = t->Compute(s);
      out.loss = out.loss + v * t->weight();
      out.terms[t->name()] = v.item<double>();
      for (const auto& [key, value] : t->Details()) out.terms[t->name() + "_" + key] = value;
    }
    out.correct = s.student.at("logits").argmax(1).eq(b.labels).sum().item<int64_t>();
    out.count = b.images.size(0);
    ++step;
    return out;
  };
  task.after_step = [&]() {
    for (auto& t : terms) t->AfterStep();
  };
  task.save_extra = [&]() {
    nlohmann::json j{{"step", step}, {"terms", nlohmann::json::array()}};
    for (auto& t : terms) j["terms"].push_back(t->SaveState());
    return j;
  };
  task.load_extra = [&](const nlohmann::json& j) {
    if (!j.is_object() || !j.contains("step") || !j.contains("terms") || j["terms"].size() != terms.size())
      throw Error("resume: the saved run has a different loss (terms) than these options");
    step = j["step"].get<int64_t>();
    for (size_t t = 0; t < terms.size(); ++t) terms[t]->LoadState(j["terms"][t]);
  };
  AugmentConfig eval = opts.augment.Eval();
  task.validate = [&]() {
    Predictions p = Predict(student, sinfo, store, store->split(opts.val_split), eval, device, 256, opts.loop.workers);
    double top1 = ComputeMetrics(p.logits, p.labels, k).top1;
    return nlohmann::json{{"metric", top1}, {store->name() + "_top1", top1}};
  };
  task.meta = [&]() {
    CheckpointMeta meta;
    meta.kind = "student";
    meta.model = config;
    meta.datasets = {sinfo};
    return meta;
  };
  return Train(task, loader, opts.optim, opts.loop, out, provenance, device);
}

}  // namespace mlfd
