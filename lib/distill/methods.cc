// distill_student's method table and the student loss built from a row of it.
#include "distill/methods.h"

#include <torch/torch.h>

#include <algorithm>
#include <set>

#include "distill/student.h"
#include "util/error.h"
#include "util/options.h"

namespace mlfd {

const std::vector<MethodSpec>& Methods() {
  // id, name, teachers (min, max; max < 0 = any), summary, T, w_kd, w_ce, w_feat, pairs, builder.
  // AMTML-KD's soft-target and CE weights come from --amtml-alpha (alpha, 1 - alpha) and FEED's
  // feature weight from --feed-beta: their rows leave those at 0.
  static const std::vector<MethodSpec> table = {
      {Method::kMlfd, "mlfd", 1, 1,
       "KD (T=2, 0.6) + MSE at every fused level and the dense level (0.2 each) + CE (0.2)", 2, 0.6, 0.2, 0.2,
       PairPreset::kFusedAndDense, BuildSingleTeacherTerms},
      {Method::kMlfdCode, "mlfd_code", 1, 1, "KD (T=2, 0.6) + MSE at the last fused level (0.2) + CE (0.2), as the official code",
       2, 0.6, 0.2, 0.2, PairPreset::kLastFused, BuildSingleTeacherTerms},
      {Method::kKd, "kd", 1, 1, "KD (T=4, 0.9) + CE (0.1)", 4, 0.9, 0.1, 0, PairPreset::kNone,
       BuildSingleTeacherTerms},
      {Method::kFitnet, "fitnet", 1, 1, "MSE hint at the middle map level through a 1x1 regressor (1.0) + CE (1.0)", 0,
       0, 1.0, 1.0, PairPreset::kMiddleHint, BuildSingleTeacherTerms},
      {Method::kCe, "ce", 0, 1, "CE only: the student trained alone with this stage's recipe (no teacher needed)", 0, 0,
       1.0, 0, PairPreset::kNone, BuildSingleTeacherTerms},
      {Method::kUnic, "unic", 1, -1,
       "UNIC: projector ladder, running teacher standardisation, teacher dropping (1.0) + CE (1.0)", 0, 0, 1.0, 1.0,
       PairPreset::kNone, BuildUnicTerms},
      {Method::kAmtml, "amtml", 1, -1,
       "AMTML-KD: instance-weighted integrated soft target (T=5, alpha 0.7), RKD angle, multi-group hints + CE "
       "(1 - alpha)",
       5, 0, 0, 0, PairPreset::kNone, BuildAmtmlTerms},
      {Method::kMtkd, "mtkd", 1, -1, "uniform multi-teacher KD: amtml with uniform weights, no RKD, no hints", 5, 0,
       0, 0, PairPreset::kNone, BuildAmtmlTerms},
      {Method::kFeed, "feed", 1, -1,
       "FEED: parallel non-linear transforms of the last map, beta 500 * L1 of normalised maps + CE (1.0)", 0, 0, 1.0,
       0, PairPreset::kNone, BuildFeedTerms},
  };
  return table;
}

std::vector<std::string> MethodNames() {
  std::vector<std::string> n;
  for (const auto& m : Methods()) n.push_back(m.name);
  return n;
}

const MethodSpec* LookupMethod(const std::string& name) {
  for (const auto& m : Methods())
    if (name == m.name) return &m;
  return nullptr;
}

const MethodSpec& FindMethod(const std::string& name) {
  if (const MethodSpec* m = LookupMethod(name)) return *m;
  throw UsageError(Msg("--method: unknown method '", name, "' (valid: ", JoinNames(MethodNames()), ")"));
}

bool IsMultiTeacherMethod(const std::string& name) {
  const MethodSpec* m = LookupMethod(name);
  return m && m->multi_teacher();
}

void CheckTeacherCount(const MethodSpec& m, size_t n) {
  const int k = static_cast<int>(n);
  if (k < m.min_teachers) throw UsageError(Msg("method ", m.name, " needs at least one --teacher"));
  if (m.max_teachers >= 0 && k > m.max_teachers) {
    if (m.min_teachers == m.max_teachers) {
      std::vector<std::string> multi;
      for (const auto& r : Methods())
        if (r.multi_teacher()) multi.push_back(r.name);
      throw UsageError(Msg("method ", m.name, " takes one --teacher (got ", n, "); the multi-teacher methods are ",
                           JoinNames(multi)));
    }
    throw UsageError(Msg("method ", m.name, " takes at most one --teacher (got ", n, "; it reads no signal from it)"));
  }
}

StudentLoss BuildStudentLoss(const StudentOptions& opts, std::vector<Net>& teachers, Net& student) {
  const MethodSpec& m = FindMethod(opts.method);
  CheckTeacherCount(m, teachers.size());
  StudentLoss loss;
  loss.terms = m.build(LossContext{opts, m, teachers, student});
  std::set<std::string> slev{"logits"};
  std::vector<std::set<std::string>> tlev(teachers.size());
  std::string notes;
  for (const auto& t : loss.terms) {
    for (const auto& l : t->student_levels()) slev.insert(l);
    for (const auto& tl : t->teacher_levels()) tlev.at(static_cast<size_t>(tl.teacher)).insert(tl.level);
    loss.description += Msg(loss.description.empty() ? "" : " + ", t->weight(), " * ", t->name());
    if (!t->note().empty()) notes += (notes.empty() ? "" : ", ") + t->note();
  }
  if (!notes.empty()) loss.description += " (" + notes + ")";
  loss.student_levels.assign(slev.begin(), slev.end());
  for (const auto& s : tlev) loss.teacher_levels.emplace_back(s.begin(), s.end());
  return loss;
}

}  // namespace mlfd
