// distill_student's methods as data: one table row per method (name, how many teachers it takes,
// its preset weights, the function that builds its loss terms). Adding a method is one file with
// its builder plus one row in lib/distill/methods.cc (docs/architecture.md, "Adding a method").
#pragma once

#include <memory>
#include <string>
#include <vector>

#include "distill/losses.h"
#include "models/model.h"

namespace mlfd {

struct StudentOptions;
struct MethodSpec;

enum class Method { kMlfd, kMlfdCode, kKd, kFitnet, kCe, kUnic, kAmtml, kMtkd, kFeed };

// Which feature pairs a single-teacher preset matches when --pairs is not given.
enum class PairPreset {
  kNone,
  kFusedAndDense,  // every fused level of T* (or the teacher's last map) to the student's last maps, plus the dense level
  kLastFused,      // the last fused level (or last map) only, as the official MLFD code
  kMiddleHint,     // FitNet: the middle map level of each through a 1x1 regressor
};

// What a builder sees: the resolved options, the run's frozen teachers (their levels and channels)
// and the student.
struct LossContext {
  const StudentOptions& opts;
  const MethodSpec& method;
  std::vector<Net>& teachers;
  Net& student;
};

using TermList = std::vector<std::unique_ptr<LossTerm>>;
using TermsBuilder = TermList (*)(const LossContext&);

struct MethodSpec {
  Method id;
  const char* name;
  int min_teachers, max_teachers;  // max < 0 = any number
  const char* summary;             // one line for --help and the docs
  // Preset weights, overridden by --temperature, --w-kd, --w-ce, --w-feat (0 where the method's
  // own options give the value: AMTML-KD's alpha, FEED's beta).
  double temperature = 0, w_kd = 0, w_ce = 1, w_feat = 0;
  PairPreset pairs = PairPreset::kNone;
  TermsBuilder build = nullptr;
  bool multi_teacher() const { return max_teachers < 0; }
};

// The table, in the order --help lists it.
const std::vector<MethodSpec>& Methods();
// The row of `name`; UsageError "--method: unknown method ..." listing the valid names.
const MethodSpec& FindMethod(const std::string& name);
const MethodSpec* LookupMethod(const std::string& name);  // nullptr when unknown
// UsageError when `n` teachers do not fit the method's row.
void CheckTeacherCount(const MethodSpec& m, size_t n);
std::vector<std::string> MethodNames();
bool IsMultiTeacherMethod(const std::string& name);

// The builders the table refers to (each in its own file).
TermList BuildSingleTeacherTerms(const LossContext& c);  // loss_presets.cc: mlfd, mlfd_code, kd, fitnet, ce
TermList BuildUnicTerms(const LossContext& c);           // multi_teacher_factory.cc
TermList BuildAmtmlTerms(const LossContext& c);          // multi_teacher_factory.cc: amtml, mtkd
TermList BuildFeedTerms(const LossContext& c);           // multi_teacher_factory.cc

// A student's loss for its teachers: the terms and, per teacher, the levels they read (the levels
// a feature cache of that teacher has to hold; "logits" included when a term reads them).
struct StudentLoss {
  TermList terms;
  std::vector<std::vector<std::string>> teacher_levels;
  std::vector<std::string> student_levels;  // "logits" always
  std::string description;                  // "0.6 * kd + 0.2 * hint_... (T = 2)"
};
// Checks the teacher count against the method's row, then builds its terms.
StudentLoss BuildStudentLoss(const StudentOptions& opts, std::vector<Net>& teachers, Net& student);

}  // namespace mlfd
