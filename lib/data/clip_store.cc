// ClipStore: validated read access to prepare_data's output for video sources.
#include "data/clip_store.h"

#include <algorithm>
#include <cstring>

#include "data/image_store.h"
#include "data/store_meta.h"
#include "util/error.h"
#include "util/sha256.h"

namespace mlfd {

bool IsClipStore(const std::string& path) {
  h5::File f = h5::File::Open(path);
  return f.HasAttr("/", "format") && f.GetStringAttr("/", "format") == kClipStoreFormat;
}

ClipStore ClipStore::Open(const std::string& path) {
  ClipStore s;
  s.path_ = path;
  s.file_ = std::make_shared<h5::File>(h5::File::Open(path));
  const h5::File& f = *s.file_;
  const std::string format = f.HasAttr("/", "format") ? f.GetStringAttr("/", "format") : "";
  if (format == kImageStoreFormat)
    throw Error(Msg(path,
                    ": is an image store (one image per sample), not a clip store; this needs ",
                    "a clip store (prepare_data with a video manifest, docs/datasets.md)"));
  if (format != kClipStoreFormat)
    throw Error(Msg(path, ": not a clip store (no format=\"", kClipStoreFormat,
                    "\" attribute; was it written by prepare_data?)"));
  int64_t version = f.GetIntAttr("/", "format_version");
  if (version != kClipStoreVersion)
    throw Error(Msg(path, ": clip store format version ", version, ", this tool reads version ",
                    kClipStoreVersion, "; rerun prepare_data"));
  s.name_ = f.GetStringAttr("/", "name");
  h5::DatasetInfo info = f.Info("clips");
  if (info.dtype != h5::DType::kUInt8 || info.shape.size() != 5)
    throw Error(Msg(path, ":/clips: expected uint8 N x T x H x W x C, found ",
                    h5::DTypeName(info.dtype), " ", h5::ShapeStr(info.shape)));
  if (info.shape[1] < 1 || info.shape[1] > 4096 || info.shape[2] < 1 || info.shape[3] < 1 ||
      info.shape[4] < 1 || info.shape[2] > (1 << 16) || info.shape[3] > (1 << 16) ||
      info.shape[4] > 4096)
    throw Error(Msg(path,
                    ":/clips: expected N x T x H x W x C with T in 1..4096, H, W in 1..65536 and ",
                    "C in 1..4096, found ", h5::ShapeStr(info.shape)));
  s.n_ = info.shape[0];
  s.t_ = static_cast<int>(info.shape[1]);
  s.h_ = static_cast<int>(info.shape[2]);
  s.w_ = static_cast<int>(info.shape[3]);
  s.c_ = static_cast<int>(info.shape[4]);
  if (f.GetIntAttr("/", "frames") != s.t_)
    throw Error(Msg(path, ": attribute frames = ", f.GetIntAttr("/", "frames"),
                    " but /clips holds ", s.t_, " frames per clip"));
  StoreMeta meta = ReadStoreMeta(f, path, s.n_, s.c_, "clips");
  s.classes_ = std::move(meta.classes);
  s.labels_ = std::move(meta.labels);
  s.mean_ = std::move(meta.mean);
  s.std_ = std::move(meta.std);
  s.splits_ = std::move(meta.splits);
  s.frame_rates_ = f.ReadVector<double>("frame_rate");
  s.num_source_frames_ = f.ReadVector<int64_t>("num_source_frames");
  if (static_cast<int64_t>(s.frame_rates_.size()) != s.n_)
    throw Error(Msg(path, ":/frame_rate: ", s.frame_rates_.size(), " values for ", s.n_, " clips"));
  if (static_cast<int64_t>(s.num_source_frames_.size()) != s.n_)
    throw Error(Msg(path, ":/num_source_frames: ", s.num_source_frames_.size(), " values for ",
                    s.n_, " clips"));
  h5::DatasetInfo fi = f.Info("frame_indices");
  if (fi.shape != h5::Shape{s.n_, s.t_})
    throw Error(Msg(path, ":/frame_indices: expected ", s.n_, " x ", s.t_, ", found ",
                    h5::ShapeStr(fi.shape)));
  return s;
}

std::vector<std::string> ClipStore::split_names() const {
  std::vector<std::string> out;
  for (const auto& [k, v] : splits_) out.push_back(k);
  return out;
}

const std::vector<int64_t>& ClipStore::split(const std::string& name) const {
  auto it = splits_.find(name);
  if (it == splits_.end()) {
    std::string list;
    for (const auto& [k, v] : splits_) list += (list.empty() ? "" : ", ") + k;
    throw Error(Msg(path_, ": no split '", name, "' (available: ", list, ")"));
  }
  return it->second;
}

void ClipStore::ReadRows(int64_t row, int64_t n, uint8_t* out) const {
  file_->ReadRows("clips", row, n, out, h5::DType::kUInt8);
}

void ClipStore::ReadIndices(const std::vector<int64_t>& indices, uint8_t* out) const {
  // One selection over the distinct rows in ascending order (ReadRowList's contract), then each
  // requested clip copied to its place.
  std::vector<int64_t> rows = indices;
  std::sort(rows.begin(), rows.end());
  rows.erase(std::unique(rows.begin(), rows.end()), rows.end());
  for (int64_t r : rows)
    if (r < 0 || r >= n_) throw Error(Msg(path_, ":/clips: row ", r, " is outside 0..", n_ - 1));
  if (rows == indices) {
    file_->ReadRowList("clips", rows, out, h5::DType::kUInt8);
    return;
  }
  const auto bytes = static_cast<size_t>(clip_bytes());
  std::vector<uint8_t> got(rows.size() * bytes);
  file_->ReadRowList("clips", rows, got.data(), h5::DType::kUInt8);
  for (size_t i = 0; i < indices.size(); ++i) {
    size_t k =
        static_cast<size_t>(std::lower_bound(rows.begin(), rows.end(), indices[i]) - rows.begin());
    std::memcpy(out + i * bytes, got.data() + k * bytes, bytes);
  }
}

std::vector<int64_t> ClipStore::FrameIndices(int64_t row) const {
  if (row < 0 || row >= n_)
    throw Error(Msg(path_, ":/frame_indices: row ", row, " is outside 0..", n_ - 1));
  std::vector<int64_t> out(static_cast<size_t>(t_));
  file_->ReadRows("frame_indices", row, 1, out.data(), h5::DType::kInt64);
  return out;
}

const std::string& ClipStore::Fingerprint() const {
  if (fingerprint_.empty()) fingerprint_ = Sha256File(path_);
  return fingerprint_;
}

}  // namespace mlfd
