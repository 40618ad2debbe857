// extract_features: runs a frozen network over the splits of an image store (or, for a video
// network, a clip store: the centred temporal crop of the frames it was trained on, as evaluate
// sees them) and writes its named levels as a feature cache (format in io/feature_cache.h,
// docs/formats.md; a video network's maps are C x T x H x W per row). Streams: one batch at a
// time is in memory whatever the store's size.
#pragma once

#include <boost/program_options.hpp>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "io/feature_cache.h"
#include "models/checkpoint.h"
#include "models/model.h"

namespace mlfd {

struct Provenance;  // util/provenance.h

class ImageStore;
class ClipStore;

struct ExtractOptions {
  std::vector<std::string> levels;                    // level names; "logits" is always added
  // distill_student option strings (e.g. "--method fitnet --like t.h5"): the levels each of those
  // students' losses read from this model are added (single-teacher methods).
  std::vector<std::string> for_students;
  bool teacher_inputs = false;  // joint teacher: add every teacher's fusion map and logits (the
                                // inputs finetune_joint --teacher-maps cached reads)
  std::vector<std::string> splits{"train", "val", "test"};  // splits present in the store
  std::string dtype = "float16";                      // float16 | float32 (maps and vectors)
  std::string dataset;                                // head to use; default: the store's dataset
  std::string device = "auto";
  int64_t batch_size = 256;
  int workers = 2;

  void Register(boost::program_options::options_description& d);
  void Check() const;
};

// The levels a distill_student run with `student_options` (its command-line options, as one
// string) reads from `teacher` as its single teacher on `store` ("logits" included when its loss
// reads them). UsageError for options distill_student would refuse or a multi-teacher method.
std::vector<std::string> StudentTeacherLevels(const std::string& student_options, Net& teacher, const ImageStore& store);
std::vector<std::string> StudentTeacherLevels(const std::string& student_options, Net& teacher,
                                              const ClipStore& store);

// What a cache of `model` (`ck`, loaded) over `store` with these options holds: --levels, the
// levels of every --for-student, the teacher inputs (--teacher-inputs) and "logits", in that order
// without repeats; UsageError naming a level the model lacks.
std::vector<std::string> CacheLevels(LoadedCheckpoint& ck, const std::string& model_path, const ImageStore& store,
                                     const ExtractOptions& opts);
std::vector<std::string> CacheLevels(LoadedCheckpoint& ck, const std::string& model_path,
                                     const ClipStore& store, const ExtractOptions& opts);
std::vector<std::string> CacheLevels(const std::string& model_path, const std::string& store_path,
                                     const ExtractOptions& opts);

// Runs the frozen network of `model` over `store` and writes the cache atomically. Returns a JSON
// summary (levels with shapes, bytes, seconds, peak RSS).
nlohmann::json ExtractFeatures(const std::string& model, const std::string& store, const std::string& out,
                               const ExtractOptions& opts, Provenance provenance);

}  // namespace mlfd
