// The HDF5 readers of every file kind, as fuzz_h5 and fuzz_h5_struct call them on one file:
//   - an image store: ImageStore::Open (data/image_store.cc), then images read by index as the
//     loader does;
//   - a clip store: ClipStore::Open (data/clip_store.cc), then clips and their frame indices read
//     by index;
//   - a checkpoint: ReadCheckpointMeta, then LoadCheckpoint with its training state
//     (models/checkpoint.cc: the model is rebuilt from the file's config and loaded strictly);
//   - a feature cache: FeatureCache (distill/feature_cache.cc), then Labels, Indices,
//     SampleShape, Read of a few rows from disk, Preload and Read again from memory.
// All of it goes through io/h5.cc and Debian's libhdf5. Each reader's mlfd::Error is caught;
// afterwards no HDF5 object may be left open.
//
// Resource bounds of the harness (not findings, and not silent: docs/fuzzing.md lists them):
// LoadCheckpoint is only called for small models (not joint -- a joint loads its teachers from
// paths named in the file --, width <= 0.125, embed_dim <= 256, at most 4096 classes), and image
// and feature reads only for at most 16 MiB of data.
#pragma once

#include <hdf5.h>
#include <torch/torch.h>

#include <algorithm>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <vector>

#include "data/clip_store.h"
#include "data/image_store.h"
#include "io/feature_cache.h"
#include "io/h5.h"
#include "models/checkpoint.h"
#include "util/error.h"

