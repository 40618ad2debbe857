// Training and evaluating video networks on clip stores: one augmentation draw per clip applied
// to every frame, the temporal crops of training and evaluation, the loader's N x C x T x H x W
// batches, and train_teacher + evaluate --clips end to end on moving sprites (a tiny synthetic
// action dataset whose class is the motion, left or right).
#include <catch2/catch.hpp>
#include <filesystem>
#include <nlohmann/json.hpp>
#include <opencv2/imgproc.hpp>
#include <random>

#include "data/augment.h"
#include "data/clip_store.h"
#include "data/loader.h"
#include "eval/metrics.h"
#include "models/model.h"
#include "test_util.h"
#include "util/error.h"

using namespace mlfd;
using mlfd_test::MakeSpriteClips;
using mlfd_test::RunTool;
using mlfd_test::TempDir;
using mlfd_test::MakeSpriteClips;
namespace fs = std::filesystem;

namespace {

// `n` different random 20 x 20 gray frames.
std::vector<cv::Mat> RandomFrames(int n, unsigned seed, int channels = 1) {
  std::vector<cv::Mat> frames;
  cv::RNG rng(seed);
  for (int i = 0; i < n; ++i) {
    cv::Mat f(20, 20, channels == 1 ? CV_8UC1 : CV_8UC3);
    rng.fill(f, cv::RNG::UNIFORM, 0, 256);
    frames.push_back(f);
  }
  return frames;
}

}  // namespace

TEST_CASE("clip augmentation: one draw per clip applied identically to every frame", "[unit][video]") {
  AugmentConfig cfg;
  cfg.pad = 3;
  cfg.random_resized_crop = true;
  cfg.rrc_scale_min = 0.3;
  cfg.out_size = 16;
  cfg.hflip = true;
  for (int channels : {1, 3}) {
    const auto frames = RandomFrames(5, 7, channels);
    int differ_from_eval = 0, differ_between_seeds = 0;
    for (uint64_t seed = 0; seed < 12; ++seed) {
      std::mt19937_64 rng(seed);
      const auto out = AugmentClip(frames, cfg, rng);
      REQUIRE(out.size() == frames.size());
      for (size_t f = 0; f < frames.size(); ++f) {
        // Frame f gets exactly the transform a lone image gets from the clip's rng state.
        std::mt19937_64 same(seed);
        cv::Mat alone = Augment(frames[f], cfg, same);
        REQUIRE(out[f].size() == cv::Size(16, 16));
        CHECK(cv::norm(out[f], alone, cv::NORM_INF) == 0);
      }
      // A clip of one frame repeated stays a clip of one frame repeated.
      std::vector<cv::Mat> still(4, frames[0]);
      std::mt19937_64 r2(seed);
      const auto s = AugmentClip(still, cfg, r2);
      for (size_t f = 1; f < s.size(); ++f) CHECK(cv::norm(s[f], s[0], cv::NORM_INF) == 0);
      if (cv::norm(out[0], EvalTransform(frames[0], cfg), cv::NORM_INF) > 0) ++differ_from_eval;
      std::mt19937_64 other(seed + 100);
      if (cv::norm(AugmentClip(frames, cfg, other)[0], out[0], cv::NORM_INF) > 0) ++differ_between_seeds;
    }
    CHECK(differ_from_eval >= 10);  // the augmentation is active
    CHECK(differ_between_seeds >= 10);
  }
}

