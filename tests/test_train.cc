// Training machinery: learning-rate schedules against closed forms, the loader (coverage,
// determinism, multi-dataset batches, normalisation), metrics against hand-computed values,
// strict checkpoints, and train_teacher/evaluate end to end on tiny data: outputs, exact resume,
// the joint-training baseline, and bad input.
#include <catch2/catch.hpp>
#include <torch/torch.h>

#include <cmath>
#include <filesystem>
#include <opencv2/imgcodecs.hpp>
#include <set>

#include "data/image_store.h"
#include "data/loader.h"
#include "eval/metrics.h"
#include "io/h5.h"
#include "io/tensor_io.h"
#include "models/checkpoint.h"
#include "test_util.h"
#include "train/optim.h"
#include "util/error.h"
#include "util/provenance.h"

using namespace mlfd;
using mlfd_test::RunTool;
using mlfd_test::MakeStore;
using mlfd_test::TempDir;
namespace fs = std::filesystem;

namespace {

const char* kTiny = "-v 0 --threads 2 --device cpu --arch resnet18 --width 0.125 --small-stem --embed-dim 16 "
                    "--batch-size 16 --workers 2 --seed 3";

}  // namespace

TEST_CASE("metrics match hand-computed values", "[unit][train][metrics]") {
  // 4 samples, 3 classes.
  torch::Tensor logits = torch::tensor({{2.0, 1.0, 0.0}, {0.0, 3.0, 0.0}, {1.0, 0.0, 0.5}, {0.0, 0.0, 0.0}});
  torch::Tensor labels = torch::tensor({0, 1, 2, 1}, torch::kInt64);
  ClassificationMetrics m = ComputeMetrics(logits, labels, 3, 10);
  CHECK(m.top1 == Approx(0.5));   // samples 0 and 1 right; 3 ties -> class 0
  CHECK(m.top5 == Approx(1.0));
  double nll = 0;
  auto lse = [](std::vector<double> v) { double s = 0; for (double x : v) s += std::exp(x); return std::log(s); };
  nll += lse({2, 1, 0}) - 2;
  nll += lse({0, 3, 0}) - 3;
  nll += lse({1, 0, 0.5}) - 0.5;
  nll += lse({0, 0, 0}) - 0;
  CHECK(m.nll == Approx(nll / 4));
  // Sample 3 (all-equal logits) is predicted as class 0, the first maximum.
  CHECK(m.confusion == std::vector<int64_t>{1, 0, 0, 1, 1, 0, 1, 0, 0});
  CHECK(m.per_class_accuracy[0] == 1.0);
  CHECK(m.per_class_accuracy[1] == 0.5);
  CHECK(m.per_class_accuracy[2] == 0.0);
  // ECE by hand: confidences and correctness per sample.
  std::vector<double> conf, right{1, 1, 0, 0};
  for (auto row : {std::vector<double>{2, 1, 0}, {0, 3, 0}, {1, 0, 0.5}, {0, 0, 0}}) {
    double mx = *std::max_element(row.begin(), row.end());
    conf.push_back(std::exp(mx - lse(row)));
  }
  std::map<int, std::pair<double, double>> bins;  // bin -> (sum conf, sum right)
  std::map<int, int> cnt;
  for (size_t i = 0; i < 4; ++i) {
    int b = std::min(9, static_cast<int>(conf[i] * 10));
    bins[b].first += conf[i];
    bins[b].second += right[i];
    cnt[b]++;
  }
  double ece = 0;
  for (auto& [b, v] : bins) ece += std::fabs(v.second - v.first) / 4;
  CHECK(m.ece == Approx(ece));
  CHECK_THROWS(ComputeMetrics(logits, torch::tensor({0, 1, 2, 3}, torch::kInt64), 3));
}

