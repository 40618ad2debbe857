// extract_features: runs a frozen network over the splits of an image store and writes its
// named levels as a feature cache (format in io/feature_cache.h, docs/formats.md). Streams: one
// batch at a time is in memory whatever the store's size.
#pragma once

#include <boost/program_options.hpp>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "io/feature_cache.h"
#include "util/provenance.h"

namespace mlfd {

struct ExtractOptions {
  std::vector<std::string> levels;                    // level names; "logits" is always added
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

// Runs the frozen network of `model` over `store` and writes the cache atomically. Returns a JSON
// summary (levels with shapes, bytes, seconds, peak RSS).
nlohmann::json ExtractFeatures(const std::string& model, const std::string& store, const std::string& out,
                               const ExtractOptions& opts, Provenance provenance);

}  // namespace mlfd
