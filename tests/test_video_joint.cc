// The joint teacher T* on video teachers: build_joint fuses 5-D maps (N x C x T x H x W) of video
// networks with 3-D adaptors and trunk, pools maps of different temporal or spatial sizes when
// asked, starts as each dataset's own teacher with --residual-logits (to the last clip), and
// finetune_joint trains it on clip stores; image and video networks do not mix.
#include <catch2/catch.hpp>
#include <nlohmann/json.hpp>

#include "models/checkpoint.h"
#include "models/joint.h"
#include "io/feature_cache.h"
#include "test_util.h"
#include "util/error.h"

using namespace mlfd;
using mlfd_test::MakeSpriteClips;
using mlfd_test::RunTool;
using mlfd_test::TempDir;

namespace {

const char* kVideoTeacher =
    "-v 0 --threads 2 --small-stem --width 0.125 --embed-dim 0 --epochs 3 --batch-size 8 --optimizer adam "
    "--lr 0.003 --weight-decay 0 --clip-frames 4 --pad 1 --seed 1";

double MaxAbs(const torch::Tensor& a, const torch::Tensor& b) { return (a - b).abs().max().item<double>(); }

}  // namespace

TEST_CASE("build_joint and finetune_joint on video teachers", "[stage][video][joint]") {
  TempDir tmp;
  // Two datasets of one domain with their own label spaces: horizontal and vertical motions.
  const std::string lr = MakeSpriteClips(tmp, 6, "12,6,6", "sprites_lr", "left,right", 2);
  const std::string ud = MakeSpriteClips(tmp, 6, "12,6,6", "sprites_ud", "up,down", 3);
  const std::string ta = tmp / "ta.h5", tb = tmp / "tb.h5";
  auto r1 = RunTool("train_teacher", Msg(kVideoTeacher, " --arch r3d_18 --out ", ta, " ", lr));
  INFO(r1.err);
  REQUIRE(r1.exit_code == 0);
  auto r2 = RunTool("train_teacher", Msg(kVideoTeacher, " --arch mc3_18 --out ", tb, " ", ud));
  INFO(r2.err);
  REQUIRE(r2.exit_code == 0);

  // r3d_18 strides layer2..4 in time too (4 frames -> 1), mc3_18 only in space: the layer4 maps
  // are 1 x 3 x 3 and 4 x 3 x 3 at 24 px and 4 frames.
  const std::string j = tmp / "j.h5";
  auto bad = RunTool("build_joint", Msg("-v 0 --out ", j, " --teacher ", ta, " --teacher ", tb));
  CHECK(bad.exit_code == 1);
  CHECK_THAT(bad.err, Catch::Contains("24 px, 4 frames"));
  CHECK_THAT(bad.err, Catch::Contains("layer4: 64 x 1 x 3 x 3"));
  CHECK_THAT(bad.err, Catch::Contains("layer4: 64 x 4 x 3 x 3"));
  CHECK_FALSE(mlfd_test::FileExists(j));

  auto b = RunTool("build_joint", Msg("-v 0 --fuse-pool adaptive --adaptor-dim 8 --cout 16 --stages 1 --dropout 0.3 "
                                      "--residual-logits --out ",
                                      j, " --teacher ", ta, " --teacher ", tb));
  INFO(b.err);
  REQUIRE(b.exit_code == 0);
  auto summary = nlohmann::json::parse(b.out);
  CHECK(summary["fuse_size"] == 3);
  CHECK(summary["fuse_frames"] == 1);
  LoadedCheckpoint ck = LoadCheckpoint(j);
  CHECK(IsVideoModel(ck.meta.model));
  REQUIRE(ck.meta.datasets.size() == 2);
  CHECK(ck.meta.datasets[0].frames == 4);
  CHECK(ck.meta.datasets[1].dataset == "sprites_ud");
  Net net = ck.net;
  JointNetImpl& joint = AsJoint(net, j);
  CHECK(joint.video());
  CHECK(joint.spec().frames == 4);
  net->eval();
  torch::NoGradGuard ng;
  torch::manual_seed(5);
  const torch::Tensor x = torch::rand({3, 1, 4, 24, 24});
  LevelMap out = net->Forward(x, {"teacher0.layer4", "teacher1.layer4", "fused", "fused1", "pool", "logits"}, 0);
  CHECK(out.at("teacher0.layer4").sizes() == torch::IntArrayRef({3, 64, 1, 3, 3}));
  CHECK(out.at("teacher1.layer4").sizes() == torch::IntArrayRef({3, 64, 4, 3, 3}));
  CHECK(out.at("fused").sizes() == torch::IntArrayRef({3, 16, 1, 3, 3}));
  CHECK(out.at("fused1").sizes() == torch::IntArrayRef({3, 16, 1, 2, 2}));  // stride 1 in time, 2 in space
  CHECK(out.at("pool").sizes() == torch::IntArrayRef({3, 16}));
  REQUIRE(out.at("logits").sizes() == torch::IntArrayRef({3, 2}));
  // The teachers' maps are their own forward passes on their normalisation, and with residual
  // logits T* starts as each dataset's own teacher.
  for (int i = 0; i < 2; ++i) {
    LoadedCheckpoint t = LoadCheckpoint(i == 0 ? ta : tb);
    t.net->eval();
    const auto& h = t.meta.datasets[0];
    LevelMap direct = t.net->Forward((x - h.mean[0]) / h.std[0], {"layer4", "logits"});
    LevelMap mine = net->Forward(x, {Msg("teacher", i, ".layer4"), "logits"}, i);
    CHECK(MaxAbs(mine.at(Msg("teacher", i, ".layer4")), direct.at("layer4")) < 1e-5);
    CHECK(MaxAbs(mine.at("logits"), direct.at("logits")) < 1e-5);
  }
  CHECK_THROWS_WITH(net->Forward(torch::rand({3, 1, 24, 24}), {"logits"}, 0),
                    Catch::Contains("it takes clips N x C x T x H x W"));

  // evaluate reads clip stores for it, and the initial T* scores exactly as the own teacher.
  auto et = RunTool("evaluate", Msg("-v 0 --clips 2 ", ta, " ", lr));
  auto ej = RunTool("evaluate", Msg("-v 0 --clips 2 ", j, " ", lr));
  INFO(et.err << ej.err);
  REQUIRE(et.exit_code == 0);
  REQUIRE(ej.exit_code == 0);
  auto mt = nlohmann::json::parse(et.out), mj = nlohmann::json::parse(ej.out);
  CHECK(mj["metrics"]["count"] == 12);
  CHECK(mj["frames"] == 4);
  CHECK(mj["metrics"]["top1"].get<double>() == mt["metrics"]["top1"].get<double>());

  // finetune_joint on both clip stores, the teachers' maps online on the augmented clips.
  const std::string jt = tmp / "jt.h5";
  auto f = RunTool("finetune_joint", Msg("-v 0 --threads 2 --epochs 2 --batch-size 8 --lr 0.003 --optimizer adamw "
                                         "--pad 1 --seed 1 --out ",
                                         jt, " ", j, " ", lr, " ", ud));
  INFO(f.err);
  REQUIRE(f.exit_code == 0);
  auto fj = nlohmann::json::parse(f.out);
  CHECK(fj["epochs_run"] == 2);
  // Each dataset's own teacher on validation sits beside T*'s number.
  const std::string metrics = mlfd_test::ReadText(tmp / "jt.metrics.jsonl");
  CHECK(metrics.find("\"val_sprites_lr_teacher_top1\"") != std::string::npos);
  CHECK(metrics.find("\"val_sprites_ud_gain_over_teacher\"") != std::string::npos);
  CHECK(LoadCheckpoint(jt).meta.kind == "joint");
  auto e2 = RunTool("evaluate", Msg("-v 0 ", jt, " ", ud));
  INFO(e2.err);
  REQUIRE(e2.exit_code == 0);
  const double top1 = nlohmann::json::parse(e2.out)["metrics"]["top1"].get<double>();
  CHECK(top1 >= 0.0);
  CHECK(top1 <= 1.0);

  // The teachers' maps cached instead (extract_features --teacher-inputs on clip stores: 5-D rows),
  // and finetune_joint trained from them.
  std::string features;
  for (const auto& [name, store] : std::vector<std::pair<std::string, std::string>>{{"lr", lr}, {"ud", ud}}) {
    const std::string maps = tmp / ("maps_" + name + ".h5");
    auto x = RunTool("extract_features", Msg("-v 0 --threads 2 --teacher-inputs --splits train --out ", maps, " ", j, " ", store));
    INFO(x.err);
    REQUIRE(x.exit_code == 0);
    FeatureCache fc(maps);
    CHECK(fc.SampleShape("train", "teacher0.layer4") == std::vector<int64_t>{64, 1, 3, 3});
    CHECK(fc.SampleShape("train", "teacher1.layer4") == std::vector<int64_t>{64, 4, 3, 3});
    features += (features.empty() ? "" : ",") + maps;
  }
  const std::string jc = tmp / "jc.h5";
  auto fc = RunTool("finetune_joint", Msg("-v 0 --threads 2 --epochs 2 --batch-size 8 --lr 0.003 --optimizer adamw "
                                          "--seed 1 --teacher-maps cached --features ",
                                          features, " --out ", jc, " ", j, " ", lr, " ", ud));
  INFO(fc.err);
  REQUIRE(fc.exit_code == 0);
  CHECK(nlohmann::json::parse(fc.out)["epochs_run"] == 2);
  CHECK(mlfd_test::ReadText(tmp / "jc.metrics.jsonl").find("\"val_sprites_lr_gain_over_teacher\"") != std::string::npos);

  // Image and video networks do not mix, and each kind reads its own stores.
  const std::string img_teacher = tmp / "img.h5";
  const std::string images = tmp / "src_sprites_lr.h5";
  REQUIRE(RunTool("train_teacher", Msg("-v 0 --arch resnet18 --small-stem --width 0.125 --embed-dim 0 --epochs 1 "
                                       "--out ",
                                       img_teacher, " ", images))
              .exit_code == 0);
  auto mixed = RunTool("build_joint", Msg("-v 0 --fuse-pool adaptive --out ", tmp / "mixed.h5", " --teacher ", ta,
                                          " --teacher ", img_teacher));
  CHECK(mixed.exit_code == 2);
  CHECK_THAT(mixed.err, Catch::Contains("image networks or of video networks, not both"));
  CHECK_FALSE(mlfd_test::FileExists(tmp / "mixed.h5"));
  auto wrong = RunTool("finetune_joint", Msg("-v 0 --epochs 1 --out ", tmp / "w.h5", " ", j, " ", images));
  CHECK(wrong.exit_code == 1);
  CHECK_THAT(wrong.err, Catch::Contains("is an image store, but this joint teacher (of video teachers)"));
}