TEST_CASE("evaluation crops: --crops 3 and 5 cut the 8/7 resize at fixed positions", "[unit][video]") {
  // Origins (x, y) of a side-8 square: 3 along the longer side (the diagonal of a square), 5 the
  // centre and the four corners.
  using P = std::pair<int, int>;
  CHECK(EvalCropOrigin(10, 10, 8, 3, 0) == P{0, 0});
  CHECK(EvalCropOrigin(10, 10, 8, 3, 1) == P{1, 1});
  CHECK(EvalCropOrigin(10, 10, 8, 3, 2) == P{2, 2});
  CHECK(EvalCropOrigin(12, 8, 8, 3, 1) == P{2, 0});
  CHECK(EvalCropOrigin(12, 8, 8, 3, 2) == P{4, 0});
  CHECK(EvalCropOrigin(8, 13, 8, 3, 2) == P{0, 5});
  CHECK(EvalCropOrigin(10, 12, 8, 5, 0) == P{1, 2});
  CHECK(EvalCropOrigin(10, 12, 8, 5, 4) == P{2, 4});
  CHECK(EvalCropOrigin(10, 12, 8, 1, 0) == P{1, 2});
  CHECK_THROWS(EvalCropOrigin(10, 12, 8, 3, 3));
  CHECK_THROWS(EvalCropOrigin(10, 12, 8, 4, 0));
  CHECK_THROWS(EvalCropOrigin(7, 12, 8, 3, 0));
  // A 14 x 14 ramp evaluated at 14 px: resized to 16 x 16, cut at (0,0), (1,1), (2,2).
  cv::Mat img(14, 14, CV_8UC1);
  for (int y = 0; y < 14; ++y)
    for (int x = 0; x < 14; ++x) img.at<uint8_t>(y, x) = static_cast<uint8_t>(10 * x + y);
  cv::Mat big;
  cv::resize(img, big, cv::Size(16, 16), 0, 0, cv::INTER_LINEAR);
  AugmentConfig cfg;
  cfg.out_size = 14;
  cfg.eval_crops = 3;
  for (int k = 0; k < 3; ++k) {
    cfg.eval_crop = k;
    cv::Mat out = EvalTransform(img, cfg);
    REQUIRE(out.size() == cv::Size(14, 14));
    CHECK(cv::norm(out, big(cv::Rect(k, k, 14, 14)), cv::NORM_INF) == 0);
  }
  cfg.eval_crop = 0;
  cv::Mat first = EvalTransform(img, cfg);
  cfg.eval_crop = 2;
  CHECK(cv::norm(first, EvalTransform(img, cfg), cv::NORM_INF) > 10);  // the crops differ
  cfg.eval_crops = 1;  // one crop: the plain resize, unchanged
  CHECK(cv::norm(EvalTransform(img, cfg), img, cv::NORM_INF) == 0);
}

TEST_CASE("temporal crops: random starts within bounds and --clips views uniformly spaced", "[unit][video]") {
  // Evaluation: centred, then k views from the first to the last possible start.
  CHECK(TemporalCropStarts(16, 8, 1) == std::vector<int>{4});
  CHECK(TemporalCropStarts(16, 16, 1) == std::vector<int>{0});
  CHECK(TemporalCropStarts(17, 8, 1) == std::vector<int>{4});
  CHECK(TemporalCropStarts(16, 8, 2) == std::vector<int>{0, 8});
  CHECK(TemporalCropStarts(16, 8, 3) == std::vector<int>{0, 4, 8});
  CHECK(TemporalCropStarts(16, 4, 4) == std::vector<int>{0, 4, 8, 12});
  CHECK(TemporalCropStarts(10, 4, 4) == std::vector<int>{0, 2, 4, 6});
  CHECK(TemporalCropStarts(8, 8, 3) == std::vector<int>{0, 0, 0});
  CHECK_THROWS(TemporalCropStarts(8, 9, 1));
  CHECK_THROWS(TemporalCropStarts(8, 0, 1));
  // Training: every start in 0..stored - frames is drawn, nothing outside.
  std::mt19937_64 rng(5);
  std::vector<int> seen(6, 0);
  for (int i = 0; i < 600; ++i) {
    int s = RandomTemporalStart(12, 7, rng);
    REQUIRE(s >= 0);
    REQUIRE(s <= 5);
    ++seen[static_cast<size_t>(s)];
  }
  for (int c : seen) CHECK(c > 50);
  CHECK(RandomTemporalStart(7, 7, rng) == 0);
  CHECK_THROWS(RandomTemporalStart(6, 7, rng));
}

