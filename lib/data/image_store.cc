// ImageStore: validated read access to prepare_data's output.
#include "data/image_store.h"

#include <algorithm>
#include <cstring>
#include <map>
#include <random>

#include "data/clip_store.h"
#include "data/store_meta.h"
#include "util/error.h"
#include "util/sha256.h"

namespace mlfd {

ImageStore ImageStore::Open(const std::string& path) {
  ImageStore s;
  s.path_ = path;
  s.file_ = std::make_shared<h5::File>(h5::File::Open(path));
  const h5::File& f = *s.file_;
  const std::string format = f.HasAttr("/", "format") ? f.GetStringAttr("/", "format") : "";
  if (format == kClipStoreFormat)
    throw Error(Msg(path,
                    ": is a clip store (videos, several frames per sample), not an image store; ",
                    "this stage reads image stores (prepare_data with an image manifest)"));
  if (format != kImageStoreFormat)
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
  // Each image at least 1 x 1 x 1, and a size an int holds (the loader allocates batch x H x W x C).
  if (info.shape[1] < 1 || info.shape[2] < 1 || info.shape[3] < 1 || info.shape[1] > (1 << 16) ||
      info.shape[2] > (1 << 16) || info.shape[3] > 4096)
    throw Error(Msg(path, ":/images: expected N x H x W x C with H, W in 1..65536 and C in 1..4096, found ",
                    h5::ShapeStr(info.shape)));
  s.n_ = info.shape[0];
  s.h_ = static_cast<int>(info.shape[1]);
  s.w_ = static_cast<int>(info.shape[2]);
  s.c_ = static_cast<int>(info.shape[3]);
  StoreMeta meta = ReadStoreMeta(f, path, s.n_, s.c_, "images");
  s.classes_ = std::move(meta.classes);
  s.labels_ = std::move(meta.labels);
  s.mean_ = std::move(meta.mean);
  s.std_ = std::move(meta.std);
  s.splits_ = std::move(meta.splits);
  return s;
}

StoreMeta ReadStoreMeta(const h5::File& f, const std::string& path, int64_t rows, int channels,
                        const std::string& what) {
  StoreMeta m;
  m.classes = f.ReadStrings("class_names");
  m.labels = f.ReadVector<int64_t>("labels");
  if (static_cast<int64_t>(m.labels.size()) != rows)
    throw Error(Msg(path, ":/labels: ", m.labels.size(), " labels for ", rows, " ", what));
  for (size_t i = 0; i < m.labels.size(); ++i)
    if (m.labels[i] < 0 || m.labels[i] >= static_cast<int64_t>(m.classes.size()))
      throw Error(
          Msg(path, ":/labels[", i, "] = ", m.labels[i], " is outside 0..", m.classes.size() - 1));
  m.mean = f.GetDoublesAttr("/", "mean");
  m.std = f.GetDoublesAttr("/", "std");
  if (static_cast<int>(m.mean.size()) != channels || static_cast<int>(m.std.size()) != channels)
    throw Error(Msg(path, ": mean/std attributes need ", channels, " values"));
  for (const auto& name : f.List("splits")) {
    auto idx = f.ReadVector<int64_t>("splits/" + name);
    for (auto i : idx)
      if (i < 0 || i >= rows)
        throw Error(Msg(path, ":/splits/", name, ": index ", i, " out of range"));
    m.splits[name] = std::move(idx);
  }
  return m;
}

RowFold RowFold::Parse(const std::string& text, uint64_t seed) {
  RowFold f;
  f.seed = seed;
  if (text.empty()) return f;
  auto slash = text.find('/');
  auto number = [&](const std::string& t) {
    if (t.empty() || t.size() > 3 || t.find_first_not_of("0123456789") != std::string::npos) return -1;
    return std::stoi(t);
  };
  f.index = slash == std::string::npos ? -1 : number(text.substr(0, slash));
  f.count = slash == std::string::npos ? -1 : number(text.substr(slash + 1));
  if (f.count < 2 || f.count > 100 || f.index < 1 || f.index > f.count)
    throw UsageError(Msg("--fold: expected i/k with 1 <= i <= k and 2 <= k <= 100 (e.g. 1/2: train without the first "
                         "of two folds), got '", text, "'"));
  return f;
}

std::string RowFold::ToString() const { return active() ? Msg(index, "/", count) : std::string("none"); }

std::vector<int64_t> RowFold::Select(const ImageStore& store, const std::vector<int64_t>& rows, bool held_out) const {
  return Select(store.labels(), rows, held_out);
}

std::vector<int64_t> RowFold::Select(const std::vector<int64_t>& labels, const std::vector<int64_t>& rows,
                                     bool held_out) const {
  if (!active()) return rows;
  std::map<int64_t, std::vector<int64_t>> by_class;
  for (int64_t r : rows) by_class[labels.at(static_cast<size_t>(r))].push_back(r);
  std::vector<int64_t> out;
  for (auto& [label, members] : by_class) {
    std::sort(members.begin(), members.end());
    std::mt19937_64 rng(seed * 0x9E3779B97F4A7C15ULL + static_cast<uint64_t>(label) + 1);
    for (size_t i = members.size(); i > 1; --i) std::swap(members[i - 1], members[rng() % i]);
    for (size_t p = 0; p < members.size(); ++p)
      if ((static_cast<int>(p % static_cast<size_t>(count)) == index - 1) == held_out) out.push_back(members[p]);
  }
  std::sort(out.begin(), out.end());
  return out;
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
