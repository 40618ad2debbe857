// distill_student.
#include "distill/student.h"

#include <torch/torch.h>

#include <algorithm>
#include <set>

#include "data/image_store.h"
#include "data/loader.h"
#include "distill/feature_cache.h"
#include "eval/metrics.h"
#include "models/checkpoint.h"
#include "util/app.h"
#include "util/device.h"
#include "util/error.h"
#include "util/log.h"
#include "util/sha256.h"

namespace mlfd {

namespace po = boost::program_options;

std::vector<std::string> MethodNames() { return {"mlfd", "mlfd_code", "kd", "fitnet", "ce"}; }

void StudentOptions::Register(po::options_description& d) {
  model.Register(d);
  augment.Register(d);
  optim.Register(d);
  loop.Register(d);
  d.add_options()("like", po::value(&like)->default_value(like),
                  "take the student's architecture (arch, width, stem, embed) from this checkpoint, e.g. the "
                  "dataset's stage-1 teacher")(
      "batch-size", po::value(&batch_size)->default_value(batch_size), "images per step")(
      "method", po::value(&method)->default_value(method), "mlfd | mlfd_code | kd | fitnet | ce")(
      "temperature", po::value(&temperature)->default_value(temperature), "KD temperature T (0 = the method's)")(
      "w-kd", po::value(&w_kd)->default_value(w_kd), "weight of the soft-target term (< 0 = the method's)")(
      "w-ce", po::value(&w_ce)->default_value(w_ce), "weight of the label term (< 0 = the method's)")(
      "w-feat", po::value(&w_feat)->default_value(w_feat), "weight of each preset level pair (< 0 = the method's)")(
      "pairs",
      po::value<std::string>()->default_value("")->notifier([this](const std::string& s) { pairs = SplitCsv(s); }),
      "level pairs replacing the method's: student:teacher[:weight[:auto|conv|none]],... (e.g. "
      "layer4:fused:0.2,embed:pool:0.2)")(
      "label-smoothing", po::value(&label_smoothing)->default_value(label_smoothing), "label smoothing of the CE term")(
      "teacher-signals", po::value(&teacher_signals)->default_value(teacher_signals),
      "online (teacher runs on the student's augmented view) | cached (clean-image signals from --features)")(
      "features", po::value(&features)->default_value(features), "cached: the teacher's feature cache of this store")(
      "pool-mismatch", po::value(&pool_mismatch)->default_value(pool_mismatch)->implicit_value(true),
      "average-pool the larger map when a level pair's spatial sizes differ")(
      "train-split", po::value(&train_split)->default_value(train_split), "split to train on")(
      "val-split", po::value(&val_split)->default_value(val_split), "split that selects the best epoch");
}

void StudentOptions::Check() const {
  OptionChecker c;
  auto m = MethodNames();
  c.Require(std::find(m.begin(), m.end(), method) != m.end(), "method",
            "unknown method '" + method + "' (valid: mlfd, mlfd_code, kd, fitnet, ce)");
  c.Require(batch_size >= 1, "batch-size", "must be >= 1");
  c.Require(temperature >= 0, "temperature", "must be >= 0");
  c.Require(label_smoothing >= 0 && label_smoothing < 1, "label-smoothing", "must be in [0, 1)");
  c.Require(teacher_signals == "online" || teacher_signals == "cached", "teacher-signals", "must be online or cached");
  c.Require(teacher_signals == "online" || !features.empty(), "features", "--teacher-signals cached needs --features");
  c.Require(teacher_signals == "cached" || features.empty(), "features", "only with --teacher-signals cached");
  for (const auto& p : pairs) {
    size_t n = std::count(p.begin(), p.end(), ':') + 1;
    c.Require(n >= 2 && n <= 4, "pairs", "'" + p + "' is not student:teacher[:weight[:regressor]]");
  }
  c.Require(train_split != val_split, "val-split", "must differ from --train-split");
  c.Require(val_split != "test", "val-split", "model selection never looks at the test split");
  c.Throw();
  model.Check();
  augment.Check();
  optim.Check();
  loop.Check();
}

namespace {
std::vector<std::string> MapLevels(Net& net) {
  std::vector<std::string> l;
  for (const auto& n : net->LevelNames())
    if (n != "pool" && n != "embed" && n != "logits" && n.rfind("teacher", 0) != 0) l.push_back(n);
  return l;
}
std::vector<std::string> Split(const std::string& s, char sep) {
  std::vector<std::string> out(1);
  for (char c : s) {
    if (c == sep) out.emplace_back();
    else out.back() += c;
  }
  return out;
}
std::string DenseLevel(Net& net) {
  auto l = net->LevelNames();
  return std::find(l.begin(), l.end(), "embed") != l.end() ? "embed" : "pool";
}
}  // namespace

std::vector<std::string> ResolvedLoss::TeacherLevels() const {
  std::vector<std::string> l;
  if (w_kd > 0) l.push_back("logits");
  for (const auto& p : pairs)
    if (std::find(l.begin(), l.end(), p.teacher) == l.end()) l.push_back(p.teacher);
  return l;
}

ResolvedLoss ResolveLoss(const StudentOptions& o, Net& teacher, Net& student) {
  ResolvedLoss r;
  const std::string& m = o.method;
  const bool joint = teacher->config().arch == "joint";
  double feat = 0;
  if (m == "mlfd" || m == "mlfd_code") {
    r.temperature = 2, r.w_kd = 0.6, r.w_ce = 0.2, feat = 0.2;
  } else if (m == "kd") {
    r.temperature = 4, r.w_kd = 0.9, r.w_ce = 0.1;
  } else if (m == "fitnet") {
    r.w_ce = 1.0, feat = 1.0;
  } else {
    r.w_ce = 1.0;
  }
  if (o.temperature > 0) r.temperature = o.temperature;
  if (o.w_kd >= 0) r.w_kd = o.w_kd;
  if (o.w_ce >= 0) r.w_ce = o.w_ce;
  if (o.w_feat >= 0) feat = o.w_feat;
  if (r.w_kd > 0 && r.temperature <= 0) r.temperature = 1;
  auto smaps = MapLevels(student), tmaps = MapLevels(teacher);
  if (!o.pairs.empty()) {
    for (const auto& p : o.pairs) {
      auto parts = Split(p, ':');
      LevelPair lp{parts[0], parts[1], parts.size() > 2 ? std::stod(parts[2]) : (feat > 0 ? feat : 1.0),
                   parts.size() > 3 ? parts[3] : "auto"};
      if (lp.regressor != "auto" && lp.regressor != "conv" && lp.regressor != "none")
        throw UsageError(Msg("--pairs: regressor '", lp.regressor, "' in '", p, "' (valid: auto, conv, none)"));
      r.pairs.push_back(lp);
    }
  } else if (m == "mlfd" || m == "mlfd_code") {
    // Teacher's post-fusion levels (T*) or its last map, matched to the student's last maps in order.
    std::vector<std::string> t;
    if (joint) {
      for (const auto& l : tmaps)
        if (l.rfind("fused", 0) == 0) t.push_back(l);
    } else {
      t.push_back(tmaps.back());
    }
    if (m == "mlfd_code") t = {t.back()};
    if (t.size() > smaps.size()) throw Error("the teacher has more fused levels than the student has map levels");
    for (size_t k = 0; k < t.size(); ++k) r.pairs.push_back({smaps[smaps.size() - t.size() + k], t[k], feat, "auto"});
    if (m == "mlfd") r.pairs.push_back({DenseLevel(student), joint ? "pool" : DenseLevel(teacher), feat, "auto"});
  } else if (m == "fitnet") {
    // One hint: the middle map level of each (FitNet's guided layer), regressor always.
    if (joint) {
      r.pairs.push_back({smaps.back(), tmaps.back(), feat, "conv"});
    } else {
      r.pairs.push_back({smaps[smaps.size() / 2], tmaps[tmaps.size() / 2], feat, "conv"});
    }
  }
  auto slev = student->LevelNames(), tlev = teacher->LevelNames();
  auto list = [](const std::vector<std::string>& v) {
    std::string s;
    for (const auto& x : v) s += (s.empty() ? "" : ", ") + x;
    return s;
  };
  for (const auto& p : r.pairs) {
    if (std::find(slev.begin(), slev.end(), p.student) == slev.end())
      throw UsageError(Msg("level pair ", p.student, ":", p.teacher, ": the student (", student->config().arch,
                           ") has no level '", p.student, "' (valid: ", list(slev), ")"));
    if (std::find(tlev.begin(), tlev.end(), p.teacher) == tlev.end())
      throw UsageError(Msg("level pair ", p.student, ":", p.teacher, ": the teacher (", teacher->config().arch,
                           ") has no level '", p.teacher, "' (valid: ", list(tlev), ")"));
    if (p.student == "logits" || p.teacher == "logits")
      throw UsageError("level pairs match features; logits are the KD term's (--w-kd)");
  }
  return r;
}

TrainResult DistillStudent(const std::string& teacher_path, const std::string& store_path, const std::string& out,
                           const StudentOptions& opts, Provenance provenance) {
  torch::Device device = ParseDevice(opts.loop.device);
  RunFiles(out).CheckWritable();
  auto store = std::make_shared<ImageStore>(ImageStore::Open(store_path));
  provenance.AddInputFingerprint("store", store_path, store->Fingerprint());
  LoadedCheckpoint tck = LoadCheckpoint(teacher_path);
  provenance.AddInputFingerprint("teacher", teacher_path, tck.sha256);
  Net teacher = tck.net;

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

  ResolvedLoss loss = ResolveLoss(opts, teacher, student);
  const auto tlevels = loss.TeacherLevels();
  // The teacher's head for this dataset (needed for logits; otherwise its first dataset's input).
  const HeadInfo* tinfo = nullptr;
  for (const auto& d : tck.meta.datasets)
    if (d.dataset == store->name()) tinfo = &d;
  if (!tinfo && loss.w_kd > 0) {
    std::string list;
    for (const auto& d : tck.meta.datasets) list += (list.empty() ? "" : ", ") + d.dataset;
    throw Error(Msg(teacher_path, ": has no logits for dataset '", store->name(), "' (it predicts: ", list,
                    "); method ", opts.method, " needs logits in the student's label space (--w-kd 0 to drop them)"));
  }
  if (!tinfo) tinfo = &tck.meta.datasets.at(0);
  if (tinfo->dataset == store->name() && tinfo->class_names != store->class_names())
    throw Error(Msg(store_path, ": its classes differ from those of ", teacher_path, "'s head for '", store->name(), "'"));
  if (tinfo->channels != store->channels())
    throw Error(Msg(teacher_path, " takes ", tinfo->channels, "-channel images, ", store_path, " has ", store->channels()));

  // Terms and their training-only adapters.
  auto tchan = teacher->LevelChannels(), schan = student->LevelChannels();
  std::vector<std::unique_ptr<LossTerm>> terms;
  if (loss.w_kd > 0) terms.push_back(MakeKdTerm(loss.w_kd, loss.temperature));
  for (const auto& p : loss.pairs) {
    bool map = p.student != "pool" && p.student != "embed";
    terms.push_back(MakeHintTerm(p.weight, p.student, schan.at(p.student), p.teacher, tchan.at(p.teacher), map,
                                 p.regressor, opts.pool_mismatch));
  }
  if (loss.w_ce > 0) terms.push_back(MakeCeTerm(loss.w_ce, opts.label_smoothing));
  auto aux = std::make_shared<torch::nn::Module>();
  std::set<std::string> student_levels{"logits"};
  for (size_t k = 0; k < terms.size(); ++k) {
    if (auto a = terms[k]->adapter()) aux->register_module(Msg("term", k), a);
    for (const auto& l : terms[k]->student_levels()) student_levels.insert(l);
  }
  {
    std::string desc;
    for (const auto& t : terms) desc += Msg(desc.empty() ? "" : " + ", t->weight(), " * ", t->name());
    MLOG(INFO) << "method " << opts.method << ": " << desc << (loss.w_kd > 0 ? Msg(" (T = ", loss.temperature, ")") : "");
  }

  std::unique_ptr<FeatureCache> cache;
  if (opts.teacher_signals == "cached") {
    cache = std::make_unique<FeatureCache>(opts.features);
    cache->CheckModel(teacher_path, tck.sha256);
    cache->CheckStore(store_path, store->Fingerprint());
    cache->RequireLevels(tlevels);
    bool mem = cache->Preload(opts.train_split, tlevels, int64_t{4} << 30);
    provenance.AddInputFingerprint("features", opts.features, Sha256File(opts.features));
    MLOG(INFO) << opts.features << ": teacher signals " << (mem ? "loaded into memory" : "read from disk")
               << " (clean images; the student sees augmented views)";
  }
  teacher->to(device);
  teacher->eval();

  LoaderOptions lo;
  lo.augment = opts.augment.Train();
  lo.seed = opts.loop.seed;
  lo.drop_last = true;
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
  std::vector<std::string> slev(student_levels.begin(), student_levels.end());
  TrainTask task;
  task.model = student.get();
  task.aux = aux.get();
  task.step = [&](const Batch& b) {
    Signals s;
    s.labels = b.labels;
    if (cache) {
      for (const auto& l : tlevels) s.teacher[l] = cache->Read(opts.train_split, l, b.indices).to(device);
    } else if (!tlevels.empty()) {
      torch::NoGradGuard g;
      torch::Tensor raw = b.images * per_channel(sinfo.std, b.images) + per_channel(sinfo.mean, b.images);
      torch::Tensor x = (raw - per_channel(tinfo->mean, raw)) / per_channel(tinfo->std, raw);
      if (x.size(2) != tinfo->height || x.size(3) != tinfo->width)
        x = torch::nn::functional::interpolate(
            x, torch::nn::functional::InterpolateFuncOptions()
                   .size(std::vector<int64_t>{tinfo->height, tinfo->width})
                   .mode(torch::kBilinear)
                   .align_corners(false));
      s.teacher = teacher->Forward(x, tlevels, tinfo->head);
    }
    if (s.teacher.count("logits")) s.teacher["logits"] = s.teacher["logits"].narrow(1, tinfo->label_offset, k);
    s.student = student->Forward(b.images, slev, 0);
    StepOutput out;
    out.loss = torch::zeros({}, b.images.options().dtype(torch::kFloat32));
    for (auto& t : terms) {
      torch::Tensor v = t->Compute(s);
      out.loss = out.loss + v * t->weight();
      out.terms[t->name()] = v.item<double>();
    }
    out.correct = s.student.at("logits").argmax(1).eq(b.labels).sum().item<int64_t>();
    out.count = b.images.size(0);
    return out;
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
