// The feature-cache reader.
#include "io/feature_cache.h"

#include <torch/torch.h>

#include <algorithm>

#include "io/h5.h"
#include "io/half.h"
#include "io/mapped_file.h"
#include "io/tensor_io.h"
#include "util/error.h"

namespace mlfd {
namespace {

// float32 of a CPU tensor. A small float16 batch (vector levels: 128 rows of 128 values) goes
// through HalfToFloat (F16C), about 1.7x faster than ATen 1.13's copy at that size, where the
// conversion cost more than the read; larger ones through ATen's copy, which runs on the intra-op
// threads and measured as fast or faster (docs/performance.md).
torch::Tensor ToFloat32(const torch::Tensor& t) {
  if (t.scalar_type() != torch::kFloat16 || t.numel() >= at::internal::GRAIN_SIZE) return t.to(torch::kFloat32);
  torch::Tensor src = t.contiguous();
  torch::Tensor out = torch::empty(src.sizes(), torch::TensorOptions().dtype(torch::kFloat32));
  HalfToFloat(reinterpret_cast<const uint16_t*>(src.data_ptr<at::Half>()), out.data_ptr<float>(),
              static_cast<size_t>(src.numel()));
  return out;
}

}  // namespace

FeatureCache::FeatureCache(const std::string& path) : path_(path) {
  file_ = std::make_unique<h5::File>(h5::File::Open(path));
  if (!file_->HasAttr("/", "format") || file_->GetStringAttr("/", "format") != kFeatureFormat)
    throw Error(Msg(path, ": not a feature cache (no format=\"", kFeatureFormat, "\" attribute)"));
  int64_t v = file_->GetIntAttr("/", "format_version");
  if (v != kFeatureVersion)
    throw Error(Msg(path, ": feature cache version ", v, ", this tool reads ", kFeatureVersion));
  model_sha_ = file_->GetStringAttr("/", "model_sha256");
  store_sha_ = file_->GetStringAttr("/", "store_sha256");
  model_path_ = file_->GetStringAttr("/", "model_path");
  store_path_ = file_->GetStringAttr("/", "store_path");
  const nlohmann::json levels = file_->GetJsonAttr("/", "levels");
  if (!levels.is_array() ||
      !std::all_of(levels.begin(), levels.end(), [](const nlohmann::json& l) { return l.is_string(); }))
    throw Error(Msg(path, ": attribute 'levels' is not a list of level names"));
  levels_ = levels.get<std::vector<std::string>>();
  dtype_ = file_->GetStringAttr("/", "dtype");
  dataset_ = file_->GetStringAttr("/", "dataset");
  head_ = file_->GetIntAttr("/", "head");
}

void FeatureCache::CheckHead(const std::string& dataset, int64_t head) const {
  if (dataset != dataset_ || head != head_)
    throw Error(Msg(path_, ": feature cache of dataset '", dataset_, "' (head ", head_, "), but the student needs '",
                    dataset, "' (head ", head, "); rerun extract_features with --dataset ", dataset));
}

FeatureCache::~FeatureCache() = default;
FeatureCache::FeatureCache(FeatureCache&&) noexcept = default;

std::vector<std::string> FeatureCache::splits() const {
  std::vector<std::string> s;
  for (const auto& n : file_->List("/"))
    if (file_->Exists(n + "/indices")) s.push_back(n);
  return s;
}

void FeatureCache::CheckModel(const std::string& model_path, const std::string& sha) const {
  if (sha != model_sha_)
    throw Error(Msg(path_, ": stale or foreign feature cache: made from ", model_path_, " (sha256 ",
                    model_sha_.substr(0, 12), "), but the model is ", model_path, " (sha256 ", sha.substr(0, 12),
                    "); rerun extract_features"));
}

void FeatureCache::CheckStore(const std::string& store_path, const std::string& sha) const {
  if (sha != store_sha_)
    throw Error(Msg(path_, ": stale or foreign feature cache: made from image store ", store_path_, " (sha256 ",
                    store_sha_.substr(0, 12), "), but the store is ", store_path, " (sha256 ", sha.substr(0, 12),
                    "); rerun extract_features"));
}

void FeatureCache::RequireLevels(const std::vector<std::string>& levels) const {
  for (const auto& l : levels)
    if (std::find(levels_.begin(), levels_.end(), l) == levels_.end()) {
      std::string list;
      for (const auto& n : levels_) list += (list.empty() ? "" : ", ") + n;
      throw Error(Msg(path_, ": the feature cache has no level '", l, "' (it has: ", list,
                      "); rerun extract_features with --levels including it"));
    }
}

void FeatureCache::RequireSplit(const std::string& split) const {
  if (!file_->Exists(split + "/indices")) {
    std::string list;
    for (const auto& n : splits()) list += (list.empty() ? "" : ", ") + n;
    throw Error(Msg(path_, ": the feature cache has no split '", split, "' (it has: ", list, ")"));
  }
}

std::vector<int64_t> FeatureCache::SampleShape(const std::string& split, const std::string& level) const {
  RequireSplit(split);
  RequireLevels({level});
  auto s = file_->Info(split + "/" + level).shape;
  return {s.begin() + 1, s.end()};
}

const std::vector<int64_t>& FeatureCache::RowMap(const std::string& split) {
  auto it = rows_.find(split);
  if (it != rows_.end()) return it->second;
  RequireSplit(split);
  auto idx = file_->ReadVector<int64_t>(split + "/indices");
  int64_t most = -1;
  for (int64_t r : idx) {
    if (r < 0) throw Error(Msg(path_, ": ", split, "/indices holds a negative image-store row (", r, ")"));
    most = std::max(most, r);
  }
  std::vector<int64_t> m(static_cast<size_t>(most + 1), -1);
  for (size_t i = 0; i < idx.size(); ++i) m[static_cast<size_t>(idx[i])] = static_cast<int64_t>(i);
  return rows_[split] = std::move(m);
}

bool FeatureCache::Preload(const std::string& split, const std::vector<std::string>& levels, int64_t max_bytes) {
  RequireSplit(split);
  RequireLevels(levels);
  int64_t bytes = 0;
  for (const auto& l : levels) {
    auto info = file_->Info(split + "/" + l);
    int64_t n = 1;
    for (auto d : info.shape) n *= d;
    bytes += n * (info.dtype == h5::DType::kFloat16 ? 2 : 4);
  }
  if (bytes > max_bytes) return false;
  for (const auto& l : levels) {
    const std::string name = split + "/" + l;
    if (const h5::RowChunks* index = Chunks(name)) {  // every row in file order, directly
      std::vector<int64_t> all(index->addr.size());
      for (size_t i = 0; i < all.size(); ++i) all[i] = static_cast<int64_t>(i);
      memory_[name] = ReadChunkRows(*index, all);
    } else {
      memory_[name] = ReadTensor(*file_, name);
    }
  }
  return true;
}

torch::Tensor FeatureCache::Read(const std::string& split, const std::string& level, const torch::Tensor& store_rows) {
  const auto& map = RowMap(split);
  RequireLevels({level});
  torch::Tensor rows = store_rows.to(torch::kCPU, torch::kInt64).contiguous();
  const int64_t n = rows.numel();
  std::vector<int64_t> cache_rows(static_cast<size_t>(n));
  const int64_t* r = rows.data_ptr<int64_t>();
  const int64_t known = static_cast<int64_t>(map.size());
  for (int64_t i = 0; i < n; ++i) {
    const int64_t at = r[i] >= 0 && r[i] < known ? map[static_cast<size_t>(r[i])] : -1;
    if (at < 0)
      throw Error(Msg(path_, ": image-store row ", r[i], " is not in the cached '", split,
                      "' split (stale cache or another split?)"));
    cache_rows[static_cast<size_t>(i)] = at;
  }
  auto mem = memory_.find(split + "/" + level);
  if (mem != memory_.end())
    return ToFloat32(mem->second.index_select(0, torch::from_blob(cache_rows.data(), {n}, torch::kInt64)));
  const std::string name = split + "/" + level;
  // From disk, in the file's own type (float16 stays float16: HDF5's conversion is far slower than
  // ATen's), converted at the end. Per-sample chunks are read directly, in the asked order: copied
  // from the file's mapping (each row's checksum verified on its first read), or with pread.
  if (const h5::RowChunks* index = Chunks(name)) return ToFloat32(ReadChunkRows(*index, cache_rows));
  // Any other layout through HDF5: the distinct rows in file order with one selection, then put
  // back in the asked order.
  const h5::DatasetInfo info = file_->Info(name);
  h5::Shape shape = info.shape;
  std::vector<int64_t> sorted = cache_rows;
  std::sort(sorted.begin(), sorted.end());
  sorted.erase(std::unique(sorted.begin(), sorted.end()), sorted.end());
  shape[0] = static_cast<int64_t>(sorted.size());
  torch::Tensor got = torch::empty(shape, torch::TensorOptions().dtype(ToTorch(info.dtype)));
  file_->ReadRowList(name, sorted, got.data_ptr(), info.dtype);
  if (sorted == cache_rows) return ToFloat32(got);  // asked in file order already
  std::vector<int64_t> pos(static_cast<size_t>(n));
  for (int64_t i = 0; i < n; ++i)
    pos[static_cast<size_t>(i)] =
        std::lower_bound(sorted.begin(), sorted.end(), cache_rows[static_cast<size_t>(i)]) - sorted.begin();
  return ToFloat32(got.index_select(0, torch::from_blob(pos.data(), {n}, torch::kInt64)));
}

torch::Tensor FeatureCache::ReadChunkRows(const h5::RowChunks& index, const std::vector<int64_t>& rows) {
  h5::Shape shape = index.shape;
  shape[0] = static_cast<int64_t>(rows.size());
  torch::Tensor got = torch::empty(shape, torch::TensorOptions().dtype(ToTorch(index.dtype)));
  if (!map_) {
    file_->ReadChunkRows(index, rows, got.data_ptr());
    return got;
  }
  const std::vector<uint64_t> offsets = h5::RowChunkAddresses(index, rows, path_);
  std::vector<uint8_t>& verified = verified_[index.name];
  if (verified.empty()) verified.assign(index.addr.size(), 0);
  const int64_t bad = map_->Gather(offsets.data(), rows.data(), rows.size(), index.row_bytes, index.fletcher32,
                                   verified.data(), static_cast<char*>(got.data_ptr()));
  if (bad >= 0) h5::ThrowChunkChecksumMismatch(path_, index.name, rows[static_cast<size_t>(bad)]);
  return got;
}

const h5::RowChunks* FeatureCache::Chunks(const std::string& name) {
  auto it = chunks_.find(name);
  if (it == chunks_.end()) {
    it = chunks_.emplace(name, file_->IndexRowChunks(name)).first;
    if (it->second && !map_) {
      try {
        map_ = std::make_unique<MappedFile>(path_);
      } catch (const Error&) {
        // A file system that cannot map files: rows are read with pread instead.
      }
    }
  }
  return it->second.get();
}

torch::Tensor FeatureCache::Labels(const std::string& split) const {
  RequireSplit(split);
  return ReadTensor(*file_, split + "/labels");
}

torch::Tensor FeatureCache::Indices(const std::string& split) const {
  RequireSplit(split);
  return ReadTensor(*file_, split + "/indices");
}

}  // namespace mlfd
