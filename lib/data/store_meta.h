// Internal (image_store.cc, clip_store.cc): the metadata an image store and a clip store share
// (class names, labels, per-channel mean/std, split indices), read and validated alike.
#pragma once

#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include "io/h5.h"

namespace mlfd {

struct StoreMeta {
  std::vector<std::string> classes;
  std::vector<int64_t> labels;
  std::vector<double> mean, std;
  std::map<std::string, std::vector<int64_t>> splits;
};

// Reads the shared part of a store of `rows` samples with `channels` channels; errors name `path`
// and the object. `what` names the sample ("images", "clips") in messages.
StoreMeta ReadStoreMeta(const h5::File& f, const std::string& path, int64_t rows, int channels,
                        const std::string& what);

}  // namespace mlfd
