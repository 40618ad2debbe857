// Read access to an image store written by prepare_data (format "mlfd.image_store", see
// docs/formats.md): metadata, labels, split indices, and images by index without loading the
// whole file.
#pragma once

#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "io/h5.h"

namespace mlfd {

inline constexpr const char* kImageStoreFormat = "mlfd.image_store";
inline constexpr int kImageStoreVersion = 1;

class ImageStore;

// One fold of a training split, for a split fit (train_teacher --fold, finetune_joint --fit-rows):
// the rows are dealt into `count` folds stratified by class (each class's rows in a random order
// drawn from `seed`, dealt round robin), and fold `index` (1-based) is the one held out.
struct RowFold {
  int index = 0, count = 0;  // 0/0: no fold, every row
  uint64_t seed = 0;
  bool active() const { return count > 0; }
  // "i/k" (1 <= i <= k, 2 <= k <= 100) or "" (no fold); throws UsageError naming --fold otherwise.
  static RowFold Parse(const std::string& text, uint64_t seed);
  std::string ToString() const;  // "i/k"
  // The rows among `rows` (of `store`) outside fold `index` (held_out = false: what a fold teacher
  // trains on) or in it (held_out = true: the rows it never saw), sorted. The folds of the same rows
  // with the same count and seed partition them; without a fold every row is returned.
  std::vector<int64_t> Select(const ImageStore& store, const std::vector<int64_t>& rows, bool held_out) const;
  // The same over the labels of any store (a clip store's, indexed by row).
  std::vector<int64_t> Select(const std::vector<int64_t>& labels, const std::vector<int64_t>& rows, bool held_out) const;
};

class ImageStore {
 public:
  // Opens and validates a store; errors name the file and what is wrong.
  static ImageStore Open(const std::string& path);

  const std::string& path() const { return path_; }
  const std::string& name() const { return name_; }
  int64_t size() const { return n_; }
  int height() const { return h_; }
  int width() const { return w_; }
  int channels() const { return c_; }
  int num_classes() const { return static_cast<int>(classes_.size()); }
  const std::vector<std::string>& class_names() const { return classes_; }
  const std::vector<int64_t>& labels() const { return labels_; }
  const std::vector<double>& mean() const { return mean_; }
  const std::vector<double>& std() const { return std_; }
  std::vector<std::string> split_names() const;
  // Sample indices of a split; throws Error listing the splits if it does not exist.
  const std::vector<int64_t>& split(const std::string& name) const;

  // Copies images [row, row + n) (N x H x W x C uint8, row-major) into `out`.
  void ReadRows(int64_t row, int64_t n, uint8_t* out) const;
  // Copies the images at arbitrary indices (any order) into `out`, reading contiguous runs at once.
  void ReadIndices(const std::vector<int64_t>& indices, uint8_t* out) const;
  int64_t image_bytes() const { return static_cast<int64_t>(h_) * w_ * c_; }

  // sha256 of the file (computed once, on first use).
  const std::string& Fingerprint() const;
  const h5::File& file() const { return *file_; }

 private:
  std::string path_, name_;
  std::shared_ptr<h5::File> file_;
  int64_t n_ = 0;
  int h_ = 0, w_ = 0, c_ = 0;
  std::vector<std::string> classes_;
  std::vector<int64_t> labels_;
  std::vector<double> mean_, std_;
  std::map<std::string, std::vector<int64_t>> splits_;
  mutable std::string fingerprint_;
};

}  // namespace mlfd