TEST_CASE("loader: every sample once per epoch, deterministic, normalised", "[stage][train][loader]") {
  TempDir tmp;
  std::string path = MakeStore(tmp, "ld", 3, 10, 8, 1, 1);
  auto store = std::make_shared<ImageStore>(ImageStore::Open(path));
  const auto& train = store->split("train");
  REQUIRE(train.size() == 18);
  LoaderOptions o;
  o.seed = 7;
  o.workers = 3;
  o.prefetch = 2;
  auto run_epoch = [&](Loader& l, int64_t epoch) {
    l.StartEpoch(epoch);
    std::vector<int64_t> seen;
    Batch b;
    while (l.Next(&b)) {
      CHECK(b.images.sizes() == torch::IntArrayRef({b.labels.size(0), 1, 8, 8}));
      for (int64_t i = 0; i < b.indices.size(0); ++i) seen.push_back(b.indices[i].item<int64_t>());
    }
    return seen;
  };
  Loader a({{store, train, 4}}, o), b({{store, train, 4}}, o);
  CHECK(a.steps_per_epoch() == 5);
  auto e0 = run_epoch(a, 0);
  CHECK(std::multiset<int64_t>(e0.begin(), e0.end()) == std::multiset<int64_t>(train.begin(), train.end()));
  CHECK(run_epoch(b, 0) == e0);        // same seed and epoch: same order, whatever the threads did
  CHECK(run_epoch(a, 1) != e0);        // a fresh permutation every epoch
  // Without the in-memory copy (extract_features: rows read batch by batch), the same batches to
  // the last bit, augmentation included.
  {
    LoaderOptions streamed = o;
    streamed.cache_in_memory = false;
    Loader m({{store, train, 4}}, o), d({{store, train, 4}}, streamed);
    for (int64_t epoch : {0, 1}) {
      m.StartEpoch(epoch);
      d.StartEpoch(epoch);
      Batch bm, bd;
      int steps = 0;
      while (m.Next(&bm)) {
        REQUIRE(d.Next(&bd));
        CHECK(torch::equal(bm.indices, bd.indices));
        CHECK(torch::equal(bm.images, bd.images));
        ++steps;
      }
      CHECK_FALSE(d.Next(&bd));
      CHECK(steps == 5);
    }
  }
  // Normalisation: evaluation batch equals (x/255 - mean)/std of the stored pixels.
  LoaderOptions ev;
  ev.shuffle = false;
  ev.train_augment = false;
  Loader e({{store, {train[0]}, 1}}, ev);
  e.StartEpoch(0);
  Batch one;
  REQUIRE(e.Next(&one));
  std::vector<uint8_t> px(64);
  store->ReadRows(train[0], 1, px.data());
  CHECK(one.images[0][0][2][3].item<float>() ==
        Approx((px[2 * 8 + 3] / 255.0 - store->mean()[0]) / store->std()[0]).epsilon(1e-5));
  // Two datasets: every step carries both, the longer one sets the epoch length.
  std::string path2 = MakeStore(tmp, "ld2", 2, 5, 8, 1, 2);
  auto store2 = std::make_shared<ImageStore>(ImageStore::Open(path2));
  Loader mix({{store, train, 3}, {store2, store2->split("train"), 2}}, o);
  CHECK(mix.steps_per_epoch() == 6);
  mix.StartEpoch(0);
  Batch mb;
  int steps = 0;
  while (mix.Next(&mb)) {
    CHECK(mb.dataset.eq(1).sum().item<int64_t>() == 2);
    ++steps;
  }
  CHECK(steps == 6);
}

TEST_CASE("checkpoints: round trip and strict loading lists every problem", "[unit][train][checkpoint]") {
  TempDir tmp;
  ModelConfig c;
  c.arch = "resnet18";
  c.width = 0.125;
  c.small_stem = true;
  c.in_channels = 1;
  c.head_classes = {3};
  c.embed_dim = 8;
  torch::manual_seed(0);
  Net net = BuildModel(c);
  CheckpointMeta meta;
  meta.model = c;
  HeadInfo h;
  h.dataset = "d";
  h.class_names = {"a", "b", "c"};
  h.mean = {0.5};
  h.std = {0.25};
  h.height = h.width = 8;
  h.channels = 1;
  meta.datasets = {h};
  Provenance prov;
  SaveCheckpoint(tmp / "c.h5", *net, meta, nullptr, prov);
  LoadedCheckpoint back = LoadCheckpoint(tmp / "c.h5");
  net->eval();
  back.net->eval();
  torch::Tensor x = torch::randn({2, 1, 8, 8});
  CHECK(torch::equal(net->forward(x), back.net->forward(x)));
  CHECK(back.meta.datasets[0].class_names == h.class_names);
  // A model of another shape: every mismatch is listed with both shapes.
  ModelConfig wide = c;
  wide.width = 0.25;
  Net other = BuildModel(wide);
  h5::File f = h5::File::Open(tmp / "c.h5");
  try {
    ReadModelStateStrict(f, "state", *other);
    FAIL("no error");
  } catch (const Error& e) {
    std::string w = e.what();
    CHECK(w.find("mis-shaped conv1.weight: checkpoint [8, 1, 3, 3], model [16, 1, 3, 3]") != std::string::npos);
  }
  ModelConfig two = c;
  two.head_classes = {3, 2};
  Net heads = BuildModel(two);
  try {
    ReadModelStateStrict(f, "state", *heads);
    FAIL("no error");
  } catch (const Error& e) {
    std::string w = e.what();
    CHECK(w.find("missing heads.0.weight") != std::string::npos);
    CHECK(w.find("unexpected fc.weight") != std::string::npos);
  }
  mlfd_test::WriteText(tmp / "x.h5", "garbage");
  CHECK_THROWS_WITH(LoadCheckpoint(tmp / "x.h5"), Catch::Contains("not an HDF5 file"));
}

