// Batches for training and evaluation: samples from one or several image stores (or clip stores),
// shuffled with a fresh seeded permutation every epoch, augmented with OpenCV in worker threads
// (each sample's randomness derives from (seed, epoch, position), so results do not depend on
// thread timing), normalised with each store's mean/std and assembled into float N x C x H x W
// tensors (clips: N x C x T x H x W, a temporal crop of T stored frames), with a bounded prefetch
// queue that keeps the training step fed.
#pragma once

#include <torch/types.h>

#include <condition_variable>
#include <cstdint>
#include <deque>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "data/augment.h"
#include "data/clip_store.h"
#include "data/image_store.h"

namespace mlfd {

struct Batch {
  torch::Tensor images;    // float32 N x C x H x W (clips: N x C x T x H x W), normalised
  torch::Tensor labels;    // int64 N: class index within the sample's own dataset
  torch::Tensor dataset;   // int64 N: which source (0..m-1) each sample comes from
  torch::Tensor indices;   // int64 N: row in that source's image store
  int64_t step = 0;        // batch number within the epoch
};

// One dataset's share of the batches: an image store, or (with `store` null) a clip store.
struct LoaderSource {
  std::shared_ptr<const ImageStore> store;
  std::vector<int64_t> indices;  // rows to draw from (e.g. the train split)
  int64_t batch_size = 64;       // samples of this source per batch
  // Normalisation to apply (per channel, [0,1] units); empty = the store's own mean/std. A model
  // applied to another dataset's images normalises them as it was trained.
  std::vector<double> mean, std;
  std::shared_ptr<const ClipStore> clips;  // a clip source (then `store` is null)
};

// The source of rows `rows` of an image store, or of a clip store, `batch_size` of them per batch,
// normalised with `mean`/`std` (empty: the store's own). One overload per store kind, so that code
// written for both (a template over the store type) names its source the same way.
inline LoaderSource MakeSource(std::shared_ptr<const ImageStore> store, std::vector<int64_t> rows, int64_t batch_size,
                               std::vector<double> mean = {}, std::vector<double> std = {}) {
  LoaderSource src;
  src.store = std::move(store);
  src.indices = std::move(rows);
  src.batch_size = batch_size;
  src.mean = std::move(mean);
  src.std = std::move(std);
  return src;
}
inline LoaderSource MakeSource(std::shared_ptr<const ClipStore> clips, std::vector<int64_t> rows, int64_t batch_size,
                               std::vector<double> mean = {}, std::vector<double> std = {}) {
  LoaderSource src = MakeSource(std::shared_ptr<const ImageStore>(), std::move(rows), batch_size, std::move(mean),
                                std::move(std));
  src.clips = std::move(clips);
  return src;
}

struct LoaderOptions {
  bool shuffle = true;
  bool drop_last = false;  // drop a final incomplete batch (training)
  AugmentConfig augment;   // augmentation (training) or just the resize (evaluation)
  bool train_augment = true;  // false: EvalTransform only
  uint64_t seed = 0;
  int workers = 2;         // threads assembling batches
  int prefetch = 4;        // batches ready ahead of the consumer
  bool cache_in_memory = true;  // read the needed rows of each store into memory once
  // Clip sources: frames per temporal crop (0 = all stored frames). Training draws a random crop
  // per clip (and one augmentation draw applied to all its frames); otherwise the crop is view
  // `clip_view` of `clip_views` uniformly spaced ones (TemporalCropStarts; 1 view = centred).
  int clip_frames = 0;
  int clip_views = 1, clip_view = 0;
  // Data-parallel shard (0 = none): this process draws, per source, PyTorch DistributedSampler's
  // share of a permutation seeded seed + epoch (dist::ShardOrder), `shard_world` processes in all.
  int shard_rank = 0, shard_world = 0;
};

// Steps per epoch = the longest source's batch count; shorter sources cycle through fresh
// permutations, so every step has samples of every source ("a batch from each dataset per step").
// Sharded (data parallel), every count is this process's share: ceil(n / shard_world) rows of
// each source, and a sample's augmentation draw depends on its position in the whole
// permutation, so N processes x batch B see exactly the images and views of one process x N*B.
class Loader {
 public:
  Loader(std::vector<LoaderSource> sources, LoaderOptions options);
  ~Loader();
  Loader(const Loader&) = delete;
  Loader& operator=(const Loader&) = delete;

  int64_t steps_per_epoch() const { return steps_; }
  int64_t samples_per_epoch() const;
  // Starts producing the batches of `epoch` (0-based); an unfinished previous epoch is abandoned.
  void StartEpoch(int64_t epoch);
  // Next batch of the current epoch; false at its end. Rethrows a worker's error.
  bool Next(Batch* batch);
  int channels() const { return channels_; }
  int out_size() const { return out_h_; }
  int frames() const { return frames_; }  // frames per clip in a batch; 0 for image sources

 private:
  struct Plan;  // per-epoch sample order
  int64_t SourceRows(size_t s) const;  // rows of source s this process draws per cycle
  void Stop();
  void Work(int worker, std::shared_ptr<Plan> plan);
  Batch Assemble(const Plan& plan, int64_t step) const;
  // Sample `row` of source s (an image, or a clip's T frames), from the cache or read into *buf.
  const uint8_t* Sample(size_t s, int64_t row, std::vector<uint8_t>* buf) const;
  // What every source has, whether image or clip store.
  template <class F>
  decltype(auto) Visit(size_t s, F f) const {
    return sources_[s].clips ? f(*sources_[s].clips) : f(*sources_[s].store);
  }
  const std::string& Path(size_t s) const;
  int64_t SampleBytes(size_t s) const;

  std::vector<LoaderSource> sources_;
  LoaderOptions opts_;
  int64_t steps_ = 0;
  int channels_ = 0, out_h_ = 0, out_w_ = 0, frames_ = 0;
  std::vector<std::vector<uint8_t>> cache_;        // per source: cached rows
  std::vector<std::vector<int64_t>> cache_slot_;   // per source: row -> slot in cache (-1 absent; empty: not cached)
  mutable std::mutex read_mutex_;                  // HDF5 reads are not thread-safe

  std::vector<std::thread> threads_;
  std::mutex mutex_;
  std::condition_variable cv_;
  std::map<int64_t, Batch> ready_;
  std::exception_ptr error_;
  int64_t next_step_ = 0;     // next step the consumer takes
  int64_t next_to_make_ = 0;  // next step a worker claims
  bool stop_ = false;
  std::shared_ptr<Plan> plan_;
};

}  // namespace mlfd