namespace mlfd_fuzz {

inline constexpr int64_t kMaxReadBytes = 16 << 20;

inline void AsImageStore(const std::string& path) {
  mlfd::ImageStore s = mlfd::ImageStore::Open(path);
  // What Open promises: a positive image size that matches /images (the loader allocates
  // batch x image_bytes()).
  auto shape = s.file().Info("images").shape;
  if (s.size() > 0 && (s.height() < 1 || s.width() < 1 || s.channels() < 1 ||
                       shape[1] != s.height() || shape[2] != s.width() || shape[3] != s.channels())) {
    std::fprintf(stderr, "fuzz: ImageStore::Open accepted /images %s as %d x %d x %d images\n",
                 mlfd::h5::ShapeStr(shape).c_str(), s.height(), s.width(), s.channels());
    __builtin_trap();
  }
  for (const auto& name : s.split_names()) {
    const auto& rows = s.split(name);
    std::vector<int64_t> idx(rows.begin(), rows.begin() + std::min<size_t>(rows.size(), 4));
    if (idx.empty() || s.image_bytes() * static_cast<int64_t>(idx.size()) > kMaxReadBytes) continue;
    std::vector<uint8_t> buf(static_cast<size_t>(s.image_bytes()) * idx.size());
    s.ReadIndices(idx, buf.data());
  }
}

inline void AsClipStore(const std::string& path) {
  mlfd::ClipStore s = mlfd::ClipStore::Open(path);
  // What Open promises: a positive clip size that matches /clips.
  auto shape = s.file().Info("clips").shape;
  if (s.size() > 0 && (s.frames() < 1 || s.height() < 1 || s.width() < 1 || s.channels() < 1 ||
                       shape[1] != s.frames() || shape[2] != s.height() || shape[3] != s.width() ||
                       shape[4] != s.channels())) {
    std::fprintf(stderr, "fuzz: ClipStore::Open accepted /clips %s as %d x %d x %d x %d clips\n",
                 mlfd::h5::ShapeStr(shape).c_str(), s.frames(), s.height(), s.width(), s.channels());
    __builtin_trap();
  }
  for (const auto& name : s.split_names()) {
    const auto& rows = s.split(name);
    std::vector<int64_t> idx(rows.rbegin(), rows.rbegin() + std::min<size_t>(rows.size(), 3));
    if (idx.empty() || s.clip_bytes() * static_cast<int64_t>(idx.size()) > kMaxReadBytes) continue;
    std::vector<uint8_t> buf(static_cast<size_t>(s.clip_bytes()) * idx.size());
    s.ReadIndices(idx, buf.data());  // descending: the reordering path
    s.FrameIndices(idx[0]);
  }
}

inline void AsCheckpoint(const std::string& path) {
  mlfd::CheckpointMeta meta;
  {
    mlfd::h5::File f = mlfd::h5::File::Open(path);
    meta = mlfd::ReadCheckpointMeta(f);
  }
  const mlfd::ModelConfig& m = meta.model;
  int64_t classes = 0;
  for (int k : m.head_classes) classes += k;
  if (m.arch == "joint" || m.width > 0.125 || m.embed_dim > 256 || classes > 4096) return;
  mlfd::LoadCheckpoint(path, /*with_train_state=*/true);
}

inline void AsFeatureCache(const std::string& path) {
  mlfd::FeatureCache fc(path);
  for (const auto& split : fc.splits()) {
    torch::Tensor labels = fc.Labels(split);
    torch::Tensor idx = fc.Indices(split);
    const int64_t n = idx.numel();
    auto levels = fc.levels();
    if (levels.size() > 4) levels.resize(4);
    for (const auto& level : levels) {
      auto shape = fc.SampleShape(split, level);
      int64_t bytes = 4;  // of one sample, as float32 (saturating: only compared with the bound)
      for (int64_t d : shape) bytes = d >= 0 && d <= kMaxReadBytes ? std::min(bytes * d, kMaxReadBytes + 1) : kMaxReadBytes + 1;
      if (n == 0 || bytes * std::min<int64_t>(n, 4) > kMaxReadBytes) continue;
      torch::Tensor rows = idx.flatten().narrow(0, 0, std::min<int64_t>(n, 4));
      fc.Read(split, level, rows);
      if ((bytes == 0 || n <= kMaxReadBytes / bytes) && fc.Preload(split, {level}, kMaxReadBytes))
        fc.Read(split, level, rows);
    }
  }
}

// Opens `path` as each kind; traps if a reader left an HDF5 object open. With MLFD_FUZZ_VERBOSE
// set, prints what each reader made of the file (for checking seeds).
inline void ReadAllKinds(const std::string& path) {
  static const bool verbose = std::getenv("MLFD_FUZZ_VERBOSE") != nullptr;
  auto attempt = [&](const char* kind, void (*reader)(const std::string&)) {
    try {
      reader(path);
      if (verbose) std::fprintf(stderr, "fuzz: %s: read\n", kind);
    } catch (const mlfd::Error& e) {
      if (verbose) std::fprintf(stderr, "fuzz: %s: Error: %s\n", kind, e.what());
    }
  };
  attempt("image store", AsImageStore);
  attempt("clip store", AsClipStore);
  attempt("checkpoint", AsCheckpoint);
  attempt("feature cache", AsFeatureCache);
  // Whatever a reader threw, every HDF5 object it opened must be closed again (RAII handles).
  // This is the leak check of the HDF5 targets: LeakSanitizer is off for them (fuzz/driver.py),
  // because libhdf5 leaks on its own error paths (e.g. a failed H5Fopen) where we hold no handle.
  // (One datatype stays open on purpose: io/h5.cc's float16 type, made once and kept.)
  const ssize_t open_ids =
      H5Fget_obj_count(H5F_OBJ_ALL, H5F_OBJ_FILE | H5F_OBJ_DATASET | H5F_OBJ_GROUP | H5F_OBJ_ATTR);
  const ssize_t open_types = H5Fget_obj_count(H5F_OBJ_ALL, H5F_OBJ_DATATYPE);
  if (open_ids != 0 || open_types > 1) {
    std::fprintf(stderr, "fuzz: %zd HDF5 object(s) and %zd datatype(s) left open after the readers returned:\n",
                 open_ids, open_types);
    std::vector<hid_t> ids(static_cast<size_t>(open_ids + open_types));
    H5Fget_obj_ids(H5F_OBJ_ALL, H5F_OBJ_ALL, ids.size(), ids.data());
    for (hid_t id : ids) {
      char name[256] = "";
      H5Iget_name(id, name, sizeof(name));
      std::fprintf(stderr, "  id %lld: type %d, name '%s'\n", static_cast<long long>(id),
                   static_cast<int>(H5Iget_type(id)), name);
    }
    __builtin_trap();
  }
}

}  // namespace mlfd_fuzz
