// The multi-teacher methods (unic, amtml, mtkd, feed): each method's builder of the table
// (distill/methods.h) turns its options into the loss terms of lib/distill/multi_teacher.h for the
// run's teachers and student.
#include "distill/methods.h"
#include "distill/student.h"

#include <torch/torch.h>

#include <algorithm>
#include <cmath>
#include <map>

#include "distill/multi_teacher.h"
#include "util/error.h"
#include "util/options.h"

namespace mlfd {

namespace {

std::string PerTeacher(const std::vector<std::string>& v, size_t k, const std::string& def) {
  return k < v.size() && !v[k].empty() ? v[k] : def;
}

// What every multi-teacher builder resolves first: each teacher's map and vector level and the
// student's map level (the options' per-teacher entries or the defaults), checked.
struct MultiLevels {
  std::vector<std::string> tmap, tvec;
  std::string slevel;
  std::map<std::string, int> schan;
};

MultiLevels ResolveLevels(const LossContext& c) {
  const StudentOptions& o = c.opts;
  const size_t K = c.teachers.size();
  for (const auto* v : {&o.teacher_map_levels, &o.teacher_vector_levels})
    if (!v->empty() && v->size() != K)
      throw UsageError(Msg("--teacher-map-levels / --teacher-vector-levels: ", v->size(), " entries for ", K,
                           " teachers"));
  MultiLevels m;
  m.schan = c.student->LevelChannels();
  m.slevel = o.student_level.empty() ? c.student->MapLevels().back() : o.student_level;
  c.student->RequireLevel(m.slevel, "--student-level: the student");
  m.tmap.resize(K), m.tvec.resize(K);
  for (size_t k = 0; k < K; ++k) {
    Net& t = c.teachers[k];
    m.tmap[k] = PerTeacher(o.teacher_map_levels, k, t->MapLevels().back());
    m.tvec[k] = PerTeacher(o.teacher_vector_levels, k, t->config().arch == "joint" ? "pool" : t->DenseLevel());
    t->RequireLevel(m.tmap[k], Msg("--teacher-map-levels: teacher ", k));
    t->RequireLevel(m.tvec[k], Msg("--teacher-vector-levels: teacher ", k));
  }
  return m;
}

int Channels(const LossContext& c, size_t k, const std::string& level) {
  return c.teachers[k]->LevelChannels().at(level);
}

// The label term: --w-ce, else the method's `preset`.
void AddCe(const LossContext& c, double preset, TermList* terms) {
  double w = c.opts.w_ce >= 0 ? c.opts.w_ce : preset;
  if (w > 0) terms->push_back(MakeCeTerm(w, c.opts.label_smoothing));
}

}  // namespace

TermList BuildUnicTerms(const LossContext& c) {
  const UnicOptions& o = c.opts.unic;
  MultiLevels lv = ResolveLevels(c);
  UnicSpec u;
  u.stages = o.stages.empty() ? c.student->StageLevels() : o.stages;
  for (const auto& l : u.stages) {
    c.student->RequireLevel(l, "--unic-stages: the student");
    if (l == "pool" || l == "embed" || l == "logits") throw UsageError("--unic-stages: '" + l + "' is not a map level");
    u.stage_channels.push_back(lv.schan.at(l));
  }
  for (size_t k = 0; k < c.teachers.size(); ++k)
    u.teachers.push_back({lv.tvec[k], lv.tmap[k], Channels(c, k, lv.tvec[k]), Channels(c, k, lv.tmap[k])});
  u.hidden = o.hidden;
  u.hidden_last = o.hidden_last > 0 ? o.hidden_last : 2 * o.hidden;
  u.drop_p = o.drop_p;
  u.momentum_start = o.momentum_start, u.momentum_end = o.momentum_end;
  u.vector_target = o.targets != "map";
  u.map_target = o.targets != "vector";
  u.clips = IsVideoArch(c.student->config().arch);
  TermList terms;
  terms.push_back(MakeUnicTerm(c.opts.w_feat >= 0 ? c.opts.w_feat : c.method.w_feat, u));
  AddCe(c, c.method.w_ce, &terms);
  return terms;
}

TermList BuildAmtmlTerms(const LossContext& c) {
  const StudentOptions& so = c.opts;
  const AmtmlOptions& o = so.amtml;
  const bool uniform_kd = c.method.id == Method::kMtkd;  // mtkd: uniform weights, no RKD, no hints
  const size_t K = c.teachers.size();
  MultiLevels lv = ResolveLevels(c);
  AmtmlSpec a;
  a.teachers = static_cast<int>(K);
  a.student_map = lv.slevel;
  a.student_channels = lv.schan.at(lv.slevel);
  a.temperature = so.temperature > 0 ? so.temperature : c.method.temperature;
  a.alpha = so.w_kd >= 0 ? so.w_kd : o.alpha;
  if (uniform_kd) {
    a.weights = "uniform", a.w_angle = 0, a.w_dist = 0;
  } else {
    a.weights = o.weights, a.fixed_teacher_weights = o.teacher_weights, a.pool = o.pool;
    a.reg = o.reg, a.detach = o.detach, a.w_angle = o.w_angle, a.w_dist = o.w_dist;
    a.schedule = o.schedule, a.phase1_epochs = o.phase1_epochs, a.lr = o.lr;
  }
  TermList terms;
  terms.push_back(MakeAmtmlTerm(a));
  // Multi-group hints.
  if (!uniform_kd && o.hints != "none" && o.w_hint > 0) {
    struct Hint { size_t k; std::string tl, sl; };
    std::vector<Hint> hints;
    if (o.hints == "stages") {
      auto ss = c.student->StageLevels();
      for (size_t k = 0; k < K; ++k) {
        auto ts = c.teachers[k]->StageLevels();
        size_t back = K - 1 - k;  // teacher k -> the k-th of the last K stages
        hints.push_back({k, ts[ts.size() - 1 - std::min(back, ts.size() - 1)],
                         ss[ss.size() - 1 - std::min(back, ss.size() - 1)]});
      }
    } else if (o.hints == "same") {
      for (size_t k = 0; k < K; ++k) hints.push_back({k, lv.tmap[k], lv.slevel});
    } else {
      for (const auto& h : SplitCsv(o.hints)) {
        auto p = SplitOn(h, ':');
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
      c.teachers[h.k]->RequireLevel(h.tl, Msg("--amtml-hints: teacher ", h.k));
      c.student->RequireLevel(h.sl, "--amtml-hints: the student");
      terms.push_back(MakeNormalizedHintTerm(o.w_hint, static_cast<int>(h.k), h.tl,
                                             Channels(c, h.k, h.tl), h.sl, lv.schan.at(h.sl),
                                             IsVideoArch(c.student->config().arch)));
    }
  }
  AddCe(c, 1.0 - a.alpha, &terms);
  return terms;
}

TermList BuildFeedTerms(const LossContext& c) {
  MultiLevels lv = ResolveLevels(c);
  FeedSpec f;
  f.student_level = lv.slevel;
  f.student_channels = lv.schan.at(lv.slevel);
  for (size_t k = 0; k < c.teachers.size(); ++k) f.teachers.push_back({lv.tmap[k], Channels(c, k, lv.tmap[k])});
  f.norm = c.opts.feed.norm;
  f.clips = IsVideoArch(c.student->config().arch);
  TermList terms;
  terms.push_back(MakeFeedTerm(c.opts.w_feat >= 0 ? c.opts.w_feat : c.opts.feed.beta, f));
  AddCe(c, c.method.w_ce, &terms);
  return terms;
}

}  // namespace mlfd