TEST_CASE("clip loader: N x C x T x H x W batches of temporal crops and sharding equal to one process",
          "[stage][video]") {
  TempDir tmp;
  const std::string path = MakeSpriteClips(tmp, 6, "3,2,2");
  auto store = std::make_shared<const ClipStore>(ClipStore::Open(path));
  REQUIRE(store->frames() == 6);
  const auto& train = store->split("train");
  REQUIRE(train.size() == 6);
  LoaderSource src;
  src.clips = store;
  src.indices = train;
  src.batch_size = 6;
  LoaderOptions lo;
  lo.clip_frames = 4;
  lo.augment.pad = 2;
  lo.augment.hflip = true;
  lo.seed = 9;
  lo.workers = 1;
  Loader loader({src}, lo);
  CHECK(loader.frames() == 4);
  loader.StartEpoch(0);
  Batch b;
  REQUIRE(loader.Next(&b));
  REQUIRE(b.images.sizes() == torch::IntArrayRef({6, 1, 4, 24, 24}));
  // Normalised with the store's mean/std: un-normalised values are bytes.
  torch::Tensor bytes = (b.images * store->std()[0] + store->mean()[0]) * 255.0;
  CHECK((bytes - bytes.round()).abs().max().item<double>() < 1e-3);
  CHECK(bytes.min().item<double>() > -0.5);
  CHECK(bytes.max().item<double>() < 255.5);

  // Without augmentation each crop is the stored frames start..start+3, start = view's start.
  std::vector<uint8_t> raw(static_cast<size_t>(store->clip_bytes()));
  for (int view = 0; view < 3; ++view) {
    LoaderOptions eo;
    eo.shuffle = false;
    eo.train_augment = false;
    eo.clip_frames = 4;
    eo.clip_views = 3;
    eo.clip_view = view;
    eo.workers = 1;
    Loader ev({src}, eo);
    ev.StartEpoch(0);
    Batch e;
    REQUIRE(ev.Next(&e));
    const int start = TemporalCropStarts(6, 4, 3)[static_cast<size_t>(view)];
    CHECK(start == view);
    for (int64_t i = 0; i < e.images.size(0); ++i) {
      store->ReadRows(train[static_cast<size_t>(i)], 1, raw.data());
      torch::Tensor want = torch::from_blob(raw.data(), {6, 24, 24}, torch::kUInt8)
                               .narrow(0, start, 4)
                               .to(torch::kFloat32);
      torch::Tensor got = ((e.images[i][0] * store->std()[0] + store->mean()[0]) * 255.0).round();
      CHECK(torch::equal(got, want));
    }
  }

  // Two shards of batch 3 see exactly the clips, temporal crops and augmentations of one process of
  // batch 6 (world 1): rank r's batch holds positions r, r + 2, ... of the same permutation.
  auto sharded = [&](int rank, int world, int64_t batch) {
    LoaderOptions so = lo;
    so.shard_rank = rank;
    so.shard_world = world;
    LoaderSource part = src;
    part.batch_size = batch;
    return std::make_unique<Loader>(std::vector<LoaderSource>{part}, so);
  };
  auto one = sharded(0, 1, 6), r0 = sharded(0, 2, 3), r1 = sharded(1, 2, 3);
  for (int64_t epoch : {0, 1}) {
    one->StartEpoch(epoch);
    r0->StartEpoch(epoch);
    r1->StartEpoch(epoch);
    Batch a, b0, b1;
    REQUIRE(one->Next(&a));
    REQUIRE(r0->Next(&b0));
    REQUIRE(r1->Next(&b1));
    REQUIRE(a.images.size(0) == 6);
    for (int64_t i = 0; i < 6; ++i) {
      const Batch& from = i % 2 == 0 ? b0 : b1;
      CHECK(a.indices[i].item<int64_t>() == from.indices[i / 2].item<int64_t>());
      CHECK(torch::equal(a.images[i], from.images[i / 2]));
    }
  }
}

TEST_CASE("evaluation on clips: the logits are the mean over every temporal view and spatial crop", "[stage][video]") {
  TempDir tmp;
  const std::string path = MakeSpriteClips(tmp, 8, "3,2,3");
  auto store = std::make_shared<const ClipStore>(ClipStore::Open(path));
  ModelConfig c;
  c.arch = "r3d_18";
  c.in_channels = 1;
  c.small_stem = true;
  c.width = 0.125;
  c.embed_dim = 0;
  c.head_classes = {2};
  torch::manual_seed(3);
  Net net = BuildModel(c);
  net->eval();
  HeadInfo info;
  info.dataset = "sprites";
  info.class_names = store->class_names();
  info.mean = store->mean();
  info.std = store->std();
  info.frames = 5;  // 8 stored frames: the views start at different frames
  const auto& test = store->split("test");
  AugmentConfig eval;
  Predictions p = Predict(net, info, store, test, eval, torch::kCPU, 4, 1, /*views=*/2, /*crops=*/3);
  REQUIRE(p.logits.sizes() == torch::IntArrayRef({static_cast<int64_t>(test.size()), 2}));
  // The same six views by hand: every (temporal view, spatial crop) through the loader, then the mean.
  const LoaderSource src = MakeSource(store, test, 4);  // the store's own mean/std, as info's
  torch::Tensor sum;
  std::vector<torch::Tensor> each;
  torch::NoGradGuard no_grad;
  for (int v = 0; v < 2; ++v)
    for (int k = 0; k < 3; ++k) {
      LoaderOptions lo;
      lo.shuffle = false;
      lo.train_augment = false;
      lo.workers = 1;
      lo.clip_frames = 5;
      lo.clip_views = 2;
      lo.clip_view = v;
      lo.augment.eval_crops = 3;
      lo.augment.eval_crop = k;
      Loader loader({src}, lo);
      loader.StartEpoch(0);
      std::vector<torch::Tensor> z;
      Batch b;
      while (loader.Next(&b)) z.push_back(net->forward(b.images, 0));
      each.push_back(torch::cat(z));
      sum = sum.defined() ? sum + each.back() : each.back();
    }
  CHECK((p.logits - sum / 6.0).abs().max().item<double>() < 1e-5);
  // Not a degenerate check: the views differ from one another.
  CHECK((each[0] - each[5]).abs().max().item<double>() > 1e-3);
  CHECK((each[0] - each[1]).abs().max().item<double>() > 1e-3);
}

