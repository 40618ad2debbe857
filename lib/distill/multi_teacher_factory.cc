// The multi-teacher methods' presets (unic, amtml, mtkd, feed): --method and its options turned
// into the loss terms of lib/distill/multi_teacher.h for the run's teachers and student.
#include "distill/student.h"

#include <torch/torch.h>

#include <algorithm>
#include <cmath>

#include "distill/multi_teacher.h"
#include "util/error.h"
#include "util/options.h"

namespace mlfd {

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
  student->RequireLevel(slevel, "--student-level: the student");
  std::vector<std::string> tmap(K), tvec(K);
  for (size_t k = 0; k < K; ++k) {
    Net& t = teachers[k];
    tmap[k] = PerTeacher(o.teacher_map_levels, k, t->MapLevels().back());
    tvec[k] = PerTeacher(o.teacher_vector_levels, k, t->config().arch == "joint" ? "pool" : t->DenseLevel());
    t->RequireLevel(tmap[k], Msg("--teacher-map-levels: teacher ", k));
    t->RequireLevel(tvec[k], Msg("--teacher-vector-levels: teacher ", k));
  }
  auto channels = [&](size_t k, const std::string& l) { return teachers[k]->LevelChannels().at(l); };
  std::vector<std::unique_ptr<LossTerm>> terms;
  double w_ce = 1.0;
  if (m == "unic") {
    UnicSpec u;
    u.stages = o.unic_stages.empty() ? student->StageLevels() : o.unic_stages;
    for (const auto& l : u.stages) {
      student->RequireLevel(l, "--unic-stages: the student");
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
        teachers[h.k]->RequireLevel(h.tl, Msg("--amtml-hints: teacher ", h.k));
        student->RequireLevel(h.sl, "--amtml-hints: the student");
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

}  // namespace mlfd
