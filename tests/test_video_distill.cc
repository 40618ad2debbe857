// Distillation on clip stores: the 5-d hints (MatchSpatial over T, H and W, the 1x1x1 Conv3d
// regressor) against closed forms, and extract_features + distill_student (kd, fitnet, mlfd, online
// and from the cache) + evaluate end to end with tiny r3d_18 networks on moving sprites, with the
// refusals of image/video mismatches.
#include <torch/torch.h>

#include <catch2/catch.hpp>
#include <cmath>
#include <fstream>
#include <nlohmann/json.hpp>

#include "data/augment.h"
#include "data/clip_store.h"
#include "distill/losses.h"
#include "io/feature_cache.h"
#include "io/h5.h"
#include "models/checkpoint.h"
#include "test_util.h"
#include "util/error.h"

using namespace mlfd;
using mlfd_test::MakeSpriteClips;
using mlfd_test::RunTool;
using mlfd_test::TempDir;

namespace {

// Every line of a run's metrics file has a finite value at `key`; returns the last one.
double LastFinite(const std::string& metrics_path, const std::string& key) {
  std::ifstream in(metrics_path);
  std::string line;
  double last = NAN;
  int lines = 0;
  while (std::getline(in, line)) {
    if (line.empty()) continue;
    auto j = nlohmann::json::parse(line);
    INFO(metrics_path << ": " << line);
    REQUIRE(j.contains(key));
    last = j[key].get<double>();
    CHECK(std::isfinite(last));
    ++lines;
  }
  CHECK(lines >= 1);
  return last;
}

}  // namespace

TEST_CASE("5-d hints: clip maps matched over T H and W by pooling and a 1x1x1 Conv3d regressor",
          "[unit][distill][video]") {
  // Student 4 x 2 x 2 (T x H x W), teacher 2 x 1 x 1: the student is pooled over pairs of frames
  // and the whole frame; the teacher, already the smaller, passes unchanged.
  torch::Tensor a = torch::arange(16, torch::kFloat32).view({1, 1, 4, 2, 2});
  torch::Tensor b = torch::tensor({5.0f, -1.0f}).view({1, 1, 2, 1, 1});
  auto [x, y] = MatchSpatial(a, b, true, "pair");
  REQUIRE(x.sizes() == torch::IntArrayRef({1, 1, 2, 1, 1}));
  CHECK(x.flatten()[0].item<double>() == Approx(3.5));   // frames 0-1: values 0..7
  CHECK(x.flatten()[1].item<double>() == Approx(11.5));  // frames 2-3: values 8..15
  CHECK(torch::equal(y, b));
  // Each dimension goes to the smaller of the two: 2 x 4 x 4 against 4 x 2 x 2 -> 2 x 2 x 2.
  torch::Tensor c = torch::ones({2, 3, 2, 4, 4}), d = torch::ones({2, 3, 4, 2, 2}) * 2;
  auto [c2, d2] = MatchSpatial(c, d, true, "pair");
  CHECK(c2.sizes() == torch::IntArrayRef({2, 3, 2, 2, 2}));
  CHECK(d2.sizes() == torch::IntArrayRef({2, 3, 2, 2, 2}));
  CHECK(d2.min().item<double>() == Approx(2.0));
  // Equal sizes pass as they are; a mismatch without pooling names both T x H x W sizes.
  auto [a3, b3] = MatchSpatial(a, a * 2, false, "pair");
  CHECK(a3.is_same(a));
  CHECK_THROWS_WITH(
      MatchSpatial(a, b, false, "pair"),
      Catch::Contains("pair: sizes T x H x W differ (student 4x2x2, teacher 2x1x1)") &&
          Catch::Contains("--pool-mismatch"));
  CHECK_THROWS_WITH(MatchSpatial(torch::zeros({1, 1, 2, 2}), a, true, "pair"),
                    Catch::Contains("a 4-d level cannot be matched with a 5-d level"));

  // The MSE hint on clip maps: equal channels need no regressor.
  Signals s;
  s.teachers.resize(1);
  s.student["layer4"] = torch::ones({2, 4, 2, 3, 3});
  s.teachers[0]["layer4"] = torch::full({2, 4, 2, 3, 3}, 3.0);
  auto hint = MakeHintTerm(1.0, "layer4", 4, "layer4", 4, 5, "auto", false);
  CHECK(hint->adapter() == nullptr);
  CHECK(hint->Compute(s).item<double>() == Approx(4.0));
  s.teachers[0]["layer4"] = torch::full({2, 4, 1, 3, 3}, 3.0);  // fewer frames in the teacher's map
  CHECK_THROWS_WITH(hint->Compute(s),
                    Catch::Contains("sizes T x H x W differ (student 2x3x3, teacher 1x3x3)"));
  auto pooled = MakeHintTerm(1.0, "layer4", 4, "layer4", 4, 5, "auto", true);
  CHECK(pooled->Compute(s).item<double>() == Approx(4.0));

  // Channels differ: a 1x1x1 Conv3d without bias. Weights [[1, 0], [0, 1], [1, 1]] map the
  // student's (1, 2) at every position to (1, 2, 3); against a zero teacher the MSE is (1 + 4 + 9)
  // / 3.
  auto reg = MakeHintTerm(1.0, "layer3", 2, "layer3", 3, 5, "auto", false);
  REQUIRE(reg->adapter() != nullptr);
  auto params = reg->adapter()->parameters();
  REQUIRE(params.size() == 1);
  REQUIRE(params[0].sizes() == torch::IntArrayRef({3, 2, 1, 1, 1}));
  {
    torch::NoGradGuard g;
    params[0].copy_(torch::tensor({1.0f, 0.0f, 0.0f, 1.0f, 1.0f, 1.0f}).view({3, 2, 1, 1, 1}));
  }
  Signals r;
  r.teachers.resize(1);
  r.student["layer3"] =
      torch::cat({torch::ones({1, 1, 2, 2, 2}), torch::full({1, 1, 2, 2, 2}, 2.0)}, 1);
  r.teachers[0]["layer3"] = torch::zeros({1, 3, 2, 2, 2});
  CHECK(reg->Compute(r).item<double>() == Approx(14.0 / 3.0));
  // The regressor was built for clip maps: a 4-d student map is refused with one line.
  r.student["layer3"] = torch::ones({1, 2, 2, 2});
  CHECK_THROWS_WITH(reg->Compute(r),
                    Catch::Contains("is 4-d, not what its regressor was built for"));
  CHECK_THROWS_WITH(MakeHintTerm(1.0, "layer3", 2, "layer3", 3, 3, "auto", false),
                    Catch::Contains("3-d maps (maps are 4-d, clip maps 5-d)"));
}