TEST_CASE("train_teacher + evaluate end to end, with exact resume", "[stage][train][e2e]") {
  TempDir tmp;
  std::string store = MakeStore(tmp, "toy", 3, 20, 12, 1, 5);
  std::string common = Msg(kTiny, " --lr 0.05 --epochs 4 ", store);
  auto full = RunTool("train_teacher", Msg(common, " --out ", tmp / "full.h5"));
  INFO(full.err);
  REQUIRE(full.exit_code == 0);
  auto summary = nlohmann::json::parse(full.out);
  CHECK(summary["epochs_run"] == 4);
  CHECK(mlfd_test::FileExists(tmp / "full.last.h5"));
  CHECK_FALSE(mlfd_test::FileExists(tmp / "full.best.h5"));
  std::string metrics = mlfd_test::ReadText(tmp / "full.metrics.jsonl");
  CHECK(std::count(metrics.begin(), metrics.end(), '\n') == 4);
  // The task is easy: the teacher must learn it.
  CHECK(summary["best_val_top1"].get<double>() >= 0.75);  // chance: 0.33

  // Interrupted after epoch 1, resumed: the same final weights as the uninterrupted run.
  auto part = RunTool("train_teacher", Msg(common, " --stop-after 1 --out ", tmp / "res.h5"));
  INFO(part.err);
  REQUIRE(part.exit_code == 0);
  CHECK_FALSE(mlfd_test::FileExists(tmp / "res.h5"));
  auto rest = RunTool("train_teacher", Msg(common, " --resume --out ", tmp / "res.h5"));
  INFO(rest.err);
  REQUIRE(rest.exit_code == 0);
  h5::File a = h5::File::Open(tmp / "full.last.h5"), b = h5::File::Open(tmp / "res.last.h5");
  int compared = 0;
  for (const auto& name : a.List("state")) {
    torch::Tensor ta = ReadTensor(a, "state/" + name), tb = ReadTensor(b, "state/" + name);
    INFO(name);
    CHECK(torch::equal(ta, tb));
    ++compared;
  }
  CHECK(compared > 50);
  CHECK(mlfd_test::ReadText(tmp / "res.metrics.jsonl").size() > 0);

  // evaluate: JSON, confusion matrix and curves; the numbers equal a direct computation.
  auto ev = RunTool("evaluate", Msg("-v 0 --device cpu --split test --out ", tmp / "e.json", " --confusion-png ",
                                    tmp / "cm.png", " --curves-png ", tmp / "curves.png", " ", tmp / "full.h5", " ", store));
  INFO(ev.err);
  REQUIRE(ev.exit_code == 0);
  auto j = nlohmann::json::parse(mlfd_test::ReadText(tmp / "e.json"));
  CHECK(j["metrics"]["count"] == 12);
  CHECK(j["dataset"] == "toy");
  CHECK(j["split"] == "test");
  CHECK(j["metrics"]["top1"].get<double>() >= 0.6);  // chance: 0.33
  CHECK(cv::imread(tmp / "cm.png").cols > 100);
  CHECK(cv::imread(tmp / "curves.png").cols > 100);
  CHECK(cv::imread(tmp / "curves.loss.png").cols > 100);
  LoadedCheckpoint ck = LoadCheckpoint(tmp / "full.h5");
  auto s = std::make_shared<ImageStore>(ImageStore::Open(store));
  Predictions p = Predict(ck.net, ck.meta.datasets[0], s, s->split("test"), {}, torch::kCPU);
  CHECK(ComputeMetrics(p.logits, p.labels, 3).top1 == Approx(j["metrics"]["top1"].get<double>()));
}

