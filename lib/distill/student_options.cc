// distill_student's options (the stage's and each method's nested struct): registration, Check(),
// --pairs entries.
#include "distill/student.h"

#include "distill/methods.h"

#include <torch/torch.h>

#include <algorithm>
#include <cmath>

#include "util/error.h"
#include "util/options.h"

namespace mlfd {

namespace po = boost::program_options;

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

void UnicOptions::Register(po::options_description& d, const std::string& p) {
  po::options_description u("UNIC (--method unic)");
  u.add_options()((p + "stages").c_str(),
                  po::value<std::string>()->default_value("")->notifier(
                      [this](const std::string& s) { stages = SplitCsv(s); }),
                  "student map levels of the projector ladder (default: every map level but the stem)")(
      (p + "hidden").c_str(), po::value(&hidden)->default_value(hidden), "projector hidden width")(
      (p + "hidden-last").c_str(), po::value(&hidden_last)->default_value(hidden_last),
      "hidden width of the last stage's projectors (0 = twice the hidden width)")(
      (p + "drop-p").c_str(), po::value(&drop_p)->default_value(drop_p),
      "teacher dropping: probability of dropping a teacher other than the worst-fitted (0 = uniform)")(
      (p + "momentum-start").c_str(), po::value(&momentum_start)->default_value(momentum_start),
      "standardisation momentum at the start (cosine schedule)")(
      (p + "momentum-end").c_str(), po::value(&momentum_end)->default_value(momentum_end),
      "standardisation momentum at the end")(
      (p + "targets").c_str(), po::value(&targets)->default_value(targets), "both | vector | map");
  d.add(u);
}

void UnicOptions::Check(const std::string& p) const {
  OptionChecker c(p);
  c.Require(hidden >= 1 && hidden_last >= 0, "hidden", "must be >= 1 (last: >= 0)");
  c.Require(drop_p >= 0 && drop_p < 1, "drop-p", "must be in [0, 1)");
  c.Require(momentum_start > 0 && momentum_start <= 1 && momentum_end > 0 && momentum_end <= 1, "momentum-start",
            "momenta must be in (0, 1]");
  c.Require(targets == "both" || targets == "vector" || targets == "map", "targets", "must be both, vector or map");
  c.Throw();
}

void AmtmlOptions::Register(po::options_description& d, const std::string& p) {
  po::options_description a("AMTML-KD (--method amtml; mtkd = uniform weights, no RKD, no hints)");
  a.add_options()((p + "weights").c_str(), po::value(&weights)->default_value(weights),
                  "instance (per image, learned) | teacher (per teacher: learned, or fixed by "
                  "the teacher weights below) | uniform")(
      (p + "teacher-weights").c_str(),
      po::value<std::string>()->default_value("")->notifier(
          [this, p](const std::string& s) { teacher_weights = SplitDoubles(s, p + "teacher-weights"); }),
      "teacher mode: fixed weights, in --teacher order (normalised to sum 1)")(
      (p + "pool").c_str(), po::value(&pool)->default_value(pool), "pooling of the student map: avg | max")(
      (p + "reg").c_str(), po::value(&reg)->default_value(reg), "regulariser of the weighting parameters")(
      (p + "detach").c_str(), po::value(&detach)->default_value(detach)->implicit_value(true),
      "no gradient from the weighting into the student")(
      (p + "alpha").c_str(), po::value(&alpha)->default_value(alpha),
      "weight of the KL term (CE gets 1 - alpha unless --w-ce)")(
      (p + "w-angle").c_str(), po::value(&w_angle)->default_value(w_angle), "RKD angle weight")(
      (p + "w-dist").c_str(), po::value(&w_dist)->default_value(w_dist), "RKD distance weight")(
      (p + "hints").c_str(), po::value(&hints)->default_value(hints),
      "stages (teacher k -> the k-th of the student's last stages) | same (every teacher's map -> the "
      "student's last map) | none | list k:teacher_level:student_level,...")(
      (p + "w-hint").c_str(), po::value(&w_hint)->default_value(w_hint), "weight of each hint")(
      (p + "schedule").c_str(), po::value(&schedule)->default_value(schedule),
      "joint (weighting trained throughout) | two_phase (trained in the first phase-1 epochs, then frozen)")(
      (p + "phase1-epochs").c_str(), po::value(&phase1_epochs)->default_value(phase1_epochs),
      "two_phase: epochs of the adapter phase")(
      (p + "lr").c_str(), po::value(&lr)->default_value(lr),
      "learning rate of the weighting's own Adam (stepped, clipped and resumed by the trainer)");
  d.add(a);
}

void AmtmlOptions::Check(const std::string& p) const {
  OptionChecker c(p);
  c.Require(weights == "instance" || weights == "teacher" || weights == "uniform", "weights",
            "must be instance, teacher or uniform");
  c.Require(teacher_weights.empty() || weights == "teacher", "teacher-weights", "only with --" + p + "weights teacher");
  c.Require(pool == "avg" || pool == "max", "pool", "must be avg or max");
  c.Require(schedule == "joint" || schedule == "two_phase", "schedule", "must be joint or two_phase");
  c.Require(alpha >= 0 && alpha <= 1, "alpha", "must be in [0, 1]");
  c.Require(reg >= 0 && w_angle >= 0 && w_dist >= 0 && w_hint >= 0, "reg", "weights must be >= 0");
  c.Require(lr > 0, "lr", "must be > 0");
  c.Require(phase1_epochs >= 1, "phase1-epochs", "must be >= 1");
  c.Throw();
}

void FeedOptions::Register(po::options_description& d, const std::string& p) {
  po::options_description f("FEED (--method feed)");
  f.add_options()((p + "beta").c_str(), po::value(&beta)->default_value(beta), "weight of the feature term")(
      (p + "norm").c_str(), po::value(&norm)->default_value(norm),
      "flat (L2 over each flattened map) | position (L2 along channels at each position)");
  d.add(f);
}

void FeedOptions::Check(const std::string& p) const {
  OptionChecker c(p);
  c.Require(beta >= 0, "beta", "must be >= 0");
  c.Require(norm == "flat" || norm == "position", "norm", "must be flat or position");
  c.Throw();
}

void StudentOptions::Register(po::options_description& d) {
  model.Register(d);
  StageOptions::Register(d, "images per step", "label smoothing of the CE term");
  std::string methods;
  for (const auto& m : Methods())
    methods += Msg(methods.empty() ? "" : "; ", m.name, " (", m.multi_teacher() ? "any number of teachers" :
                   m.min_teachers == 0 ? "no or one teacher" : "one teacher", "): ", m.summary);
  d.add_options()("like", po::value(&like)->default_value(like),
                  "take the student's architecture (arch, width, stem, embed) from this checkpoint, e.g. the "
                  "dataset's stage-1 teacher")(
      "method", po::value(&method)->default_value(method), methods.c_str())(
      "temperature", po::value(&temperature)->default_value(temperature), "KD temperature T (0 = the method's)")(
      "w-kd", po::value(&w_kd)->default_value(w_kd), "weight of the soft-target term (< 0 = the method's)")(
      "w-ce", po::value(&w_ce)->default_value(w_ce), "weight of the label term (< 0 = the method's)")(
      "w-feat", po::value(&w_feat)->default_value(w_feat), "weight of each preset level pair (< 0 = the method's)")(
      "pairs",
      po::value<std::string>()->default_value("")->notifier([this](const std::string& s) { pairs = SplitCsv(s); }),
      "level pairs replacing the method's: student:teacher[:weight[:auto|conv|none]],... (e.g. "
      "layer4:fused:0.2,embed:pool:0.2)")(
      "teacher-signals", po::value(&teacher_signals)->default_value(teacher_signals),
      "online (teacher runs on the student's augmented view) | cached (clean-image signals from --features)")(
      "features",
      po::value<std::string>()->default_value("")->notifier([this](const std::string& s) { features = SplitCsv(s); }),
      "cached: each teacher's feature cache of this store, comma-separated in --teacher order")(
      "mix", po::value(&mix)->default_value(mix),
      "none | mixup | cutmix: mix each training batch with a permutation of itself before the student and "
      "the online teachers see it (function matching on a shared view); the label term weighs both labels")(
      "mix-alpha", po::value(&mix_alpha)->default_value(mix_alpha), "mixing share lambda ~ Beta(alpha, alpha)")(
      "epochs-multiple", po::value(&epochs_multiple)->default_value(epochs_multiple),
      "> 0: train for this multiple of the epochs that trained --like's checkpoint (else the first "
      "--teacher's), read from its provenance; replaces --epochs")(
      "pool-mismatch", po::value(&pool_mismatch)->default_value(pool_mismatch)->implicit_value(true),
      "average-pool the larger map when a level pair's sizes differ (height, width; frames of video maps)")(
      "clip-frames", po::value(&clip_frames)->default_value(clip_frames),
      "clip stores (video students): train on a random temporal crop of this many consecutive stored frames "
      "per clip (0 = all); validation uses the centred crop of the same length")(
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
  unic.Register(d);
  amtml.Register(d);
  feed.Register(d);
}

void StudentOptions::Check() const {
  OptionChecker c;
  c.Require(LookupMethod(method) != nullptr, "method",
            "unknown method '" + method + "' (valid: " + JoinNames(MethodNames()) + ")");
  c.Require(temperature >= 0, "temperature", "must be >= 0");
  c.Require(teacher_signals == "online" || teacher_signals == "cached", "teacher-signals", "must be online or cached");
  c.Require(teacher_signals == "online" || !features.empty(), "features", "--teacher-signals cached needs --features");
  c.Require(teacher_signals == "cached" || features.empty(), "features", "only with --teacher-signals cached");
  c.Require(mix == "none" || mix == "mixup" || mix == "cutmix", "mix", "must be none, mixup or cutmix");
  c.Require(mix_alpha > 0 && std::isfinite(mix_alpha), "mix-alpha", "must be a number > 0");
  c.Require(mix == "none" || teacher_signals == "online", "mix",
            "needs --teacher-signals online (a feature cache holds the signals of unmixed images)");
  c.Require(clip_frames >= 0 && clip_frames <= 4096, "clip-frames", "must be in 0..4096");
  c.Require(epochs_multiple >= 0 && std::isfinite(epochs_multiple), "epochs-multiple", "must be a number >= 0");
  for (const auto& p : pairs) {
    std::string why;
    LevelPair parsed;
    c.Require(LevelPair::TryParse(p, 1.0, &parsed, &why), "pairs", why);
  }
  c.Throw();
  StageOptions::Check();
  model.Check();
  unic.Check();
  amtml.Check();
  feed.Check();
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