TEST_CASE(
    "video distillation: extract_features caches clip maps and distill_student runs kd fitnet mlfd "
    "online and cached, the multi-teacher methods and ce",
    "[stage][distill][video]") {
  TempDir tmp;
  const std::string store = MakeSpriteClips(tmp, 4, "8,4,4");
  const std::string images = tmp / "src_sprites.h5";  // the image store the sprites were cut from
  const std::string teacher = tmp / "teacher.h5";
  // One thread: tiny 3-d convolutions gain nothing from more, and lose much on a loaded machine.
  const std::string common = "-v 0 --threads 1 --device cpu --workers 1 --seed 1 ";
  auto t = RunTool("train_teacher",
                   common +
                       "--arch r3d_18 --small-stem --width 0.125 --embed-dim 0 --epochs 2 "
                       "--batch-size 8 --optimizer adam --lr 0.003 --weight-decay 0 --out " +
                       teacher + " " + store);
  INFO(t.err);
  REQUIRE(t.exit_code == 0);

  // The cache: --levels, the levels a FitNet student reads (the teacher's middle map), logits.
  const std::string student_arch = "--arch r3d_18 --small-stem --width 0.25 --embed-dim 0";
  const std::string cache = tmp / "features.h5";
  auto x = RunTool("extract_features",
                   Msg("-v 0 --threads 1 --device cpu --dtype float32 --batch-size 5 --workers 1 "
                       "--levels layer4,pool --for-student '--method fitnet ",
                       student_arch, "' --out ", cache, " ", teacher, " ", store));
  INFO(x.err);
  REQUIRE(x.exit_code == 0);
  CHECK(nlohmann::json::parse(x.out)["images"] == 32);  // every split: 8 + 4 + 4 clips per motion
  FeatureCache fc(cache);
  CHECK(fc.levels() == std::vector<std::string>{"layer4", "pool", "layer2", "logits"});
  // Clip maps: C x T x H x W per row (the small stem keeps 24 px; layer2 halves T, H and W).
  CHECK(fc.SampleShape("train", "layer2") == std::vector<int64_t>{16, 2, 12, 12});
  CHECK(fc.SampleShape("train", "layer4") == std::vector<int64_t>{64, 1, 3, 3});
  CHECK(fc.SampleShape("train", "pool") == std::vector<int64_t>{64});
  CHECK(fc.SampleShape("train", "logits") == std::vector<int64_t>{2});
  CHECK(h5::File::Open(cache).GetIntAttr("/", "frames") == 4);

  {  // Read back, rows in reverse order, equal to a forward pass over the centred crop of the
     // clips.
    auto clips = ClipStore::Open(store);
    LoadedCheckpoint ck = LoadCheckpoint(teacher);
    const HeadInfo& h = ck.meta.datasets.at(0);
    REQUIRE(h.frames == 4);
    const auto& val = clips.split("val");
    std::vector<int64_t> rows(val.rbegin(), val.rend());
    const int64_t n = static_cast<int64_t>(rows.size());
    std::vector<uint8_t> raw(static_cast<size_t>(n * clips.clip_bytes()));
    clips.ReadIndices(rows, raw.data());
    const int start = TemporalCropStarts(clips.frames(), h.frames, 1).at(0);
    torch::Tensor in = torch::from_blob(raw.data(), {n, clips.frames(), 24, 24, 1}, torch::kUInt8)
                           .narrow(1, start, h.frames)
                           .permute({0, 4, 1, 2, 3})
                           .to(torch::kFloat32) /
                       255.0;
    in = (in - h.mean[0]) / h.std[0];
    PrepareFrozen(*ck.net);  // as extract_features runs it
    torch::NoGradGuard ng;
    LevelMap direct = ck.net->Forward(in, {"layer2", "layer4", "pool", "logits"});
    torch::Tensor idx = torch::tensor(rows);
    for (const char* level : {"layer2", "layer4", "pool", "logits"}) {
      torch::Tensor cached = fc.Read("val", level, idx);
      INFO(level);
      REQUIRE(cached.sizes() == direct.at(level).sizes());
      CHECK(cached.dim() == (std::string(level).rfind("layer", 0) == 0 ? 5 : 2));
      const double scale = direct.at(level).abs().max().item<double>();
      CHECK(scale > 0);
      CHECK((cached - direct.at(level)).abs().max().item<double>() <= 1e-5 * scale);
    }
  }

  // Students: kd and fitnet online (fitnet on a 3-frame crop), fitnet and mlfd from the cache (mlfd
  // with --like: the teacher's own architecture), mlfd online with the video teacher itself.
  const std::string train = common + "--epochs 1 --batch-size 8 --lr 0.01 ";
  struct Run {
    std::string name, options, term;
  };
  const std::vector<Run> runs = {
      {"kd_online", "--method kd " + student_arch, "train_kd"},
      {"fitnet_online", "--method fitnet --clip-frames 3 " + student_arch,
       "train_mse_layer2_layer2"},
      {"fitnet_cached",
       "--method fitnet --teacher-signals cached --features " + cache + " " + student_arch,
       "train_mse_layer2_layer2"},
      {"mlfd_online", "--method mlfd " + student_arch, "train_mse_layer4_layer4"},
      {"mlfd_cached",
       "--method mlfd --like " + teacher + " --teacher-signals cached --features " + cache,
       "train_mse_pool_pool"},
  };
  for (const auto& run : runs) {
    const std::string out = tmp / (run.name + ".h5");
    auto d = RunTool("distill_student",
                     train + run.options + " --teacher " + teacher + " --out " + out + " " + store);
    INFO(run.name << ": " << d.err);
    REQUIRE(d.exit_code == 0);
    const double top1 = nlohmann::json::parse(d.out)["best_val_top1"].get<double>();
    CHECK(top1 >= 0.0);
    CHECK(top1 <= 1.0);
    const std::string metrics = tmp / (run.name + ".metrics.jsonl");
    CHECK(LastFinite(metrics, "train_loss") > 0);
    CHECK(LastFinite(metrics, run.term) >= 0);
    LoadedCheckpoint s = LoadCheckpoint(out);
    CHECK(s.meta.model.arch == "r3d_18");
    CHECK(s.meta.model.width == (run.name == "mlfd_cached" ? 0.125 : 0.25));
    CHECK(s.meta.datasets.at(0).frames == (run.name == "fitnet_online" ? 3 : 4));
  }
  // The multi-teacher methods on clip maps, with two video teachers (the teacher and the KD
  // student): UNIC's 1x1x1 projectors, AMTML-KD's hints through 1x1x1 regressors, FEED's 3x3x3
  // transforms; uniform multi-teacher KD (AMTML-KD's soft target with uniform weights).
  for (const auto& [method, term] : std::vector<std::pair<std::string, std::string>>{
           {"unic", "train_unic"}, {"amtml", "train_amtml"}, {"feed", "train_feed"}, {"mtkd", "train_amtml"}}) {
    const std::string out = tmp / (method + ".h5");
    auto d = RunTool("distill_student", train + "--method " + method + " --unic-hidden 16 " +
                                            student_arch + " --teacher " + teacher + " --teacher " +
                                            (tmp / "kd_online.h5") + " --out " + out + " " + store);
    INFO(method << ": " << d.err);
    REQUIRE(d.exit_code == 0);
    CHECK(LastFinite(tmp / (method + ".metrics.jsonl"), term) > 0);
    CHECK(LoadCheckpoint(out).meta.model.arch == "r3d_18");
  }
  {  // The student trained alone on clips (ce: no teacher), the reference row of the methods.
    auto d = RunTool("distill_student", train + "--method ce " + student_arch + " --out " + (tmp / "ce.h5") + " " + store);
    INFO(d.err);
    REQUIRE(d.exit_code == 0);
    CHECK(LastFinite(tmp / "ce.metrics.jsonl", "train_ce") > 0);
    CHECK(LoadCheckpoint(tmp / "ce.h5").meta.datasets.at(0).frames == 4);
  }

  auto e = RunTool("evaluate", "-v 0 --threads 1 --device cpu --out " + (tmp / "kd.json") + " " +
                                   (tmp / "kd_online.h5") + " " + store);
  INFO(e.err);
  REQUIRE(e.exit_code == 0);
  auto m = nlohmann::json::parse(mlfd_test::ReadText(tmp / "kd.json"));
  CHECK(m["arch"] == "r3d_18");
  CHECK(m["frames"] == 4);
  CHECK(m["metrics"]["count"] == 8);
  CHECK(m["metrics"]["top1"].get<double>() >= 0.0);
  CHECK(std::isfinite(m["metrics"]["nll"].get<double>()));

  // Image and video do not mix, each refused with one line. A checkpoint of the wrong kind for the
  // store is a bad input (exit 1, as train_teacher and evaluate); a student architecture or option
  // of the wrong kind is a usage error (exit 2).
  const std::string image_teacher = tmp / "image_teacher.h5";
  auto it = RunTool("train_teacher",
                    common +
                        "--arch resnet18 --small-stem --width 0.125 --embed-dim 0 --epochs 1 "
                        "--batch-size 8 --out " +
                        image_teacher + " " + images);
  REQUIRE(it.exit_code == 0);
  const std::string bad_out = " --out " + (tmp / "bad.h5") + " ";
  auto one_line = [](const mlfd_test::RunResult& r) {
    std::string e = r.err;
    while (!e.empty() && e.back() == '\n') e.pop_back();
    return e.find('\n') == std::string::npos;
  };
  auto b1 = RunTool("distill_student", train + "--method kd " + student_arch + " --teacher " +
                                           image_teacher + bad_out + store);
  CHECK(b1.exit_code == 1);
  CHECK_THAT(b1.err, Catch::Contains("is a clip store, but the teacher") &&
                         Catch::Contains("is an image network"));
  CHECK(one_line(b1));
  auto b2 = RunTool("distill_student",
                    train + "--method kd --arch resnet18 --teacher " + teacher + bad_out + images);
  CHECK(b2.exit_code == 1);
  CHECK_THAT(b2.err, Catch::Contains("is an image store, but the teacher") &&
                         Catch::Contains("is a video network"));
  CHECK(one_line(b2));
  auto b3 = RunTool("distill_student",
                    train + "--method kd --arch resnet18 --teacher " + teacher + bad_out + store);
  CHECK(b3.exit_code == 2);
  CHECK_THAT(b3.err,
             Catch::Contains("--arch resnet18: an image network cannot learn from the clip store"));
  CHECK(one_line(b3));
  auto b4 = RunTool("distill_student", train + "--method kd --like " + image_teacher +
                                           " --teacher " + teacher + bad_out + store);
  CHECK(b4.exit_code == 2);
  CHECK_THAT(b4.err,
             Catch::Contains("(resnet18): an image network cannot learn from the clip store"));
  auto b5 = RunTool("distill_student", train + "--method kd --mix mixup " + student_arch +
                                           " --teacher " + teacher + bad_out + store);
  CHECK(b5.exit_code == 2);
  CHECK_THAT(b5.err, Catch::Contains("--mix mixup: mixes image batches"));
  auto b6 =
      RunTool("distill_student", train + "--method kd --arch resnet18 --clip-frames 2 --teacher " +
                                     image_teacher + bad_out + images);
  CHECK(b6.exit_code == 2);
  CHECK_THAT(b6.err, Catch::Contains("--clip-frames: applies to video students on clip stores"));
  auto b7 = RunTool("extract_features", "-v 0 --device cpu" + bad_out + teacher + " " + images);
  CHECK(b7.exit_code == 1);
  CHECK_THAT(b7.err, Catch::Contains("is an image store, but r3d_18 is a video network"));
  auto b8 = RunTool("extract_features",
                    "-v 0 --device cpu --for-student '--method fitnet --arch resnet18'" + bad_out +
                        teacher + " " + store);
  CHECK(b8.exit_code == 2);
  CHECK_THAT(b8.err, Catch::Contains("the student (resnet18) is an image network, but"));
  CHECK_FALSE(mlfd_test::FileExists(tmp / "bad.h5"));
}
