// Stage 3 of MLFD (distill_student): a randomly initialised student for one dataset, trained with
// a composed loss (distill/losses.h) against a frozen teacher (the joint teacher T*, or a stage-1
// teacher for the KD and FitNet baselines) whose signals come from a feature cache of clean images
// or from the teacher run online on the same augmented view.
//
// The methods (their presets, how many teachers each takes, the builder of its loss terms) are
// the table of distill/methods.h; every weight and level pair can be overridden.
#pragma once

#include <boost/program_options.hpp>
#include <memory>
#include <string>
#include <vector>

#include "distill/losses.h"
#include "distill/methods.h"
#include "train/stage.h"
#include "train/trainer.h"
#include "util/provenance.h"

namespace mlfd {

class ImageStore;
class ClipStore;

// UNIC's options (--unic-*).
struct UnicOptions {
  std::vector<std::string> stages;  // default: every student map level but the stem
  int hidden = 768, hidden_last = 0;  // 0 = twice --unic-hidden
  double drop_p = 0.5, momentum_start = 1.0, momentum_end = 0.001;
  std::string targets = "both";  // both | vector | map
  void Register(boost::program_options::options_description& d, const std::string& prefix = "unic-");
  void Check(const std::string& prefix = "unic-") const;
};

// AMTML-KD's options (--amtml-*; mtkd: weights uniform, no RKD, no hints).
struct AmtmlOptions {
  std::string weights = "instance", pool = "avg", schedule = "joint", hints = "stages";
  std::vector<double> teacher_weights;
  double alpha = 0.7, reg = 0.1, w_angle = 1.0, w_dist = 0.0, w_hint = 1.0, lr = 1e-3;
  bool detach = false;
  int phase1_epochs = 1;
  void Register(boost::program_options::options_description& d, const std::string& prefix = "amtml-");
  void Check(const std::string& prefix = "amtml-") const;
};

// FEED's options (--feed-*).
struct FeedOptions {
  double beta = 500;
  std::string norm = "flat";  // flat | position
  void Register(boost::program_options::options_description& d, const std::string& prefix = "feed-");
  void Check(const std::string& prefix = "feed-") const;
};

struct StudentOptions : StageOptions {
  ModelOptions model;
  std::string like;  // take arch/width/stem/embed from this checkpoint (e.g. the dataset's teacher)
  std::string method = "mlfd";  // a row of Methods() (distill/methods.h)
  double temperature = 0;  // 0 = the method's default
  double w_kd = -1, w_ce = -1, w_feat = -1;  // < 0 = the method's default
  std::vector<std::string> pairs;  // "student_level:teacher_level[:weight[:regressor]]" (replace the preset's)
  std::string teacher_signals = "online";  // online | cached
  std::vector<std::string> features;       // cached: extract_features output of each teacher on this store
  bool pool_mismatch = false;  // average-pool the larger map on a size mismatch (H, W; T of clips)
  int clip_frames = 0;         // clip stores: frames per training clip (0 = all stored)
  // Patient and consistent students: mix each training batch (data/mix.h) before the student and
  // the online teachers see it, and train for a multiple of the teacher's schedule.
  std::string mix = "none";    // none | mixup | cutmix
  double mix_alpha = 1.0;      // lambda ~ Beta(alpha, alpha)
  double epochs_multiple = 0;  // > 0: epochs = round(this x the epochs that trained --like, else the teacher)
  // Multi-teacher methods: per-teacher levels (empty entry = the default: the last map, and the
  // dense vector: "embed" or "pool"; "pool" for the joint teacher) and the student's map level.
  std::vector<std::string> teacher_map_levels, teacher_vector_levels;
  std::string student_level;  // default: the student's last map
  UnicOptions unic;
  AmtmlOptions amtml;
  FeedOptions feed;

  StudentOptions() : StageOptions(0.0) {}
  void Register(boost::program_options::options_description& d);
  void Check() const;
};

// One feature pair of the loss.
struct LevelPair {
  std::string student, teacher;
  double weight = 0;
  std::string regressor = "auto";  // auto | conv | none

  // Parses one --pairs entry "student:teacher[:weight[:auto|conv|none]]" (a missing or empty weight
  // is `default_weight`). False with `why` set when a field is bad: the count of fields, an empty
  // level, a weight that is not a finite number >= 0, an unknown regressor.
  static bool TryParse(const std::string& spec, double default_weight, LevelPair* out, std::string* why);
  // The same, throwing UsageError "--pairs: <why>".
  static LevelPair Parse(const std::string& spec, double default_weight);
};

// The weights and level pairs of a single-teacher method for this teacher/student pair (the
// method's row of Methods(), overridden by --temperature, --w-kd, --w-ce, --w-feat and --pairs).
struct ResolvedLoss {
  double temperature = 0, w_kd = 0, w_ce = 0;
  std::vector<LevelPair> pairs;
};
ResolvedLoss ResolveLoss(const StudentOptions& opts, const MethodSpec& method, Net& teacher, Net& student);

// The epochs of the schedule that trained `checkpoint` (its provenance's options); throws Error
// when the provenance records none.
int TrainedEpochs(const std::string& checkpoint);

// The student's architecture: --arch etc., or --like's, for `store`'s channels and classes.
ModelConfig StudentConfig(const StudentOptions& opts, const ImageStore& store);
ModelConfig StudentConfig(const StudentOptions& opts, const ClipStore& store);

// `teachers`: one for mlfd, mlfd_code, kd and fitnet; none or one for ce; any number for the
// multi-teacher methods.
TrainResult DistillStudent(const std::vector<std::string>& teachers, const std::string& store, const std::string& out,
                           const StudentOptions& opts, Provenance provenance);

}  // namespace mlfd
