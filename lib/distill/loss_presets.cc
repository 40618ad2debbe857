// The single-teacher methods (mlfd, mlfd_code, kd, fitnet, ce): a method's row of the table
// (distill/methods.h) and the options resolved into the loss weights and level pairs of one
// teacher / student pair, and the terms built from them.
#include <torch/torch.h>

#include <algorithm>
#include <cmath>

#include "distill/methods.h"
#include "distill/student.h"
#include "util/error.h"
#include "util/options.h"

namespace mlfd {

ResolvedLoss ResolveLoss(const StudentOptions& o, const MethodSpec& m, Net& teacher, Net& student) {
  ResolvedLoss r;
  const bool joint = teacher->config().arch == "joint";
  r.temperature = m.temperature, r.w_kd = m.w_kd, r.w_ce = m.w_ce;
  double feat = m.w_feat;
  if (o.temperature > 0) r.temperature = o.temperature;
  if (o.w_kd >= 0) r.w_kd = o.w_kd;
  if (o.w_ce >= 0) r.w_ce = o.w_ce;
  if (o.w_feat >= 0) feat = o.w_feat;
  if (r.w_kd > 0 && r.temperature <= 0) r.temperature = 1;
  auto smaps = student->MapLevels(), tmaps = teacher->MapLevels();
  if (!o.pairs.empty()) {
    for (const auto& p : o.pairs) r.pairs.push_back(LevelPair::Parse(p, feat > 0 ? feat : 1.0));
  } else if (m.pairs == PairPreset::kFusedAndDense || m.pairs == PairPreset::kLastFused) {
    // Teacher's post-fusion levels (T*) or its last map, matched to the student's last maps in order.
    std::vector<std::string> t;
    if (joint) {
      for (const auto& l : tmaps)
        if (l.rfind("fused", 0) == 0) t.push_back(l);
    } else {
      t.push_back(tmaps.back());
    }
    if (m.pairs == PairPreset::kLastFused) t = {t.back()};
    if (t.size() > smaps.size()) throw Error("the teacher has more fused levels than the student has map levels");
    for (size_t k = 0; k < t.size(); ++k) r.pairs.push_back({smaps[smaps.size() - t.size() + k], t[k], feat, "auto"});
    if (m.pairs == PairPreset::kFusedAndDense)
      r.pairs.push_back({student->DenseLevel(), joint ? "pool" : teacher->DenseLevel(), feat, "auto"});
  } else if (m.pairs == PairPreset::kMiddleHint) {
    // One hint: the middle map level of each (FitNet's guided layer), regressor always.
    if (joint) {
      r.pairs.push_back({smaps.back(), tmaps.back(), feat, "conv"});
    } else {
      r.pairs.push_back({smaps[smaps.size() / 2], tmaps[tmaps.size() / 2], feat, "conv"});
    }
  }
  for (const auto& p : r.pairs) {
    student->RequireLevel(p.student, Msg("level pair ", p.student, ":", p.teacher, ": the student"));
    teacher->RequireLevel(p.teacher, Msg("level pair ", p.student, ":", p.teacher, ": the teacher"));
    if (p.student == "logits" || p.teacher == "logits")
      throw UsageError("level pairs match features; logits are the KD term's (--w-kd)");
  }
  return r;
}

TermList BuildSingleTeacherTerms(const LossContext& c) {
  const StudentOptions& o = c.opts;
  TermList terms;
  if (c.teachers.empty()) {  // ce without a teacher
    terms.push_back(MakeCeTerm(o.w_ce >= 0 ? o.w_ce : c.method.w_ce, o.label_smoothing));
    return terms;
  }
  ResolvedLoss loss = ResolveLoss(o, c.method, c.teachers[0], c.student);
  auto tchan = c.teachers[0]->LevelChannels(), schan = c.student->LevelChannels();
  if (loss.w_kd > 0) terms.push_back(MakeKdTerm(loss.w_kd, loss.temperature));
  for (const auto& p : loss.pairs) {
    // The regressor reads the student's level: a vector, a map, or a video student's clip map.
    const bool map = p.student != "pool" && p.student != "embed";
    const int dims = !map ? 0 : IsVideoArch(c.student->config().arch) ? 5 : 4;
    terms.push_back(MakeHintTerm(p.weight, p.student, schan.at(p.student), p.teacher,
                                 tchan.at(p.teacher), dims, p.regressor, o.pool_mismatch));
  }
  if (loss.w_ce > 0) terms.push_back(MakeCeTerm(loss.w_ce, o.label_smoothing));
  return terms;
}

}  // namespace mlfd
