// distill_student's options: registration, Check(), the method names, --pairs entries.
#include "distill/student.h"

#include <torch/torch.h>

#include <algorithm>
#include <cmath>

#include "util/error.h"
#include "util/options.h"

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

bool LevelPair::TryParse(const std::string& spec, double default_weight, LevelPair* out, std::string* why) {
  auto parts = SplitOn(spec, ':');
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

}  // namespace mlfd