TEST_CASE("train_teacher and evaluate on moving sprites with r3d_18 and --clips 2", "[stage][video]") {
  TempDir tmp;
  const std::string store = MakeSpriteClips(tmp, 8, "16,6,8");
  const std::string ck = tmp / "teacher.h5";
  auto r = RunTool("train_teacher",
                   "-v 0 --arch r3d_18 --small-stem --width 0.125 --embed-dim 0 --epochs 6 --batch-size 8 "
                   "--optimizer adam --lr 0.003 --weight-decay 0 --clip-frames 6 --pad 1 --seed 1 --threads 2 --out " +
                       ck + " " + store);
  INFO(r.err);
  REQUIRE(r.exit_code == 0);
  auto j = nlohmann::json::parse(r.out);
  CHECK(j["epochs_run"] == 6);
  CHECK(j["best_val_top1"].get<double>() >= 0.0);

  auto e = RunTool("evaluate", "-v 0 --clips 2 --out " + (tmp / "eval.json") + " " + ck + " " + store);
  INFO(e.err);
  REQUIRE(e.exit_code == 0);
  auto m = nlohmann::json::parse(mlfd_test::ReadText(tmp / "eval.json"));
  CHECK(m["arch"] == "r3d_18");
  CHECK(m["frames"] == 6);
  CHECK(m["clips"] == 2);
  CHECK(m["metrics"]["count"] == 16);  // 8 test clips per motion
  // Left vs right: chance is 0.5; the motion is learnt within a few epochs.
  CHECK(m["metrics"]["top1"].get<double>() >= 0.8);
  // The centred crop alone agrees in kind (one crop, the same checkpoint).
  auto c1 = RunTool("evaluate", "-v 0 " + ck + " " + store);
  REQUIRE(c1.exit_code == 0);
  CHECK(nlohmann::json::parse(c1.out)["clips"] == 1);
  CHECK_FALSE(nlohmann::json::parse(c1.out).contains("crops"));
  // Multi-crop testing: 2 temporal x 3 spatial crops per video, every video scored once.
  auto c6 = RunTool("evaluate", "-v 0 --clips 2 --crops 3 " + ck + " " + store);
  INFO(c6.err);
  REQUIRE(c6.exit_code == 0);
  auto m6 = nlohmann::json::parse(c6.out);
  CHECK(m6["crops"] == 3);
  CHECK(m6["clips"] == 2);
  CHECK(m6["metrics"]["count"] == 16);
  CHECK(m6["metrics"]["top1"].get<double>() >= 0.75);  // the motion survives a 7/8 crop of 8/7 frames
  auto c2 = RunTool("evaluate", "-v 0 --crops 2 " + ck + " " + store);
  CHECK(c2.exit_code == 2);
  CHECK_THAT(c2.err, Catch::Contains("--crops"));

  // Kinds of store and network must match, with one line each.
  const std::string images = tmp / "src_sprites.h5";
  auto bad = RunTool("train_teacher", "-v 0 --arch r3d_18 --epochs 1 --out " + (tmp / "x.h5") + " " + images);
  CHECK(bad.exit_code == 1);
  CHECK_THAT(bad.err, Catch::Contains("is an image store, but r3d_18 is a video network"));
  auto bad2 = RunTool("train_teacher", "-v 0 --arch resnet18 --epochs 1 --out " + (tmp / "x.h5") + " " + store);
  CHECK(bad2.exit_code == 1);
  CHECK_THAT(bad2.err, Catch::Contains("is a clip store, but resnet18 is an image network"));
  auto bad3 = RunTool("evaluate", "-v 0 " + ck + " " + images);
  CHECK(bad3.exit_code == 1);
  CHECK_THAT(bad3.err, Catch::Contains("is an image store, but r3d_18 is a video network"));
  auto bad4 = RunTool("train_teacher", "-v 0 --arch resnet18 --clip-frames 4 --out " + (tmp / "x.h5") + " " + images);
  CHECK(bad4.exit_code == 2);
  CHECK_THAT(bad4.err, Catch::Contains("--clip-frames"));
  auto too_long = RunTool("train_teacher", "-v 0 --arch r3d_18 --small-stem --width 0.125 --clip-frames 9 --epochs 1 --out " +
                                               (tmp / "y.h5") + " " + store);
  CHECK(too_long.exit_code == 1);
  CHECK_THAT(too_long.err, Catch::Contains("clips of 8 frames, fewer than the 9 frames asked for"));
}
