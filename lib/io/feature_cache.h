// The multi-level feature cache (format "mlfd.features", docs/formats.md): a frozen network's
// named levels over the splits of an image store, written by extract_features
// (distill/extract_features.h) and read here, by finetune_joint and distill_student.
//
//   /                       attrs: format, format_version, model_sha256, model_path, store_sha256,
//                           store_path, dataset, head, levels (JSON), dtype, provenance
//   /<split>/indices        int64 N      rows of the image store, in cache order
//   /<split>/labels         int64 N
//   /<split>/<level>        N x C x H x W (maps) or N x C (vectors), float16 or float32, one chunk
//                           per sample; "logits" (float32) are those of the store's dataset
//
// Extraction streams: one batch at a time is in memory whatever N is. Readers check both
// fingerprints against their inputs and refuse a stale or foreign cache.
#pragma once

#include <torch/types.h>

#include <map>
#include <memory>
#include <string>
#include <vector>

namespace mlfd {

namespace h5 {
class File;
struct RowChunks;
}

inline constexpr const char* kFeatureFormat = "mlfd.features";
inline constexpr int kFeatureVersion = 1;

class MappedFile;

// Not thread-safe: one thread reads a FeatureCache at a time.
class FeatureCache {
 public:
  // Opens and validates the format. The file stays open for reads.
  explicit FeatureCache(const std::string& path);
  ~FeatureCache();
  FeatureCache(FeatureCache&&) noexcept;

  const std::string& path() const { return path_; }
  const std::string& model_sha256() const { return model_sha_; }
  const std::string& store_sha256() const { return store_sha_; }
  const std::vector<std::string>& levels() const { return levels_; }
  const std::string& dtype() const { return dtype_; }  // of maps and vectors: float16 | float32
  std::vector<std::string> splits() const;

  // Refuses (Error, one line) a cache not made from this model / store.
  void CheckModel(const std::string& model_path, const std::string& model_sha256) const;
  void CheckStore(const std::string& store_path, const std::string& store_sha256) const;
  // Refuses a cache whose logits come from another dataset's head than the one asked for.
  void CheckHead(const std::string& dataset, int64_t head) const;
  const std::string& dataset() const { return dataset_; }
  // Error listing the valid names when a level or split is absent.
  void RequireLevels(const std::vector<std::string>& levels) const;
  void RequireSplit(const std::string& split) const;

  // Shape of one sample of a level (C x H x W or C).
  std::vector<int64_t> SampleShape(const std::string& split, const std::string& level) const;
  // Loads the split's levels into memory (as stored) when they fit in `max_bytes`; otherwise reads
  // stay on disk. Returns whether they were loaded.
  bool Preload(const std::string& split, const std::vector<std::string>& levels, int64_t max_bytes);
  // Rows of a level for image-store rows `store_rows` (int64, any order), as float32 on CPU.
  // Error if a row is not in the split. Rows stored one per chunk (as extract_features writes
  // them) are copied from a read-only mapping of the file, each row's checksum verified the first
  // time this reader reads it; other layouts are read through HDF5.
  torch::Tensor Read(const std::string& split, const std::string& level, const torch::Tensor& store_rows);
  torch::Tensor Labels(const std::string& split) const;
  torch::Tensor Indices(const std::string& split) const;

 private:
  // Cache row of every image-store row of the split (-1: not in it), indexed by store row.
  const std::vector<int64_t>& RowMap(const std::string& split);
  // The chunk index of dataset `name` (built on first use), or null when it is read through HDF5.
  const h5::RowChunks* Chunks(const std::string& name);
  // Rows `rows` of an indexed dataset, in its stored type.
  torch::Tensor ReadChunkRows(const h5::RowChunks& index, const std::vector<int64_t>& rows);

  std::string path_, model_sha_, store_sha_, model_path_, store_path_, dtype_, dataset_;
  int64_t head_ = 0;
  std::vector<std::string> levels_;
  std::unique_ptr<h5::File> file_;
  std::map<std::string, std::vector<int64_t>> rows_;
  std::map<std::string, torch::Tensor> memory_;  // "<split>/<level>" -> all rows
  std::map<std::string, std::unique_ptr<h5::RowChunks>> chunks_;  // "<split>/<level>" -> index or null
  std::map<std::string, std::vector<uint8_t>> verified_;           // "<split>/<level>" -> row checked
  std::unique_ptr<MappedFile> map_;  // made with the first index; null if the file cannot be mapped
};

}  // namespace mlfd