TEST_CASE("train_teacher --memory-format channels-last: the weights of contiguous training within rounding, exact resume, "
          "contiguous checkpoints", "[stage][train][e2e]") {
  TempDir tmp;
  std::string store = MakeStore(tmp, "toy", 3, 20, 12, 3, 7);  // 3 channels: the input is not trivially channels-last
  std::string common = Msg(kTiny, " --lr 0.05 --epochs 2 ", store);
  // One SGD step on all training images (batch 64, the last batch kept): rounding differences are
  // not yet amplified by training, which is chaotic over many steps at this size.
  std::string tiny = kTiny;
  tiny.replace(tiny.find("--batch-size 16"), 15, "--batch-size 64");
  std::string one_step = Msg(tiny, " --lr 0.05 --epochs 1 --keep-last-batch 1 ", store);
  auto plain = RunTool("train_teacher", Msg(one_step, " --out ", tmp / "plain.h5"));
  INFO(plain.err);
  REQUIRE(plain.exit_code == 0);
  auto cl = RunTool("train_teacher", Msg(one_step, " --memory-format channels-last --out ", tmp / "cl.h5"));
  INFO(cl.err);
  REQUIRE(cl.exit_code == 0);
  h5::File a = h5::File::Open(tmp / "plain.last.h5"), b = h5::File::Open(tmp / "cl.last.h5");
  double most = 0, rel = 0;
  int compared = 0, differ = 0;
  for (const auto& name : a.List("state")) {
    torch::Tensor ta = ReadTensor(a, "state/" + name).to(torch::kFloat64), tb = ReadTensor(b, "state/" + name).to(torch::kFloat64);
    REQUIRE(ta.sizes() == tb.sizes());
    if (ta.numel() == 0) continue;
    const double d = (ta - tb).abs().max().item<double>();
    most = std::max(most, d);
    rel = std::max(rel, d / std::max(1e-6, ta.abs().max().item<double>()));
    differ += d > 0;
    ++compared;
  }
  CHECK(compared > 50);
  CHECK(differ > 0);    // the layouts really differ (oneDNN sums in another order)...
  INFO("largest difference " << most << ", relative " << rel);
  CHECK(rel < 1e-4);    // ...and only by rounding
  // The checkpoint is written contiguous and records the option; evaluate reads it as any other.
  LoadedCheckpoint ck = LoadCheckpoint(tmp / "cl.h5");
  for (const auto& p : ck.net->parameters()) CHECK(p.is_contiguous());
  auto prov = h5::File::Open(tmp / "cl.h5").GetJsonAttr("/", "provenance");
  CHECK(prov["options"]["memory-format"] == "channels-last");
  // Interrupted and resumed channels-last: bit for bit the uninterrupted channels-last run.
  auto whole = RunTool("train_teacher", Msg(common, " --memory-format channels-last --out ", tmp / "w.h5"));
  REQUIRE(whole.exit_code == 0);
  h5::File w = h5::File::Open(tmp / "w.last.h5");
  auto part = RunTool("train_teacher", Msg(common, " --memory-format channels-last --stop-after 1 --out ", tmp / "r.h5"));
  REQUIRE(part.exit_code == 0);
  auto wrong = RunTool("train_teacher", Msg(common, " --resume --out ", tmp / "r.h5"));
  CHECK(wrong.exit_code != 0);  // another layout is another trajectory
  CHECK(wrong.err.find("--memory-format \"channels-last\" -> \"contiguous\"") != std::string::npos);
  auto rest = RunTool("train_teacher", Msg(common, " --memory-format channels-last --resume --out ", tmp / "r.h5"));
  INFO(rest.err);
  REQUIRE(rest.exit_code == 0);
  h5::File c = h5::File::Open(tmp / "r.last.h5");
  for (const auto& name : w.List("state")) {
    INFO(name);
    CHECK(torch::equal(ReadTensor(w, "state/" + name), ReadTensor(c, "state/" + name)));
  }
  auto bad = RunTool("train_teacher", Msg(common, " --memory-format nhwc --out ", tmp / "x.h5"));
  CHECK(bad.exit_code == 2);
  CHECK(bad.err.find("--memory-format") != std::string::npos);
}

