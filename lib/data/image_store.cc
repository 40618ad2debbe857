// ImageStore: validated read access to prepare_data's output.
#include "data/image_store.h"

#include <algorithm>
#include <cstring>

#include "util/error.h"
#include "util/sha256.h"

namespace mlfd {

ImageStore ImageStore::Open(const std::string& path) {
  ImageStore s;
  s.path_ = path;
  s.file_ = std::make_shared<h5::File>(h5::File::Open(path));
  const h5::File& f = *s.file_;
  if (!f.HasAttr("/", "format") || f.GetStringAttr("/", "format") != kImageStoreFormat)
    throw Error(Msg(path, ": not an image store (no format=\"", kImageStoreFormat,
                    "\" attribute; was it written by prepare_data?)"));
  int64_t version = f.GetIntAttr("/", "format_version");
  if (version != kImageStoreVersion)
    throw Error(Msg(path, ": image store format version ", version, ", this tool reads version ",
                    kImageStoreVersion, "; rerun prepare_data"));
  s.name_ = f.GetStringAttr("/", "name");
  h5::DatasetInfo info = f.Info("images");
  if (info.dtype != h5::DType::kUInt8 || info.shape.size() != 4)
    throw Error(Msg(path, ":/images: expected uint8 N x H x W x C, found ", h5::DTypeName(info.dtype),
                    " ", h5::ShapeStr(info.shape)));
  s.n_ = info.shape[0];
  s.h_ = static_cast<int>(info.shape[1]);
  s.w_ = static_cast<int>(info.shape[2]);
  s.c_ = static_cast<int>(info.shape[3]);
  s.classes_ = f.ReadStrings("class_names");
  s.labels_ = f.ReadVector<int64_t>("labels");
  if (static_cast<int64_t>(s.labels_.size()) != s.n_)
    throw Error(Msg(path, ":/labels: ", s.labels_.size(), " labels for ", s.n_, " images"));
  for (size_t i = 0; i < s.labels_.size(); ++i)
    if (s.labels_[i] < 0 || s.labels_[i] >= static_cast<int64_t>(s.classes_.size()))
      throw Error(Msg(path, ":/labels[", i, "] = ", s.labels_[i], " is outside 0..",
                      s.classes_.size() - 1));
  s.mean_ = f.GetDoublesAttr("/", "mean");
  s.std_ = f.GetDoublesAttr("/", "std");
  if (static_cast<int>(s.mean_.size()) != s.c_ || static_cast<int>(s.std_.size()) != s.c_)
    throw Error(Msg(path, ": mean/std attributes need ", s.c_, " values"));
  for (const auto& name : f.List("splits")) {
    auto idx = f.ReadVector<int64_t>("splits/" + name);
    for (auto i : idx)
      if (i < 0 || i >= s.n_) throw Error(Msg(path, ":/splits/", name, ": index ", i, " out of range"));
    s.splits_[name] = std::move(idx);
  }
  return s;
}

std::vector<std::string> ImageStore::split_names() const {
  std::vector<std::string> out;
  for (const auto& [k, v] : splits_) out.push_back(k);
  return out;
}

const std::vector<int64_t>& ImageStore::split(const std::string& name) const {
  auto it = splits_.find(name);
  if (it == splits_.end()) {
    std::string list;
    for (const auto& [k, v] : splits_) list += (list.empty() ? "" : ", ") + k;
    throw Error(Msg(path_, ": no split '", name, "' (available: ", list, ")"));
  }
  return it->second;
}

void ImageStore::ReadRows(int64_t row, int64_t n, uint8_t* out) const {
  file_->ReadRows("images", row, n, out, h5::DType::kUInt8);
}

void ImageStore::ReadIndices(const std::vector<int64_t>& indices, uint8_t* out) const {
  const int64_t bytes = image_bytes();
  // One open dataset for the whole list (h5::File::ReadRowList): its chunk cache then decompresses
  // each chunk once, where a read per run reopened the dataset and decompressed a chunk per run.
  if (std::is_sorted(indices.begin(), indices.end()) &&
      std::adjacent_find(indices.begin(), indices.end()) == indices.end()) {
    file_->ReadRowList("images", indices, out, h5::DType::kUInt8);
    return;
  }
  std::vector<int64_t> rows = indices;
  std::sort(rows.begin(), rows.end());
  rows.erase(std::unique(rows.begin(), rows.end()), rows.end());
  std::vector<uint8_t> got(rows.size() * static_cast<size_t>(bytes));
  file_->ReadRowList("images", rows, got.data(), h5::DType::kUInt8);
  for (size_t i = 0; i < indices.size(); ++i) {
    size_t k = static_cast<size_t>(std::lower_bound(rows.begin(), rows.end(), indices[i]) - rows.begin());
    std::memcpy(out + static_cast<int64_t>(i) * bytes, got.data() + k * static_cast<size_t>(bytes),
                static_cast<size_t>(bytes));
  }
}

const std::string& ImageStore::Fingerprint() const {
  if (fingerprint_.empty()) fingerprint_ = Sha256File(path_);
  return fingerprint_;
}

}  // namespace mlfd
