// The single-teacher methods' presets (mlfd, mlfd_code, kd, fitnet, ce): --method and its
// options resolved into the loss weights and level pairs of one teacher / student pair.
#include "distill/student.h"

#include <torch/torch.h>

#include <algorithm>
#include <cmath>

#include "util/error.h"
#include "util/options.h"

namespace mlfd {

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
    student->RequireLevel(p.student, Msg("level pair ", p.student, ":", p.teacher, ": the student"));
    teacher->RequireLevel(p.teacher, Msg("level pair ", p.student, ":", p.teacher, ": the teacher"));
    if (p.student == "logits" || p.teacher == "logits")
      throw UsageError("level pairs match features; logits are the KD term's (--w-kd)");
  }
  return r;
}

}  // namespace mlfd