TEST_CASE("joint-training baseline: heads and concatenated label space", "[stage][train][e2e]") {
  TempDir tmp;
  std::string s1 = MakeStore(tmp, "one", 3, 12, 12, 1, 7);
  std::string s2 = MakeStore(tmp, "two", 2, 12, 12, 1, 8);
  for (const char* space : {"heads", "concat"}) {
    std::string out = tmp / (std::string("joint_") + space + ".h5");
    auto r = RunTool("train_teacher", Msg(kTiny, " --epochs 2 --label-space ", space, " --out ", out, " ", s1, " ", s2));
    INFO(r.err);
    REQUIRE(r.exit_code == 0);
    LoadedCheckpoint ck = LoadCheckpoint(out);
    CHECK(ck.meta.kind == "joint_baseline");
    REQUIRE(ck.meta.datasets.size() == 2);
    if (std::string(space) == "heads") {
      CHECK(ck.meta.model.head_classes == std::vector<int>{3, 2});
      CHECK(ck.meta.datasets[1].head == 1);
    } else {
      CHECK(ck.meta.model.head_classes == std::vector<int>{5});
      CHECK(ck.meta.datasets[1].label_offset == 3);
    }
    for (const auto& st : {s1, s2}) {
      auto ev = RunTool("evaluate", Msg("-v 0 --device cpu ", out, " ", st));
      INFO(ev.err);
      CHECK(ev.exit_code == 0);
    }
  }
}

TEST_CASE("train_teacher and evaluate: bad input", "[stage][train][errors]") {
  TempDir tmp;
  std::string store = MakeStore(tmp, "bad", 2, 6, 8, 1, 9);
  auto r = RunTool("train_teacher", Msg("--arch resnet19 --out ", tmp / "o.h5", " ", store));
  CHECK(r.exit_code == 2);
  CHECK(r.err.find("unknown architecture 'resnet19' (valid: resnet18") != std::string::npos);
  r = RunTool("train_teacher", Msg(kTiny, " --out ", tmp / "nodir/o.h5", " ", store));
  CHECK(r.exit_code == 1);
  CHECK(r.err.find("does not exist") != std::string::npos);
  r = RunTool("train_teacher", Msg(kTiny, " --val-split test --out ", tmp / "o.h5", " ", store));
  CHECK(r.exit_code == 2);
  // A diverging run stops with the epoch and step, keeps the last good checkpoint, and writes no output.
  r = RunTool("train_teacher", Msg(kTiny, " --epochs 3 --lr 1e30 --optimizer sgd --out ", tmp / "div.h5", " ", store));
  CHECK(r.exit_code == 1);
  CHECK(r.err.find("non-finite") != std::string::npos);
  INFO(r.err);
  CHECK(r.err.find("at epoch ") != std::string::npos);
  CHECK_FALSE(mlfd_test::FileExists(tmp / "div.h5"));
  // evaluate: a store with another channel count, and a non-checkpoint.
  auto ok = RunTool("train_teacher", Msg(kTiny, " --epochs 1 --out ", tmp / "t.h5", " ", store));
  REQUIRE(ok.exit_code == 0);
  TempDir tmp2;
  std::string rgb = MakeStore(tmp2, "bad", 2, 6, 8, 3, 10);  // same dataset name, 3 channels
  r = RunTool("evaluate", Msg("-v 0 --device cpu ", tmp / "t.h5", " ", rgb));
  CHECK(r.exit_code == 1);
  CHECK(r.err.find("channel") != std::string::npos);
  r = RunTool("evaluate", Msg("-v 0 --device cpu ", store, " ", store));
  CHECK(r.exit_code == 1);
  CHECK(r.err.find("not a checkpoint") != std::string::npos);
  std::string other = MakeStore(tmp, "other", 2, 6, 8, 1, 11);
  r = RunTool("evaluate", Msg("-v 0 --device cpu ", tmp / "t.h5", " ", other));
  CHECK(r.exit_code == 1);
  CHECK(r.err.find("no head for dataset 'other'") != std::string::npos);
  std::string rgb_other = MakeStore(tmp2, "rgb", 2, 6, 8, 3, 12);
  r = RunTool("train_teacher", Msg(kTiny, " --epochs 1 --out ", tmp / "t2.h5", " ", store, " ", rgb_other));
  CHECK(r.exit_code == 1);
  CHECK(r.err.find("one network needs one channel count") != std::string::npos);
}
