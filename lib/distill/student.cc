// distill_student.
#include "distill/student.h"

#include <torch/torch.h>

#include <algorithm>
#include <cmath>
#include <set>

#include "data/image_store.h"
#include "data/loader.h"
#include "distill/feature_cache.h"
#include "distill/multi_teacher.h"
#include "eval/metrics.h"
#include "models/checkpoint.h"
#include "util/app.h"
#include "util/device.h"
#include "util/error.h"
#include "util/log.h"
#include "util/sha256.h"

namespace mlfd {

namespace po = boost::program_options;

std::vector<std::string> MethodNames() {
  return {"mlfd", "mlfd_code", "kd", "fitnet", "ce", "unic", "amtml", "mtkd", "feed"};
}
bool IsMultiTeacherMethod(const std::string& m) {
  return m == "unic" || m == "amtml" || m == "mtkd" || m == "feed";
}

namespace {
// Comma-separated, empty entries kept ("a,,c" -> a, "", c); "" -> none.
std::vector<std::string> SplitKeepEmpty(const std::string& s) {
  std::vector<std::string> out;
  if (s.empty()) return out;
  out.emplace_back();
  for (char c : s) {
    if (c == ',') out.emplace_back();
    else if (c != ' ') out.back() += c;
  }
  return out;
}
std::vector<double> SplitDoubles(const std::string& s, const std::string& option) {
  std::vector<double> v;
  for (const auto& x : SplitCsv(s)) {
    try {
      size_t used = 0;
      v.push_back(std::stod(x, &used));
      if (used != x.size()) throw std::invalid_argument(x);
    } catch (const std::exception&) {
      throw UsageError(Msg("--", option, ": '", x, "' is not a number"));
    }
  }
  return v;
}
}  // namespace

void StudentOptions::Register(po::options_description& d) {
  model.Register(d);
  augment.Register(d);
  optim.Register(d);
  loop.Register(d);
  d.add_options()("like", po::value(&like)->default_value(like),
                  "take the student's architecture (arch, width, stem, embed) from this checkpoint, e.g. the "
                  "dataset's stage-1 teacher")(
      "batch-size", po::value(&batch_size)->default_value(batch_size), "images per step")(
      "method", po::value(&method)->default_value(method),
      "mlfd | mlfd_code | kd | fitnet | ce (one teacher); unic | amtml | mtkd | feed (any number of teachers)")(
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
      "features",
      po::value<std::string>()->default_value("")->notifier([this](const std::string& s) { features = SplitCsv(s); }),
      "cached: each teacher's feature cache of this store, comma-separated in --teacher order")(
      "pool-mismatch", po::value(&pool_mismatch)->default_value(pool_mismatch)->implicit_value(true),
      "average-pool the larger map when a level pair's spatial sizes differ")(
      "train-split", po::value(&train_split)->default_value(train_split), "split to train on")(
      "val-split", po::value(&val_split)->default_value(val_split), "split that selects the best epoch")(
      "teacher-map-levels",
      po::value<std::string>()->default_value("")->notifier(
          [this](const std::string& s) { teacher_map_levels = SplitKeepEmpty(s); }),
      "multi-teacher methods: each teacher's map level, in --teacher order (empty entry = its last map)")(
      "teacher-vector-levels",
      po::value<std::string>()->default_value("")->notifier(
          [this](const std::string& s) { teacher_vector_levels = SplitKeepEmpty(s); }),
      "unic: each teacher's pooled-vector level (empty entry = embed or pool; pool for a joint teacher)")(
      "student-level", po::value(&student_level)->default_value(student_level),
      "unic/amtml/feed: the student's map level (default: its last map)");
  po::options_description u("UNIC (--method unic)");
  u.add_options()("unic-stages",
                  po::value<std::string>()->default_value("")->notifier(
                      [this](const std::string& s) { unic_stages = SplitCsv(s); }),
                  "student map levels of the projector ladder (default: every map level but the stem)")(
      "unic-hidden", po::value(&unic_hidden)->default_value(unic_hidden), "projector hidden width")(
      "unic-hidden-last", po::value(&unic_hidden_last)->default_value(unic_hidden_last),
      "hidden width of the last stage's projectors (0 = twice --unic-hidden)")(
      "unic-drop-p", po::value(&unic_drop_p)->default_value(unic_drop_p),
      "teacher dropping: probability of dropping a teacher other than the worst-fitted (0 = uniform)")(
      "unic-momentum-start", po::value(&unic_momentum_start)->default_value(unic_momentum_start),
      "standardisation momentum at the start (cosine schedule)")(
      "unic-momentum-end", po::value(&unic_momentum_end)->default_value(unic_momentum_end),
      "standardisation momentum at the end")(
      "unic-targets", po::value(&unic_targets)->default_value(unic_targets), "both | vector | map");
  d.add(u);
  po::options_description a("AMTML-KD (--method amtml; mtkd = uniform weights, no RKD, no hints)");
  a.add_options()("amtml-weights", po::value(&amtml_weights)->default_value(amtml_weights),
                  "instance (per image, learned) | teacher (per teacher: learned, or fixed by "
                  "--amtml-teacher-weights) | uniform")(
      "amtml-teacher-weights",
      po::value<std::string>()->default_value("")->notifier(
          [this](const std::string& s) { amtml_teacher_weights = SplitDoubles(s, "amtml-teacher-weights"); }),
      "teacher mode: fixed weights, in --teacher order (normalised to sum 1)")(
      "amtml-pool", po::value(&amtml_pool)->default_value(amtml_pool), "pooling of the student map: avg | max")(
      "amtml-reg", po::value(&amtml_reg)->default_value(amtml_reg), "regulariser of the weighting parameters")(
      "amtml-detach", po::value(&amtml_detach)->default_value(amtml_detach)->implicit_value(true),
      "no gradient from the weighting into the student")(
      "amtml-alpha", po::value(&amtml_alpha)->default_value(amtml_alpha),
      "weight of the KL term (CE gets 1 - alpha unless --w-ce)")(
      "amtml-w-angle", po::value(&amtml_w_angle)->default_value(amtml_w_angle), "RKD angle weight")(
      "amtml-w-dist", po::value(&amtml_w_dist)->default_value(amtml_w_dist), "RKD distance weight")(
      "amtml-hints", po::value(&amtml_hints)->default_value(amtml_hints),
      "stages (teacher k -> the k-th of the student's last stages) | same (every teacher's map -> the "
      "student's last map) | none | list k:teacher_level:student_level,...")(
      "amtml-w-hint", po::value(&amtml_w_hint)->default_value(amtml_w_hint), "weight of each hint")(
      "amtml-schedule", po::value(&amtml_schedule)->default_value(amtml_schedule),
      "joint (weighting trained throughout) | two_phase (trained in the first --amtml-phase1-epochs, then frozen)")(
      "amtml-phase1-epochs", po::value(&amtml_phase1_epochs)->default_value(amtml_phase1_epochs),
      "two_phase: epochs of the adapter phase")(
      "amtml-lr", po::value(&amtml_lr)->default_value(amtml_lr), "learning rate of the weighting's own Adam");
  d.add(a);
  po::options_description f("FEED (--method feed)");
  f.add_options()("feed-beta", po::value(&feed_beta)->default_value(feed_beta), "weight of the feature term")(
      "feed-norm", po::value(&feed_norm)->default_value(feed_norm),
      "flat (L2 over each flattened map) | position (L2 along channels at each position)");
  d.add(f);
}

void StudentOptions::Check() const {
  OptionChecker c;
  auto m = MethodNames();
  c.Require(std::find(m.begin(), m.end(), method) != m.end(), "method",
            "unknown method '" + method + "' (valid: mlfd, mlfd_code, kd, fitnet, ce, unic, amtml, mtkd, feed)");
  c.Require(batch_size >= 1, "batch-size", "must be >= 1");
  c.Require(temperature >= 0, "temperature", "must be >= 0");
  c.Require(label_smoothing >= 0 && label_smoothing < 1, "label-smoothing", "must be in [0, 1)");
  c.Require(teacher_signals == "online" || teacher_signals == "cached", "teacher-signals", "must be online or cached");
  c.Require(teacher_signals == "online" || !features.empty(), "features", "--teacher-signals cached needs --features");
  c.Require(unic_hidden >= 1 && unic_hidden_last >= 0, "unic-hidden", "must be >= 1 (last: >= 0)");
  c.Require(unic_drop_p >= 0 && unic_drop_p < 1, "unic-drop-p", "must be in [0, 1)");
  c.Require(unic_momentum_start > 0 && unic_momentum_start <= 1 && unic_momentum_end > 0 && unic_momentum_end <= 1,
            "unic-momentum-start", "momenta must be in (0, 1]");
  c.Require(unic_targets == "both" || unic_targets == "vector" || unic_targets == "map", "unic-targets",
            "must be both, vector or map");
  c.Require(amtml_weights == "instance" || amtml_weights == "teacher" || amtml_weights == "uniform", "amtml-weights",
            "must be instance, teacher or uniform");
  c.Require(amtml_teacher_weights.empty() || amtml_weights == "teacher", "amtml-teacher-weights",
            "only with --amtml-weights teacher");
  c.Require(amtml_pool == "avg" || amtml_pool == "max", "amtml-pool", "must be avg or max");
  c.Require(amtml_schedule == "joint" || amtml_schedule == "two_phase", "amtml-schedule", "must be joint or two_phase");
  c.Require(amtml_alpha >= 0 && amtml_alpha <= 1, "amtml-alpha", "must be in [0, 1]");
  c.Require(amtml_reg >= 0 && amtml_w_angle >= 0 && amtml_w_dist >= 0 && amtml_w_hint >= 0, "amtml-reg",
            "weights must be >= 0");
  c.Require(amtml_lr > 0, "amtml-lr", "must be > 0");
  c.Require(amtml_phase1_epochs >= 1, "amtml-phase1-epochs", "must be >= 1");
  c.Require(feed_beta >= 0, "feed-beta", "must be >= 0");
  c.Require(feed_norm == "flat" || feed_norm == "position", "feed-norm", "must be flat or position");
  c.Require(teacher_signals == "cached" || features.empty(), "features", "only with --teacher-signals cached");
  for (const auto& p : pairs) {
    std::string why;
    LevelPair parsed;
    c.Require(LevelPair::TryParse(p, 1.0, &parsed, &why), "pairs", why);
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
std::vector<std::string> Split(const std::string& s, char sep) {
  std::vector<std::string> out(1);
  for (char c : s) {
    if (c == sep) out.emplace_back();
    else out.back() += c;
  }
  return out;
}
// Throws a usage error naming `who`, the level and the valid ones when `net` has no level `level`.
void RequireLevel(Net& net, const std::string& level, const std::string& who) {
  auto l = net->LevelNames();
  if (std::find(l.begin(), l.end(), level) == l.end())
    throw UsageError(Msg(who, " (", net->config().arch, ") has no level '", level, "' (valid: ", JoinNames(l), ")"));
}
}  // namespace

bool LevelPair::TryParse(const std::string& spec, double default_weight, LevelPair* out, std::string* why) {
  auto parts = Split(spec, ':');
  auto fail = [&](const std::string& what) {
    *why = Msg("'", spec, "': ", what, " (format student:teacher[:weight[:auto|conv|none]])");
    return false;
  };
  if (parts.size() < 2 || parts.size() > 4) return fail(Msg(parts.size(), " field", parts.size() == 1 ? "" : "s", ", not 2 to 4"));
  if (parts[0].empty()) return fail("the student level is empty");
  if (parts[1].empty()) return fail("the teacher level is empty");
  LevelPair lp{parts[0], parts[1], default_weight, "auto"};
  if (parts.size() > 2 && !parts[2].empty()) {
    const std::string& w = parts[2];
    size_t used = 0;
    double v = -1;
    try {
      v = std::stod(w, &used);
    } catch (const std::exception&) {
      used = 0;
    }
    if (used != w.size() || !std::isfinite(v) || v < 0) return fail(Msg("the weight '", w, "' is not a number >= 0"));
    lp.weight = v;
  }
  if (parts.size() > 3) {
    lp.regressor = parts[3];
    if (lp.regressor != "auto" && lp.regressor != "conv" && lp.regressor != "none")
      return fail(Msg("the regressor '", lp.regressor, "' is not auto, conv or none"));
  }
  *out = lp;
  return true;
}

LevelPair LevelPair::Parse(const std::string& spec, double default_weight) {
  LevelPair lp;
  std::string why;
  if (!TryParse(spec, default_weight, &lp, &why)) throw UsageError("--pairs: " + why);
  return lp;
}

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
  auto smaps = student->MapLevels(), tmaps = teacher->MapLevels();
  if (!o.pairs.empty()) {
    for (const auto& p : o.pairs) r.pairs.push_back(LevelPair::Parse(p, feat > 0 ? feat : 1.0));
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
    if (m == "mlfd") r.pairs.push_back({student->DenseLevel(), joint ? "pool" : teacher->DenseLevel(), feat, "auto"});
  } else if (m == "fitnet") {
    // One hint: the middle map level of each (FitNet's guided layer), regressor always.
    if (joint) {
      r.pairs.push_back({smaps.back(), tmaps.back(), feat, "conv"});
    } else {
      r.pairs.push_back({smaps[smaps.size() / 2], tmaps[tmaps.size() / 2], feat, "conv"});
    }
  }
  for (const auto& p : r.pairs) {
    RequireLevel(student, p.student, Msg("level pair ", p.student, ":", p.teacher, ": the student"));
    RequireLevel(teacher, p.teacher, Msg("level pair ", p.student, ":", p.teacher, ": the teacher"));
    if (p.student == "logits" || p.teacher == "logits")
      throw UsageError("level pairs match features; logits are the KD term's (--w-kd)");
  }
  return r;
}

namespace {

std::string PerTeacher(const std::vector<std::string>& v, size_t k, const std::string& def) {
  return k < v.size() && !v[k].empty() ? v[k] : def;
}

}  // namespace

std::vector<std::unique_ptr<LossTerm>> MultiTeacherTerms(const StudentOptions& o, std::vector<Net>& teachers,
                                                         Net& student) {
  const std::string& m = o.method;
  const size_t K = teachers.size();
  for (const auto* v : {&o.teacher_map_levels, &o.teacher_vector_levels})
    if (!v->empty() && v->size() != K)
      throw UsageError(Msg("--teacher-map-levels / --teacher-vector-levels: ", v->size(), " entries for ", K,
                           " teachers"));
  auto schan = student->LevelChannels();
  const std::string slevel = o.student_level.empty() ? student->MapLevels().back() : o.student_level;
  RequireLevel(student, slevel, "--student-level: the student");
  std::vector<std::string> tmap(K), tvec(K);
  for (size_t k = 0; k < K; ++k) {
    Net& t = teachers[k];
    tmap[k] = PerTeacher(o.teacher_map_levels, k, t->MapLevels().back());
    tvec[k] = PerTeacher(o.teacher_vector_levels, k, t->config().arch == "joint" ? "pool" : t->DenseLevel());
    RequireLevel(t, tmap[k], Msg("--teacher-map-levels: teacher ", k));
    RequireLevel(t, tvec[k], Msg("--teacher-vector-levels: teacher ", k));
  }
  auto channels = [&](size_t k, const std::string& l) { return teachers[k]->LevelChannels().at(l); };
  std::vector<std::unique_ptr<LossTerm>> terms;
  double w_ce = 1.0;
  if (m == "unic") {
    UnicSpec u;
    u.stages = o.unic_stages.empty() ? student->StageLevels() : o.unic_stages;
    for (const auto& l : u.stages) {
      RequireLevel(student, l, "--unic-stages: the student");
      if (l == "pool" || l == "embed" || l == "logits") throw UsageError("--unic-stages: '" + l + "' is not a map level");
      u.stage_channels.push_back(schan.at(l));
    }
    for (size_t k = 0; k < K; ++k) u.teachers.push_back({tvec[k], tmap[k], channels(k, tvec[k]), channels(k, tmap[k])});
    u.hidden = o.unic_hidden;
    u.hidden_last = o.unic_hidden_last > 0 ? o.unic_hidden_last : 2 * o.unic_hidden;
    u.drop_p = o.unic_drop_p;
    u.momentum_start = o.unic_momentum_start, u.momentum_end = o.unic_momentum_end;
    u.vector_target = o.unic_targets != "map";
    u.map_target = o.unic_targets != "vector";
    terms.push_back(MakeUnicTerm(o.w_feat >= 0 ? o.w_feat : 1.0, u));
  } else if (m == "amtml" || m == "mtkd") {
    AmtmlSpec a;
    a.teachers = static_cast<int>(K);
    a.student_map = slevel;
    a.student_channels = schan.at(slevel);
    a.temperature = o.temperature > 0 ? o.temperature : 5.0;
    a.alpha = o.w_kd >= 0 ? o.w_kd : o.amtml_alpha;
    if (m == "mtkd") {
      a.weights = "uniform", a.w_angle = 0, a.w_dist = 0;
    } else {
      a.weights = o.amtml_weights, a.fixed_teacher_weights = o.amtml_teacher_weights, a.pool = o.amtml_pool;
      a.reg = o.amtml_reg, a.detach = o.amtml_detach, a.w_angle = o.amtml_w_angle, a.w_dist = o.amtml_w_dist;
      a.schedule = o.amtml_schedule, a.phase1_epochs = o.amtml_phase1_epochs, a.lr = o.amtml_lr;
    }
    terms.push_back(MakeAmtmlTerm(a));
    w_ce = 1.0 - a.alpha;
    // Multi-group hints.
    if (m == "amtml" && o.amtml_hints != "none" && o.amtml_w_hint > 0) {
      struct Hint { size_t k; std::string tl, sl; };
      std::vector<Hint> hints;
      if (o.amtml_hints == "stages") {
        auto ss = student->StageLevels();
        for (size_t k = 0; k < K; ++k) {
          auto ts = teachers[k]->StageLevels();
          size_t back = K - 1 - k;  // teacher k -> the k-th of the last K stages
          hints.push_back({k, ts[ts.size() - 1 - std::min(back, ts.size() - 1)],
                           ss[ss.size() - 1 - std::min(back, ss.size() - 1)]});
        }
      } else if (o.amtml_hints == "same") {
        for (size_t k = 0; k < K; ++k) hints.push_back({k, tmap[k], slevel});
      } else {
        for (const auto& h : SplitCsv(o.amtml_hints)) {
          auto p = Split(h, ':');
          if (p.size() != 3)
            throw UsageError(Msg("--amtml-hints: '", h, "' is not teacher:teacher_level:student_level (or stages, "
                                 "same, none)"));
          size_t k = 0;
          try {
            k = std::stoul(p[0]);
          } catch (const std::exception&) {
            throw UsageError(Msg("--amtml-hints: '", p[0], "' in '", h, "' is not a teacher index"));
          }
          if (k >= K) throw UsageError(Msg("--amtml-hints: teacher ", k, " in '", h, "' (there are ", K, ")"));
          hints.push_back({k, p[1], p[2]});
        }
      }
      for (const auto& h : hints) {
        RequireLevel(teachers[h.k], h.tl, Msg("--amtml-hints: teacher ", h.k));
        RequireLevel(student, h.sl, "--amtml-hints: the student");
        terms.push_back(MakeNormalizedHintTerm(o.amtml_w_hint, static_cast<int>(h.k), h.tl, channels(h.k, h.tl), h.sl,
                                               schan.at(h.sl)));
      }
    }
  } else if (m == "feed") {
    FeedSpec f;
    f.student_level = slevel;
    f.student_channels = schan.at(slevel);
    for (size_t k = 0; k < K; ++k) f.teachers.push_back({tmap[k], channels(k, tmap[k])});
    f.norm = o.feed_norm;
    terms.push_back(MakeFeedTerm(o.w_feat >= 0 ? o.w_feat : o.feed_beta, f));
  } else {
    throw UsageError(Msg("method ", m, " is not a multi-teacher method"));
  }
  if (o.w_ce >= 0) w_ce = o.w_ce;
  if (w_ce > 0) terms.push_back(MakeCeTerm(w_ce, o.label_smoothing));
  return terms;
}

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
