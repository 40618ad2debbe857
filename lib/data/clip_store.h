// Read access to a clip store written by prepare_data from video sources (format
// "mlfd.clip_store", see docs/formats.md): per sample, T frames of one video at the stored
// resolution, with labels, splits, class names, frame rates and the frames' source indices. One
// clip is one chunk, so a clip is one contiguous read.
#pragma once

#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "io/h5.h"

namespace mlfd {

inline constexpr const char* kClipStoreFormat = "mlfd.clip_store";
inline constexpr int kClipStoreVersion = 1;

// Whether `path` is a clip store (format attribute "mlfd.clip_store"); an unreadable file throws.
bool IsClipStore(const std::string& path);

class ClipStore {
 public:
  // Opens and validates a clip store; errors name the file and what is wrong (an image store is
  // refused with one line saying so).
  static ClipStore Open(const std::string& path);

  const std::string& path() const { return path_; }
  const std::string& name() const { return name_; }
  int64_t size() const { return n_; }  // clips
  int frames() const { return t_; }    // T, frames per clip
  int height() const { return h_; }
  int width() const { return w_; }
  int channels() const { return c_; }
  int num_classes() const { return static_cast<int>(classes_.size()); }
  const std::vector<std::string>& class_names() const { return classes_; }
  const std::vector<int64_t>& labels() const { return labels_; }
  const std::vector<double>& mean() const { return mean_; }
  const std::vector<double>& std() const { return std_; }
  // Frames per second of each source video (0 when unknown, e.g. frame folders without a rate).
  const std::vector<double>& frame_rates() const { return frame_rates_; }
  // Frames each source video had (decoded, or frame images in its folder).
  const std::vector<int64_t>& num_source_frames() const { return num_source_frames_; }
  std::vector<std::string> split_names() const;
  // Sample indices of a split; throws Error listing the splits if it does not exist.
  const std::vector<int64_t>& split(const std::string& name) const;

  // Copies clips [row, row + n) (N x T x H x W x C uint8, row-major) into `out`.
  void ReadRows(int64_t row, int64_t n, uint8_t* out) const;
  // Copies the clips at arbitrary indices (any order, repeats allowed) into `out`.
  void ReadIndices(const std::vector<int64_t>& indices, uint8_t* out) const;
  // The source frame index of each stored frame of clip `row` (T values; repeats where padded).
  std::vector<int64_t> FrameIndices(int64_t row) const;
  int64_t frame_bytes() const { return static_cast<int64_t>(h_) * w_ * c_; }
  int64_t clip_bytes() const { return frame_bytes() * t_; }

  // sha256 of the file (computed once, on first use).
  const std::string& Fingerprint() const;
  const h5::File& file() const { return *file_; }

 private:
  std::string path_, name_;
  std::shared_ptr<h5::File> file_;
  int64_t n_ = 0;
  int t_ = 0, h_ = 0, w_ = 0, c_ = 0;
  std::vector<std::string> classes_;
  std::vector<int64_t> labels_;
  std::vector<double> mean_, std_;
  std::vector<double> frame_rates_;
  std::vector<int64_t> num_source_frames_;
  std::map<std::string, std::vector<int64_t>> splits_;
  mutable std::string fingerprint_;
};

}  // namespace mlfd
