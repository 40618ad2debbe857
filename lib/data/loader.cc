// Loader implementation: per-epoch plans, worker threads, in-order delivery with bounded prefetch.
#include "data/loader.h"

#include <torch/torch.h>

#include <algorithm>
#include <mutex>
#include <random>
#include <thread>

#include "dist/dist.h"
#include "util/error.h"
#include "util/log.h"
#include "util/parallel.h"

namespace mlfd {

namespace {
uint64_t Mix(uint64_t x) {  // splitmix64 finaliser: decorrelates nearby seeds
  x += 0x9e3779b97f4a7c15ULL;
  x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ULL;
  x = (x ^ (x >> 27)) * 0x94d049bb133111ebULL;
  return x ^ (x >> 31);
}
uint64_t Seed(uint64_t a, uint64_t b, uint64_t c, uint64_t d) {
  return Mix(Mix(Mix(Mix(a) ^ b) ^ c) ^ d);
}
// Clip stores are cached in memory only up to this size (a video dataset rarely fits).
constexpr int64_t kClipCacheBytes = int64_t{2} << 30;
}  // namespace

struct Loader::Plan {
  int64_t epoch = 0;
  // A drawn sample's position in the whole epoch's sequence of its source is offset + stride x its
  // position here (sharded: rank + world x position; else the position itself).
  int64_t offset = 0, stride = 1;
  // Per source: the rows in the order they are drawn, and where each batch's slice starts.
  std::vector<std::vector<int64_t>> order;
  std::vector<std::vector<int64_t>> begin;  // [source][step] -> offset; size steps + 1
};

Loader::Loader(std::vector<LoaderSource> sources, LoaderOptions options)
    : sources_(std::move(sources)), opts_(std::move(options)) {
  if (sources_.empty()) throw Error("loader: no data sources");
  for (const auto& src : sources_)
    if (!src.store == !src.clips) throw Error("internal: a loader source needs one image store or one clip store");
  if (opts_.shard_world < 0 || (opts_.shard_world > 0 && (opts_.shard_rank < 0 || opts_.shard_rank >= opts_.shard_world)))
    throw Error(Msg("internal: loader shard ", opts_.shard_rank, " of ", opts_.shard_world));
  // A batch larger than what it is drawn from would hold some images twice: bounded by the rows,
  // with a warning (each image then appears once per batch).
  if (opts_.drop_last || sources_.size() > 1) {
    for (size_t s = 0; s < sources_.size(); ++s) {
      auto& src = sources_[s];
      const int64_t n = SourceRows(s);  // this process's share when sharded
      if (n > 0 && src.batch_size > n) {
        MLOG(WARNING) << Path(s) << ": a batch of " << src.batch_size << " images from its " << n
                      << " would repeat images; using batches of " << n << " (lower --batch-size to silence this)";
        src.batch_size = n;
      }
    }
  }
  opts_.workers = BoundByCores("--workers", opts_.workers);
  for (size_t s = 0; s < sources_.size(); ++s) {
    const auto& src = sources_[s];
    if (src.indices.empty()) throw Error(Msg(Path(s), ": no samples to load"));
    if (src.batch_size < 1) throw Error("loader: batch size must be >= 1");
    const int sc = Visit(s, [](const auto& st) { return st.channels(); });
    int oh = opts_.augment.out_size > 0 ? opts_.augment.out_size : Visit(s, [](const auto& st) { return st.height(); });
    int ow = opts_.augment.out_size > 0 ? opts_.augment.out_size : Visit(s, [](const auto& st) { return st.width(); });
    int t = 0;
    if (src.clips) {
      const int stored = src.clips->frames();
      t = opts_.clip_frames > 0 ? opts_.clip_frames : stored;
      if (t > stored)
        throw Error(Msg(Path(s), ": clips of ", stored, " frames, fewer than the ", t, " frames asked for"));
      if (opts_.clip_views < 1 || opts_.clip_view < 0 || opts_.clip_view >= opts_.clip_views)
        throw Error(Msg("internal: temporal view ", opts_.clip_view, " of ", opts_.clip_views));
    }
    if (s == 0) {
      channels_ = sc;
      out_h_ = oh;
      out_w_ = ow;
      frames_ = t;
    } else if ((!src.clips) != (!sources_[0].clips)) {
      throw Error(Msg(Path(s), " and ", Path(0), ": one loader reads either image stores or clip stores"));
    } else if (sc != channels_ || oh != out_h_ || ow != out_w_ || t != frames_) {
      throw Error(Msg(Path(s), ": samples are ", t > 0 ? Msg(t, "x") : "", oh, "x", ow, "x", sc,
                      " after resizing but ", Path(0), " gives ", frames_ > 0 ? Msg(frames_, "x") : "", out_h_,
                      "x", out_w_, "x", channels_, "; set the same --size for all datasets"));
    }
    if ((!src.mean.empty() && static_cast<int>(src.mean.size()) != sc) ||
        (!src.std.empty() && static_cast<int>(src.std.size()) != sc))
      throw Error(Msg(Path(s), ": normalisation needs ", sc, " values per channel"));
    int64_t n = SourceRows(s);
    // With drop_last, a source smaller than one batch still gives one (cycled) batch.
    int64_t st = opts_.drop_last ? std::max<int64_t>(1, n / src.batch_size)
                                 : (n + src.batch_size - 1) / src.batch_size;
    steps_ = std::max(steps_, st);
  }
  if (opts_.drop_last) {  // say what is left out: a user counting images should not be surprised
    for (size_t s = 0; s < sources_.size(); ++s) {
      const auto& src = sources_[s];
      int64_t n = SourceRows(s);
      if (n < src.batch_size || n / src.batch_size != steps_ || n % src.batch_size == 0) continue;
      MLOG(INFO) << Path(s) << ": " << steps_ * src.batch_size << " of " << n
                 << " training images are used per epoch (" << steps_ << " full batches of " << src.batch_size
                 << "; the other " << n % src.batch_size
                 << " are left out, a different draw each epoch; --keep-last-batch trains on them too)";
    }
  }
  cache_.resize(sources_.size());
  cache_slot_.resize(sources_.size());
  if (opts_.cache_in_memory) {
    for (size_t s = 0; s < sources_.size(); ++s) {
      const auto& src = sources_[s];
      std::vector<int64_t> rows = src.indices;
      std::sort(rows.begin(), rows.end());
      rows.erase(std::unique(rows.begin(), rows.end()), rows.end());
      const int64_t bytes = static_cast<int64_t>(rows.size()) * SampleBytes(s);
      if (src.clips && bytes > kClipCacheBytes) {
        MLOG(INFO) << Path(s) << ": " << rows.size() << " clips (" << bytes / (1 << 20)
                   << " MiB) are read from disk per batch, not cached in memory";
        continue;
      }
      std::vector<uint8_t> data(static_cast<size_t>(bytes));
      Visit(s, [&](const auto& st) { st.ReadIndices(rows, data.data()); return 0; });
      std::vector<int64_t> slot(static_cast<size_t>(Visit(s, [](const auto& st) { return st.size(); })), -1);
      for (size_t i = 0; i < rows.size(); ++i) slot[static_cast<size_t>(rows[i])] = static_cast<int64_t>(i);
      cache_[s] = std::move(data);
      cache_slot_[s] = std::move(slot);
    }
  }
}

const std::string& Loader::Path(size_t s) const {
  return sources_[s].clips ? sources_[s].clips->path() : sources_[s].store->path();
}

int64_t Loader::SampleBytes(size_t s) const {
  return sources_[s].clips ? sources_[s].clips->clip_bytes() : sources_[s].store->image_bytes();
}

Loader::~Loader() { Stop(); }

int64_t Loader::SourceRows(size_t s) const {
  const int64_t n = static_cast<int64_t>(sources_[s].indices.size());
  return opts_.shard_world > 0 ? (n + opts_.shard_world - 1) / opts_.shard_world : n;
}

int64_t Loader::samples_per_epoch() const {
  auto plan_len = [&](size_t s) {
    const auto& src = sources_[s];
    int64_t n = SourceRows(s);
    int64_t own = (n + src.batch_size - 1) / src.batch_size;
    if (own == steps_ && !opts_.drop_last) return n;
    return steps_ * src.batch_size;
  };
  int64_t total = 0;
  for (size_t s = 0; s < sources_.size(); ++s) total += plan_len(s);
  return total;
}

void Loader::Stop() {
  {
    std::lock_guard<std::mutex> lock(mutex_);
    stop_ = true;
  }
  cv_.notify_all();
  for (auto& t : threads_) t.join();
  threads_.clear();
}

void Loader::StartEpoch(int64_t epoch) {
  Stop();
  auto plan = std::make_shared<Plan>();
  plan->epoch = epoch;
  const bool sharded = opts_.shard_world > 0;
  if (sharded) {
    plan->offset = opts_.shard_rank;
    plan->stride = opts_.shard_world;
  }
  for (size_t s = 0; s < sources_.size(); ++s) {
    const auto& src = sources_[s];
    int64_t n = SourceRows(s);
    int64_t own = (n + src.batch_size - 1) / src.batch_size;
    // The longest source without drop_last ends on a partial batch; the others cycle to fill
    // every step with a full share.
    int64_t need = (own == steps_ && !opts_.drop_last) ? n : steps_ * src.batch_size;
    std::vector<int64_t> order;
    order.reserve(static_cast<size_t>(need));
    for (uint64_t cycle = 0; static_cast<int64_t>(order.size()) < need; ++cycle) {
      std::vector<int64_t> perm;
      if (sharded) {
        // DistributedSampler(seed = seed).set_epoch(epoch); a source cycled within the epoch draws
        // its next permutations with the seed advanced by 1,000,003 per cycle.
        const uint64_t seed = opts_.seed + static_cast<uint64_t>(epoch) + cycle * 1000003ULL;
        for (int64_t i : dist::ShardOrder(static_cast<int64_t>(src.indices.size()), seed, opts_.shard_rank,
                                          opts_.shard_world, opts_.shuffle))
          perm.push_back(src.indices[static_cast<size_t>(i)]);
      } else {
        perm = src.indices;
        if (opts_.shuffle) {
          std::mt19937_64 rng(Seed(opts_.seed, static_cast<uint64_t>(epoch), s, cycle));
          for (size_t i = perm.size(); i > 1; --i) std::swap(perm[i - 1], perm[rng() % i]);
        }
      }
      for (int64_t r : perm) {
        if (static_cast<int64_t>(order.size()) == need) break;
        order.push_back(r);
      }
    }
    std::vector<int64_t> begin(static_cast<size_t>(steps_ + 1));
    for (int64_t k = 0; k <= steps_; ++k) begin[static_cast<size_t>(k)] = std::min(need, k * src.batch_size);
    plan->order.push_back(std::move(order));
    plan->begin.push_back(std::move(begin));
  }
  {
    std::lock_guard<std::mutex> lock(mutex_);
    stop_ = false;
    ready_.clear();
    error_ = nullptr;
    next_step_ = 0;
    next_to_make_ = 0;
    plan_ = plan;
  }
  int workers = std::max(1, opts_.workers);
  for (int w = 0; w < workers; ++w) threads_.emplace_back([this, w, plan] { Work(w, plan); });
}

void Loader::Work(int /*worker*/, std::shared_ptr<Plan> plan) {
  while (true) {
    int64_t step;
    {
      std::unique_lock<std::mutex> lock(mutex_);
      cv_.wait(lock, [&] {
        return stop_ || next_to_make_ >= steps_ || next_to_make_ < next_step_ + std::max(1, opts_.prefetch);
      });
      if (stop_ || next_to_make_ >= steps_) return;
      step = next_to_make_++;
    }
    try {
      Batch b = Assemble(*plan, step);
      std::lock_guard<std::mutex> lock(mutex_);
      ready_[step] = std::move(b);
    } catch (...) {
      std::lock_guard<std::mutex> lock(mutex_);
      if (!error_) error_ = std::current_exception();
      stop_ = true;
    }
    cv_.notify_all();
  }
}

bool Loader::Next(Batch* batch) {
  std::unique_lock<std::mutex> lock(mutex_);
  if (!plan_) throw Error("loader: StartEpoch() was not called");
  if (next_step_ >= steps_) return false;
  cv_.wait(lock, [&] { return error_ || ready_.count(next_step_) > 0; });
  if (error_) std::rethrow_exception(error_);
  auto it = ready_.find(next_step_);
  *batch = std::move(it->second);
  ready_.erase(it);
  ++next_step_;
  lock.unlock();
  cv_.notify_all();
  return true;
}

const uint8_t* Loader::Sample(size_t s, int64_t row, std::vector<uint8_t>* buf) const {
  if (!cache_slot_[s].empty())
    return cache_[s].data() + cache_slot_[s][static_cast<size_t>(row)] * SampleBytes(s);
  buf->resize(static_cast<size_t>(SampleBytes(s)));
  std::lock_guard<std::mutex> lock(read_mutex_);
  Visit(s, [&](const auto& st) { st.ReadRows(row, 1, buf->data()); return 0; });
  return buf->data();
}

Batch Loader::Assemble(const Plan& plan, int64_t step) const {
  int64_t n = 0;
  for (size_t s = 0; s < sources_.size(); ++s)
    n += plan.begin[s][static_cast<size_t>(step + 1)] - plan.begin[s][static_cast<size_t>(step)];
  const int C = channels_, H = out_h_, W = out_w_;
  const int F = std::max(1, frames_);  // frames per sample in the batch
  torch::Tensor images = frames_ > 0 ? torch::empty({n, C, F, H, W}, torch::kFloat32)
                                     : torch::empty({n, C, H, W}, torch::kFloat32);
  torch::Tensor labels = torch::empty({n}, torch::kInt64);
  torch::Tensor dataset = torch::empty({n}, torch::kInt64);
  torch::Tensor indices = torch::empty({n}, torch::kInt64);
  float* px = images.data_ptr<float>();
  int64_t* lab = labels.data_ptr<int64_t>();
  int64_t* ds = dataset.data_ptr<int64_t>();
  int64_t* idx = indices.data_ptr<int64_t>();
  int64_t k = 0;
  std::vector<uint8_t> buf;
  for (size_t s = 0; s < sources_.size(); ++s) {
    const auto& src_info = sources_[s];
    const auto& mean = !src_info.mean.empty() ? src_info.mean : Visit(s, [](const auto& st) -> const std::vector<double>& { return st.mean(); });
    const auto& stdv = !src_info.std.empty() ? src_info.std : Visit(s, [](const auto& st) -> const std::vector<double>& { return st.std(); });
    const auto& store_labels = Visit(s, [](const auto& st) -> const std::vector<int64_t>& { return st.labels(); });
    const int sh = Visit(s, [](const auto& st) { return st.height(); });
    const int sw = Visit(s, [](const auto& st) { return st.width(); });
    const int type = CV_8UC(C);
    std::vector<float> scale(static_cast<size_t>(C)), shift(static_cast<size_t>(C));
    for (int c = 0; c < C; ++c) {  // (x/255 - mean)/std = x*scale + shift
      scale[static_cast<size_t>(c)] = static_cast<float>(1.0 / (255.0 * stdv[static_cast<size_t>(c)]));
      shift[static_cast<size_t>(c)] = static_cast<float>(-mean[static_cast<size_t>(c)] / stdv[static_cast<size_t>(c)]);
    }
    for (int64_t p = plan.begin[s][static_cast<size_t>(step)]; p < plan.begin[s][static_cast<size_t>(step + 1)]; ++p, ++k) {
      int64_t row = plan.order[s][static_cast<size_t>(p)];
      const uint8_t* data = Sample(s, row, &buf);
      // One stored frame (an image is a clip of one frame): a view, no copy.
      auto frame = [&](int f) {
        return cv::Mat(sh, sw, type, const_cast<uint8_t*>(data) + static_cast<int64_t>(f) * sh * sw * C);
      };
      std::vector<cv::Mat> in, out;
      std::mt19937_64 rng(Seed(opts_.seed ^ 0x5bd1e995ULL, static_cast<uint64_t>(plan.epoch), s,
                               static_cast<uint64_t>(plan.offset + plan.stride * p)));
      int start = 0;
      if (frames_ > 0) {
        const int stored = src_info.clips->frames();
        start = opts_.train_augment ? RandomTemporalStart(stored, F, rng)
                                    : TemporalCropStarts(stored, F, opts_.clip_views)[static_cast<size_t>(opts_.clip_view)];
      }
      for (int f = 0; f < F; ++f) in.push_back(frame(start + f));
      if (opts_.train_augment) {
        out = AugmentClip(in, opts_.augment, rng);
      } else {
        for (const auto& m : in) out.push_back(EvalTransform(m, opts_.augment));
      }
      for (int f = 0; f < F; ++f) {
        const cv::Mat& o = out[static_cast<size_t>(f)];
        if (o.rows != H || o.cols != W || o.channels() != C)
          throw Error(Msg("loader: transform produced ", o.cols, "x", o.rows, "x", o.channels(),
                          ", expected ", W, "x", H, "x", C));
        // Layout C x F x H x W (F = 1: C x H x W).
        float* dst = px + k * C * F * H * W + static_cast<int64_t>(f) * H * W;
        const uint8_t* from = o.ptr<uint8_t>();
        for (int y = 0; y < H; ++y)
          for (int x = 0; x < W; ++x)
            for (int c = 0; c < C; ++c)
              dst[(static_cast<int64_t>(c) * F * H + y) * W + x] =
                  from[(y * W + x) * C + c] * scale[static_cast<size_t>(c)] + shift[static_cast<size_t>(c)];
      }
      lab[k] = store_labels[static_cast<size_t>(row)];
      ds[k] = static_cast<int64_t>(s);
      idx[k] = row;
    }
  }
  Batch b;
  b.images = images;
  b.labels = labels;
  b.dataset = dataset;
  b.indices = indices;
  b.step = step;
  return b;
}

}  // namespace mlfd
