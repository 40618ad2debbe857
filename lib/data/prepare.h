// prepare_data: turns a dataset described by a manifest into the image store (docs/formats.md)
// (decoded uint8 images, labels, class names, split indices, normalisation, provenance).
#pragma once

#include <boost/program_options.hpp>
#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include "data/clips.h"
#include "data/manifest.h"

namespace mlfd {

struct Provenance;

struct PrepareOptions {
  std::string data_root = "data";  // relative manifest paths resolve against it
  bool skip_bad = false;           // skip (and record) unreadable images instead of failing
  int gzip = 1;                    // gzip level of /images (0 = none)
  int64_t block = 2048;            // images decoded per parallel block (bounds memory)
  int64_t max_train_per_class = 0; // > 0: overrides the manifest's split.max_train_per_class
  bool check_pixel_duplicates = false;  // refuse identical decoded images (not only identical paths)
  // Video sources (a clip store): uniform sampling of `frames` (0 = 16) per video, or every
  // `frame_step`-th frame up to `max_frames`; a short video padded by repeating frames or refused.
  int frames = 0;
  int frame_step = 0;
  int max_frames = 0;
  std::string short_video = "pad";  // pad | refuse
  int split_id = 0;                 // ucf101 / hmdb51 sources: official split 1..3 (0 = manifest's)

  void Register(boost::program_options::options_description& d, const std::string& prefix = "");
  void Check(const std::string& prefix = "") const;
  // The clip sampling the video options ask for (after Check()).
  ClipSampling Sampling() const;
};

struct PrepareSummary {
  int64_t num_samples = 0;
  int64_t num_skipped = 0;
  int num_classes = 0;
  int height = 0, width = 0, channels = 0;
  int frames = 0;          // clip stores: frames per clip (0 for an image store)
  int64_t num_padded = 0;  // clip stores: short videos padded by repeating frames
  std::map<std::string, int64_t> split_sizes;
  std::vector<double> mean, std;
};

// Reads every source of the manifest, decodes and resizes images on `threads` threads, assigns
// splits and writes the store atomically to `out_path`: an image store, or a clip store when the
// manifest's sources are videos. Throws Error on bad input; then no output file exists.
PrepareSummary PrepareData(const std::string& manifest_path, const std::string& out_path,
                           const PrepareOptions& opts, Provenance provenance, int threads);

// Split assignment (exposed for tests). `tags` are the sources' split tags ("" = unassigned).
// Returns sorted sample indices for "train", "val" and "test".
std::map<std::string, std::vector<int64_t>> AssignSplits(const std::vector<int64_t>& labels,
                                                         const std::vector<std::string>& tags,
                                                         const SplitSpec& spec, int num_classes,
                                                         const std::string& manifest_path);

// Decodes an encoded image file with OpenCV and converts it to the stored format (channels, RGB
// order, size and resize policy). Returns an empty Mat if the file cannot be decoded.
cv::Mat LoadAndConvert(const std::string& file, const ImageSpec& spec);
// Converts an already-decoded image the same way.
cv::Mat ConvertImage(const cv::Mat& img, const ImageSpec& spec, bool is_bgr);

}  // namespace mlfd
