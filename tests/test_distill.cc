// Stages 2 and 3: the joint teacher T* (levels, shapes, frozen referenced teachers, sha256 refusal,
// size checks, residual logits), the feature cache (streamed writes, fingerprints, row lookup,
// values against a direct forward pass, h5py), the loss terms against closed forms, and
// finetune_joint / distill_student / report end to end on tiny data.
#include <catch2/catch.hpp>
#include <torch/torch.h>

#include <cstdio>
#include <filesystem>
#include <fstream>

#include "data/image_store.h"
#include "data/mix.h"
#include "io/feature_cache.h"
#include "distill/losses.h"
#include "distill/student.h"
#include "eval/report.h"
#include "io/h5.h"
#include "io/tensor_io.h"
#include "models/checkpoint.h"
#include "models/joint.h"
#include "test_util.h"
#include "util/error.h"
#include "util/options.h"
#include "util/sha256.h"

using namespace mlfd;
using mlfd_test::MakeStore;
using mlfd_test::RunTool;
using mlfd_test::TempDir;
namespace fs = std::filesystem;

namespace {

const char* kTrain = "-v 0 --threads 2 --device cpu --small-stem --embed-dim 16 --batch-size 16 --workers 2 "
                     "--lr 0.05 --seed 3";

// Two tiny datasets and a teacher on each (two architectures); shared by the end-to-end tests.
struct Group {
  TempDir tmp;
  std::string a, b, ta, tb;
  Group() {
    a = MakeStore(tmp, "dsa", 3, 20, 12, 1, 21);
    b = MakeStore(tmp, "dsb", 2, 20, 12, 1, 22);
    ta = tmp / "ta.h5";
    tb = tmp / "tb.h5";
    auto r1 = RunTool("train_teacher", Msg(kTrain, " --arch resnet18 --width 0.125 --epochs 5 --out ", ta, " ", a));
    auto r2 = RunTool("train_teacher", Msg(kTrain, " --arch resnet34 --width 0.125 --epochs 5 --out ", tb, " ", b));
    if (r1.exit_code != 0 || r2.exit_code != 0) throw std::runtime_error(r1.err + r2.err);
  }
};

Group& SharedGroup() {
  static Group g;
  return g;
}

double MaxRelErr(const torch::Tensor& a, const torch::Tensor& b) {
  return ((a - b).abs().max() / b.abs().max().clamp_min(1e-12)).item<double>();
}

}  // namespace

TEST_CASE("build_joint: levels, shapes, frozen referenced teachers", "[stage][joint]") {
  Group& g = SharedGroup();
  std::string j = g.tmp / "j_init.h5";
  auto r = RunTool("build_joint", Msg("-v 0 --level layer4 --adaptor-dim 8 --cout 12 --stages 1 --dropout 0.3 --out ", j,
                                      " --teacher ", g.ta, " --teacher ", g.tb));
  INFO(r.err);
  REQUIRE(r.exit_code == 0);
  LoadedCheckpoint ck = LoadCheckpoint(j);
  CHECK(ck.meta.kind == "joint");
  REQUIRE(ck.meta.datasets.size() == 2);
  CHECK(ck.meta.datasets[0].dataset == "dsa");
  CHECK(ck.meta.datasets[1].mean == std::vector<double>{0.0});  // raw pixels in
  Net net = ck.net;
  JointNetImpl& joint = AsJoint(net, j);
  CHECK(joint.num_teachers() == 2);
  auto levels = net->LevelNames();
  std::vector<std::string> want{"teacher0.layer4", "teacher1.layer4", "teacher0.logits", "teacher1.logits",
                                "fused", "fused1", "pool", "logits"};
  CHECK(levels == want);
  net->eval();
  torch::NoGradGuard ng;
  torch::Tensor x = torch::rand({3, 1, 12, 12});
  LevelMap out = net->Forward(x, {"teacher1.layer4", "fused", "fused1", "pool", "logits"}, 1);
  // 12 px, small stem: layer4 is 2x2 (stride 8... ResNet: 12 -> 12, 6, 3, 2).
  CHECK(out.at("teacher1.layer4").sizes() == torch::IntArrayRef({3, 64, 2, 2}));
  CHECK(out.at("fused").sizes() == torch::IntArrayRef({3, 12, 2, 2}));
  CHECK(out.at("fused1").sizes() == torch::IntArrayRef({3, 12, 1, 1}));
  CHECK(out.at("pool").sizes() == torch::IntArrayRef({3, 12}));
  CHECK(out.at("logits").sizes() == torch::IntArrayRef({3, 2}));
  // The teacher maps equal the teacher's own forward pass on its normalisation.
  LoadedCheckpoint tb = LoadCheckpoint(g.tb);
  tb.net->eval();
  const auto& h = tb.meta.datasets[0];
  torch::Tensor direct = tb.net->Forward((x - h.mean[0]) / h.std[0], {"layer4"}).at("layer4");
  CHECK(MaxRelErr(out.at("teacher1.layer4"), direct) < 1e-5);
  // Teachers are referred to, not stored; only adaptors/trunk/heads are trainable.
  h5::File f = h5::File::Open(j);
  for (const auto& n : f.List("state")) CHECK(n.rfind("teachers.", 0) != 0);
  int64_t trainable = 0;
  for (const auto& p : net->parameters()) trainable += p.requires_grad() ? p.numel() : 0;
  CHECK(trainable > 0);
  CHECK(trainable < 20000);
  auto summary = nlohmann::json::parse(r.out);
  CHECK(summary["trainable_parameters"].get<int64_t>() == trainable);

  SECTION("embedded teachers load without the teacher files") {
    std::string e = g.tmp / "j_emb.h5";
    REQUIRE(RunTool("build_joint", Msg("-v 0 --embed-teachers --adaptor-dim 8 --out ", e, " --teacher ", g.ta,
                                       " --teacher ", g.tb)).exit_code == 0);
    h5::File fe = h5::File::Open(e);
    int teacher_keys = 0;
    for (const auto& n : fe.List("state")) teacher_keys += n.rfind("teachers.", 0) == 0;
    CHECK(teacher_keys > 100);
    LoadedCheckpoint ce = LoadCheckpoint(e);
    ce.net->eval();
    auto o = ce.net->Forward(x, {"teacher0.layer4"}, 0).at("teacher0.layer4");
    LoadedCheckpoint ta = LoadCheckpoint(g.ta);
    ta.net->eval();
    const auto& ha = ta.meta.datasets[0];
    CHECK(MaxRelErr(o, ta.net->Forward((x - ha.mean[0]) / ha.std[0], {"layer4"}).at("layer4")) < 1e-5);
  }
  SECTION("a changed teacher is refused") {
    std::string copy = g.tmp / "ta_copy.h5";
    fs::copy_file(g.ta, copy, fs::copy_options::overwrite_existing);
    std::string j2 = g.tmp / "j_copy.h5";
    REQUIRE(RunTool("build_joint", Msg("-v 0 --adaptor-dim 8 --out ", j2, " --teacher ", copy, " --teacher ", g.tb))
                .exit_code == 0);
    { h5::File w = h5::File::Open(copy, true); w.SetAttr("/", "epoch", int64_t{99}); }
    auto ev = RunTool("evaluate", Msg("-v 0 --device cpu ", j2, " ", g.a));
    CHECK(ev.exit_code == 1);
    CHECK(ev.err.find("changed since the joint teacher was built") != std::string::npos);
  }
  SECTION("fusion maps of different sizes: a clear error, or adaptive pooling") {
    auto bad = RunTool("build_joint", Msg("-v 0 --level layer3,layer4 --out ", g.tmp / "bad.h5", " --teacher ", g.ta,
                                          " --teacher ", g.tb));
    CHECK(bad.exit_code == 1);
    CHECK(bad.err.find("3 x 3") != std::string::npos);
    CHECK(bad.err.find("2 x 2") != std::string::npos);
    CHECK_FALSE(mlfd_test::FileExists(g.tmp / "bad.h5"));
    auto ok = RunTool("build_joint", Msg("-v 0 --level layer3,layer4 --fuse-pool adaptive --adaptor-dim 8 --out ",
                                         g.tmp / "ad.h5", " --teacher ", g.ta, " --teacher ", g.tb));
    INFO(ok.err);
    REQUIRE(ok.exit_code == 0);
    LoadedCheckpoint ad = LoadCheckpoint(g.tmp / "ad.h5");
    ad.net->eval();
    CHECK(ad.net->Forward(x, {"fused"}, 0).at("fused").size(2) == 2);
  }
  SECTION("unknown level names list the valid ones") {
    auto bad = RunTool("build_joint", Msg("-v 0 --level layer9 --out ", g.tmp / "bad2.h5", " --teacher ", g.ta));
    CHECK(bad.exit_code == 2);
    CHECK(bad.err.find("valid: stem, layer1, layer2, layer3, layer4") != std::string::npos);
  }
}

TEST_CASE("build_joint --residual-logits: T* starts as each dataset's own teacher", "[stage][joint]") {
  Group& g = SharedGroup();
  std::string j = g.tmp / "j_res.h5";
  auto r = RunTool("build_joint", Msg("-v 0 --residual-logits --adaptor-dim 8 --out ", j, " --teacher ", g.ta,
                                      " --teacher ", g.tb));
  INFO(r.err);
  REQUIRE(r.exit_code == 0);
  LoadedCheckpoint ck = LoadCheckpoint(j), ta = LoadCheckpoint(g.ta);
  ck.net->eval();
  ta.net->eval();
  torch::NoGradGuard ng;
  torch::Tensor x = torch::rand({4, 1, 12, 12});
  const auto& h = ta.meta.datasets[0];
  CHECK(MaxRelErr(ck.net->forward(x, 0), ta.net->forward((x - h.mean[0]) / h.std[0], 0)) < 1e-5);
}

TEST_CASE("scripts/joint_search.sh: one T* per variant, a table of validation gains over the teachers",
          "[stage][joint]") {
  Group& g = SharedGroup();
  std::string init = g.tmp / "j_search.h5", dir = g.tmp / "search";
  auto b = RunTool("build_joint", Msg("-v 0 --residual-logits --adaptor-dim 8 --out ", init, " --teacher ", g.ta,
                                      " --teacher ", g.tb));
  REQUIRE(b.exit_code == 0);
  const std::string cmd = Msg("cd ", MLFD_SOURCE_DIR, " && BIN=", MLFD_BIN_DIR, " scripts/joint_search.sh --init ", init,
                              " --out-dir ", dir, " --base '--threads 2 --batch-size 16 --workers 1 --epochs 2 --seed 1'",
                              " --variant base= --variant 'slow=--lr 1e-5' ", g.a, " ", g.b);
  auto r = mlfd_test::RunShell(cmd);
  INFO(r.err);
  REQUIRE(r.exit_code == 0);
  CHECK(r.out.find("| variant | options | best epoch | dsa val (gain over teacher) | dsb val (gain over teacher) |") !=
        std::string::npos);
  CHECK(r.out.find("| base | - | ") != std::string::npos);
  CHECK(r.out.find("| slow | --lr 1e-5 | ") != std::string::npos);
  // The gains are finetune_joint's own: the table's number for the base variant is its log's.
  std::ifstream in(dir + "/base.metrics.jsonl");
  double best = -1, gain = 0;
  for (std::string line; std::getline(in, line);) {
    auto j = nlohmann::json::parse(line);
    if (j["val_metric"].get<double>() > best) best = j["val_metric"], gain = j["val_dsa_gain_over_teacher"];
  }
  char cell[32];
  std::snprintf(cell, sizeof(cell), "(%+.2f)", 100 * gain);
  CHECK(r.out.find(cell) != std::string::npos);
  // Finished variants are not rerun; a variant repeating a base option is the stage's usage error.
  auto again = mlfd_test::RunShell(cmd);
  CHECK(again.exit_code == 0);
  CHECK(again.err.find("base done already") != std::string::npos);
  auto twice = mlfd_test::RunShell(Msg(cmd, " --variant 'dup=--epochs 3'"));
  CHECK(twice.exit_code != 0);
  CHECK(twice.err.find("cannot be specified more than once") != std::string::npos);
}

TEST_CASE("extract_features: the cache equals a direct forward pass, stale caches are refused", "[stage][features]") {
  Group& g = SharedGroup();
  std::string cache = g.tmp / "fa.h5";
  auto r = RunTool("extract_features", Msg("-v 0 --device cpu --batch-size 5 --levels layer3,embed --out ", cache, " ",
                                           g.ta, " ", g.a));
  INFO(r.err);
  REQUIRE(r.exit_code == 0);
  auto summary = nlohmann::json::parse(r.out);
  CHECK(summary["images"] == 60);
  CHECK(summary["peak_rss_bytes"].get<int64_t>() > 0);
  FeatureCache fc(cache);
  CHECK(fc.levels() == std::vector<std::string>{"layer3", "embed", "logits"});
  CHECK(fc.SampleShape("train", "layer3") == std::vector<int64_t>{32, 3, 3});
  LoadedCheckpoint ck = LoadCheckpoint(g.ta);
  CHECK_NOTHROW(fc.CheckModel(g.ta, ck.sha256));
  CHECK_THROWS_WITH(fc.CheckModel(g.tb, Sha256File(g.tb)), Catch::Contains("stale or foreign feature cache"));
  auto store = std::make_shared<ImageStore>(ImageStore::Open(g.a));
  CHECK_NOTHROW(fc.CheckStore(g.a, store->Fingerprint()));
  CHECK_THROWS_WITH(fc.RequireLevels({"layer9"}), Catch::Contains("it has: layer3, embed, logits"));
  h5::File f = h5::File::Open(cache);
  CHECK(f.Info("val/layer3").dtype == h5::DType::kFloat16);
  CHECK(f.Info("val/logits").dtype == h5::DType::kFloat32);
  // Rows asked in any order (from disk and from memory) equal the direct forward pass.
  const auto& val = store->split("val");
  std::vector<int64_t> rows(val.rbegin(), val.rend());
  torch::Tensor idx = torch::tensor(rows);
  std::vector<uint8_t> pix(rows.size() * 144);
  store->ReadIndices(rows, pix.data());
  torch::Tensor x = torch::from_blob(pix.data(), {static_cast<int64_t>(rows.size()), 1, 12, 12}, torch::kUInt8)
                        .to(torch::kFloat32) / 255.0;
  const auto& h = ck.meta.datasets[0];
  x = (x - h.mean[0]) / h.std[0];
  ck.net->eval();
  torch::NoGradGuard ng;
  LevelMap direct = ck.net->Forward(x, {"layer3", "embed", "logits"});
  torch::Tensor disk = fc.Read("val", "layer3", idx);
  CHECK(MaxRelErr(disk, direct.at("layer3")) < 1e-3);
  CHECK(MaxRelErr(fc.Read("val", "logits", idx), direct.at("logits")) < 1e-6);
  REQUIRE(fc.Preload("val", {"layer3", "embed"}, int64_t{1} << 30));
  CHECK(torch::equal(fc.Read("val", "layer3", idx), disk));
  CHECK(MaxRelErr(fc.Read("val", "embed", idx), direct.at("embed")) < 1e-3);
  CHECK_THROWS_WITH(fc.Read("test", "layer3", idx), Catch::Contains("is not in the cached 'test' split"));
  {
    // Shuffled rows with repeats, from disk (a second reader, nothing preloaded): each row as asked.
    FeatureCache cold(cache);
    std::vector<int64_t> mixed{rows[2], rows[0], rows[2], rows[1], rows[0]};
    torch::Tensor m = cold.Read("val", "layer3", torch::tensor(mixed));
    REQUIRE(m.size(0) == 5);
    for (int64_t i = 0; i < 5; ++i) {
      int64_t k = static_cast<int64_t>(std::find(rows.begin(), rows.end(), mixed[static_cast<size_t>(i)]) - rows.begin());
      CHECK(torch::equal(m[i], disk[k]));
    }
    CHECK(cold.Read("val", "layer3", torch::tensor(std::vector<int64_t>{})).size(0) == 0);
  }
  CHECK(fc.Labels("val").size(0) == static_cast<int64_t>(val.size()));

  SECTION("h5py reads it as docs/formats.md says, equal to a direct forward pass") {
    {
      h5::File ref = h5::File::Create(g.tmp / "direct.h5");
      WriteTensor(ref, "layer3", direct.at("layer3").contiguous());
      WriteTensor(ref, "rows", idx);
    }
    std::string code = R"PY(
import sys, h5py, numpy as np
f = h5py.File(sys.argv[1], 'r')
assert f.attrs['format'] == 'mlfd.features', f.attrs['format']
d = f['val/layer3']
assert d.dtype == np.float16 and d.chunks[0] == 1, (d.dtype, d.chunks)
assert d.shape[0] == len(f['val/indices']) == len(f['val/labels'])
ref = h5py.File(sys.argv[2], 'r')
pos = {int(r): i for i, r in enumerate(f['val/indices'][...])}
cached = np.stack([d[pos[int(r)]] for r in ref['rows'][...]]).astype(np.float32)
want = ref['layer3'][...]
print(d.shape[1:], 'relerr', float(np.abs(cached - want).max() / np.abs(want).max()))
)PY";
    auto py = mlfd_test::RunPython(g.tmp.path(), code, cache + " " + g.tmp / "direct.h5");
    INFO(py.out << py.err);
    REQUIRE(py.exit_code == 0);
    CHECK(py.out.find("(32, 3, 3)") != std::string::npos);
    double rel = std::stod(py.out.substr(py.out.find("relerr") + 7));
    CHECK(rel < 1e-3);
  }
  SECTION("unknown levels and a joint-only flag fail with one line, and write nothing") {
    auto bad = RunTool("extract_features", Msg("-v 0 --levels layer7 --out ", g.tmp / "x.h5", " ", g.ta, " ", g.a));
    CHECK(bad.exit_code == 2);
    CHECK(bad.err.find("valid: stem, layer1") != std::string::npos);
    auto bad2 = RunTool("extract_features", Msg("-v 0 --teacher-inputs --out ", g.tmp / "x.h5", " ", g.ta, " ", g.a));
    CHECK(bad2.exit_code == 1);
    CHECK(bad2.err.find("not a joint teacher") != std::string::npos);
    CHECK_FALSE(mlfd_test::FileExists(g.tmp / "x.h5"));
  }
}

TEST_CASE("loss terms match closed forms", "[unit][distill][losses]") {
  torch::Tensor zs = torch::tensor({{1.0, 2.0, 0.5}, {0.0, -1.0, 3.0}});
  torch::Tensor zt = torch::tensor({{2.0, 0.0, 1.0}, {1.0, 1.0, 1.0}});
  const double T = 2.0;
  double expect = 0;
  for (int i = 0; i < 2; ++i) {
    double pt[3], ls[3], zt_sum = 0, zs_sum = 0;
    for (int c = 0; c < 3; ++c) zt_sum += std::exp(zt[i][c].item<double>() / T), zs_sum += std::exp(zs[i][c].item<double>() / T);
    for (int c = 0; c < 3; ++c) {
      pt[c] = std::exp(zt[i][c].item<double>() / T) / zt_sum;
      ls[c] = zs[i][c].item<double>() / T - std::log(zs_sum);
      expect -= pt[c] * ls[c];
    }
  }
  expect = expect / 2 * T * T;
  CHECK(SoftTargetLoss(zs, zt, T).item<double>() == Approx(expect).epsilon(1e-6));
  // The soft-target loss is smallest when the student copies the teacher.
  CHECK(SoftTargetLoss(zt, zt, T).item<double>() < SoftTargetLoss(zs, zt, T).item<double>());

  Signals s;
  s.teachers.resize(1);
  s.student["layer4"] = torch::ones({2, 4, 3, 3});
  s.teachers[0]["fused"] = torch::full({2, 4, 3, 3}, 3.0);
  auto hint = MakeHintTerm(0.2, "layer4", 4, "fused", 4, 4, "auto", false);
  CHECK(hint->adapter() == nullptr);  // same channels: no regressor
  CHECK(hint->Compute(s).item<double>() == Approx(4.0));
  s.teachers[0]["fused"] = torch::full({2, 4, 6, 6}, 3.0);
  CHECK_THROWS_WITH(hint->Compute(s), Catch::Contains("spatial sizes differ (student 3x3, teacher 6x6)"));
  auto pooled = MakeHintTerm(0.2, "layer4", 4, "fused", 4, 4, "auto", true);
  CHECK(pooled->Compute(s).item<double>() == Approx(4.0));
  auto reg = MakeHintTerm(1.0, "layer4", 4, "fused", 8, 4, "auto", true);
  REQUIRE(reg->adapter() != nullptr);
  CHECK(reg->adapter()->parameters().size() == 1);  // 1x1 conv, no bias
  CHECK(reg->adapter()->parameters()[0].sizes() == torch::IntArrayRef({8, 4, 1, 1}));
  CHECK_THROWS_WITH(MakeHintTerm(1.0, "layer4", 4, "fused", 8, 4, "none", false),
                    Catch::Contains("need a regressor"));
  Signals ce;
  ce.student["logits"] = zs;
  ce.labels = torch::tensor({1, 2});
  double ce_expect = 0;
  for (int i = 0; i < 2; ++i) {
    double sum = 0;
    for (int c = 0; c < 3; ++c) sum += std::exp(zs[i][c].item<double>());
    ce_expect -= zs[i][i + 1].item<double>() - std::log(sum);
  }
  CHECK(MakeCeTerm(1.0, 0.0)->Compute(ce).item<double>() == Approx(ce_expect / 2).epsilon(1e-6));
}

TEST_CASE("mixup and cutmix: closed forms, exact boxes, determinism, the mixed label term", "[unit][distill][mix]") {
  torch::manual_seed(0);
  torch::Tensor x = torch::randn({6, 2, 8, 10});
  torch::Tensor y = torch::tensor({0, 1, 2, 3, 4, 5}, torch::kInt64);
  MixedBatch m = MixBatch(x, y, "mixup", 0.4, 7);
  REQUIRE(m.images.sizes() == x.sizes());
  CHECK(m.lambda > 0.0);
  CHECK(m.lambda < 1.0);
  CHECK(std::get<0>(torch::sort(m.perm)).equal(torch::arange(6, torch::kInt64)));  // a permutation
  CHECK(m.labels_b.equal(y.index_select(0, m.perm)));
  CHECK(torch::allclose(m.images, x * m.lambda + x.index_select(0, m.perm) * (1 - m.lambda), 1e-6, 1e-6));
  // The same seed mixes the same way; another seed does not.
  MixedBatch again = MixBatch(x, y, "mixup", 0.4, 7), other = MixBatch(x, y, "mixup", 0.4, 8);
  CHECK(again.images.equal(m.images));
  CHECK(again.lambda == m.lambda);
  CHECK_FALSE(other.images.equal(m.images));
  // Beta(alpha, alpha): mean 1/2; a small alpha puts lambda near 0 or 1.
  double sum = 0, extreme = 0;
  for (uint64_t seed = 0; seed < 2000; ++seed) {
    double l = MixBatch(x, y, "mixup", 0.2, seed).lambda;
    sum += l;
    extreme += (l < 0.1 || l > 0.9) ? 1 : 0;
  }
  CHECK(sum / 2000 == Approx(0.5).margin(0.03));
  CHECK(extreme / 2000 > 0.5);

  // cutmix: the box holds the partner's pixels, everything else the own image's; lambda is the
  // share of own pixels left.
  int boxes = 0;
  for (uint64_t seed = 0; seed < 20; ++seed) {
    MixedBatch c = MixBatch(x, y, "cutmix", 1.0, seed);
    const int64_t area = (c.y1 - c.y0) * (c.x1 - c.x0);
    CHECK(c.lambda == Approx(1.0 - area / 80.0));
    torch::Tensor inside = torch::zeros({8, 10}, torch::kBool);
    if (area > 0) {
      ++boxes;
      using torch::indexing::Slice;
      inside.index_put_({Slice(c.y0, c.y1), Slice(c.x0, c.x1)}, true);
    }
    torch::Tensor expect = torch::where(inside, x.index_select(0, c.perm), x);
    CHECK(c.images.equal(expect));
    CHECK(c.labels_b.equal(y.index_select(0, c.perm)));
  }
  CHECK(boxes >= 15);
  CHECK_THROWS_WITH(MixBatch(x, y, "blend", 1.0, 1), Catch::Contains("unknown mode 'blend'"));
  CHECK_THROWS_WITH(MixBatch(x, y, "mixup", 0.0, 1), Catch::Contains("alpha must be a number > 0"));
  CHECK_THROWS_WITH(MixBatch(x, y.narrow(0, 0, 5), "mixup", 1.0, 1), Catch::Contains("5 labels for 6 images"));

  // The label term on a mixed batch: lambda * CE(y) + (1 - lambda) * CE(y_b).
  Signals s;
  s.student["logits"] = torch::tensor({{1.0, 2.0, 0.5}, {0.0, -1.0, 3.0}});
  s.labels = torch::tensor({1, 2});
  const double ce_a = MakeCeTerm(1.0, 0.0)->Compute(s).item<double>();
  s.labels = torch::tensor({0, 0});
  const double ce_b = MakeCeTerm(1.0, 0.0)->Compute(s).item<double>();
  s.labels = torch::tensor({1, 2});
  s.labels_b = torch::tensor({0, 0});
  s.mix = 0.3;
  CHECK(MakeCeTerm(1.0, 0.0)->Compute(s).item<double>() == Approx(0.3 * ce_a + 0.7 * ce_b).epsilon(1e-6));
}

TEST_CASE("distill_student: patient students mix the shared view and train a multiple of the teacher's schedule",
          "[stage][distill][mix]") {
  Group& g = SharedGroup();
  const std::string st = Msg("-v 0 --threads 2 --device cpu --batch-size 16 --lr 0.05 --seed 2 --like ", g.ta, " ");
  auto epochs_of = [](const std::string& path) {
    return h5::File::Open(path).GetJsonAttr("/", "provenance")["options"]["epochs"].get<int>();
  };
  // 0.6 x the teacher's 5 epochs = 3, recorded as the run's epochs with where they came from.
  auto mix = RunTool("distill_student", Msg(st, "--method kd --mix mixup --mix-alpha 0.4 --epochs-multiple 0.6 --teacher ",
                                            g.ta, " --out ", g.tmp / "p_mix.h5 ", g.a));
  INFO(mix.err);
  REQUIRE(mix.exit_code == 0);
  CHECK(nlohmann::json::parse(mix.out)["epochs_run"] == 3);
  CHECK(epochs_of(g.tmp / "p_mix.h5") == 3);
  auto prov = h5::File::Open(g.tmp / "p_mix.h5").GetJsonAttr("/", "provenance");
  CHECK(prov["epochs_from"]["epochs"] == 5);
  CHECK(prov["epochs_from"]["checkpoint"] == g.ta);
  CHECK(prov["options"]["mix"] == "mixup");
  CHECK(LoadCheckpoint(g.tmp / "p_mix.h5").meta.metrics["best_val_metric"].get<double>() > 0.5);  // chance: 0.33

  // Mixing changes the trajectory: the same run without it ends elsewhere.
  auto plain = RunTool("distill_student", Msg(st, "--method kd --epochs 3 --teacher ", g.ta, " --out ",
                                              g.tmp / "p_plain.h5 ", g.a));
  REQUIRE(plain.exit_code == 0);
  {
    h5::File fa = h5::File::Open(g.tmp / "p_mix.last.h5"), fb = h5::File::Open(g.tmp / "p_plain.last.h5");
    CHECK_FALSE(torch::equal(ReadTensor(fa, "state/fc.weight"), ReadTensor(fb, "state/fc.weight")));
  }
  // cutmix with FitNet: stopped after one epoch and resumed, it ends exactly where an uninterrupted
  // run does (the mixing is seeded by the global step).
  const std::string cut = Msg(st, "--method fitnet --mix cutmix --epochs 2 --teacher ", g.ta, " ");
  REQUIRE(RunTool("distill_student", Msg(cut, "--out ", g.tmp / "p_cut.h5 ", g.a)).exit_code == 0);
  REQUIRE(RunTool("distill_student", Msg(cut, "--stop-after 1 --out ", g.tmp / "p_cutr.h5 ", g.a)).exit_code == 0);
  auto rest = RunTool("distill_student", Msg(cut, "--resume --out ", g.tmp / "p_cutr.h5 ", g.a));
  INFO(rest.err);
  REQUIRE(rest.exit_code == 0);
  {
    h5::File fa = h5::File::Open(g.tmp / "p_cut.last.h5"), fb = h5::File::Open(g.tmp / "p_cutr.last.h5");
    for (const auto& n : fa.List("state")) CHECK(torch::equal(ReadTensor(fa, "state/" + n), ReadTensor(fb, "state/" + n)));
  }
  // Refusals: one line, exit 2, no output.
  for (const auto& [args, why] : std::vector<std::pair<std::string, std::string>>{
           {"--mix blend", "--mix: must be none, mixup or cutmix"},
           {"--mix mixup --mix-alpha 0", "--mix-alpha: must be a number > 0"},
           {"--mix mixup --teacher-signals cached --features x.h5",
            "--mix: needs --teacher-signals online (a feature cache holds the signals of unmixed images)"},
           {"--epochs-multiple -1", "--epochs-multiple: must be a number >= 0"}}) {
    auto bad = RunTool("distill_student", Msg(st, "--method kd ", args, " --teacher ", g.ta, " --out ", g.tmp / "p_bad.h5 ", g.a));
    INFO(args << ": " << bad.err);
    CHECK(bad.exit_code == 2);
    CHECK(bad.err.find(why) != std::string::npos);
    CHECK_FALSE(mlfd_test::FileExists(g.tmp / "p_bad.h5"));
  }
}

TEST_CASE("finetune_joint (online and cached maps) and distill_student end to end", "[stage][joint][distill][e2e]") {
  Group& g = SharedGroup();
  std::string init = g.tmp / "e_init.h5";
  REQUIRE(RunTool("build_joint", Msg("-v 0 --adaptor-dim 16 --dropout 0.2 --out ", init, " --teacher ", g.ta,
                                     " --teacher ", g.tb)).exit_code == 0);
  const std::string ft = "-v 0 --threads 2 --device cpu --batch-size 16 --optimizer adam --lr 0.003 --epochs 2 --seed 1 ";
  auto on = RunTool("finetune_joint", Msg(ft, "--out ", g.tmp / "j_on.h5", " ", init, " ", g.a, " ", g.b));
  INFO(on.err);
  REQUIRE(on.exit_code == 0);
  std::string metrics = mlfd_test::ReadText(g.tmp / "j_on.metrics.jsonl");
  CHECK(metrics.find("\"val_dsa_teacher_top1\"") != std::string::npos);
  CHECK(metrics.find("\"train_ce_dsb\"") != std::string::npos);
  LoadedCheckpoint j = LoadCheckpoint(g.tmp / "j_on.h5");
  CHECK(j.meta.kind == "joint");
  CHECK(j.meta.metrics["best_val_metric"].get<double>() > 0.6);  // chance: 0.42

  // Cached mode: the teachers' maps of the initial T*; a cache of another model is refused.
  for (const auto& [ds, name] : {std::pair{g.a, "ca"}, std::pair{g.b, "cb"}}) {
    auto ex = RunTool("extract_features", Msg("-v 0 --teacher-inputs --splits train --out ", g.tmp / name, ".h5 ", init, " ", ds));
    INFO(ex.err);
    REQUIRE(ex.exit_code == 0);
  }
  auto cached = RunTool("finetune_joint", Msg(ft, "--teacher-maps cached --features ", g.tmp / "ca.h5", ",",
                                              g.tmp / "cb.h5", " --out ", g.tmp / "j_ca.h5", " ", init, " ", g.a, " ", g.b));
  INFO(cached.err);
  REQUIRE(cached.exit_code == 0);
  CHECK(LoadCheckpoint(g.tmp / "j_ca.h5").meta.metrics["best_val_metric"].get<double>() > 0.6);
  // Unfreezing the teachers' last stage embeds them and trains it at its own learning rate.
  auto unf = RunTool("finetune_joint", Msg(ft, "--unfreeze-last-stage --unfreeze-lr-scale 0.1 --out ",
                                           g.tmp / "j_unf.h5", " ", init, " ", g.a, " ", g.b));
  INFO(unf.err);
  REQUIRE(unf.exit_code == 0);
  {
    LoadedCheckpoint u = LoadCheckpoint(g.tmp / "j_unf.h5"), t0 = LoadCheckpoint(g.ta);
    torch::Tensor moved = u.net->named_parameters()["teachers.0.layer4.0.conv1.weight"];
    CHECK_FALSE(torch::equal(moved, t0.net->named_parameters()["layer4.0.conv1.weight"]));
    CHECK(torch::equal(u.net->named_parameters()["teachers.0.layer3.0.conv1.weight"],
                       t0.net->named_parameters()["layer3.0.conv1.weight"]));  // still frozen
  }
  auto stale = RunTool("finetune_joint", Msg(ft, "--teacher-maps cached --features ", g.tmp / "ca.h5", ",", g.tmp / "cb.h5",
                                             " --out ", g.tmp / "j_st.h5", " ", g.tmp / "j_on.h5", " ", g.a, " ", g.b));
  CHECK(stale.exit_code == 1);
  CHECK(stale.err.find("stale or foreign feature cache") != std::string::npos);
  CHECK_FALSE(mlfd_test::FileExists(g.tmp / "j_st.h5"));

  // Students: MLFD online and cached, KD and FitNet from the own teacher.
  const std::string st = Msg("-v 0 --threads 2 --device cpu --batch-size 16 --lr 0.05 --epochs 3 --seed 2 --like ", g.ta, " ");
  auto mlfd = RunTool("distill_student", Msg(st, "--method mlfd --teacher ", g.tmp / "j_on.h5", " --out ",
                                             g.tmp / "s_mlfd.h5", " ", g.a));
  INFO(mlfd.err);
  REQUIRE(mlfd.exit_code == 0);
  std::string sm = mlfd_test::ReadText(g.tmp / "s_mlfd.metrics.jsonl");
  for (const char* term : {"train_kd", "train_ce", "train_mse_layer4_fused", "train_mse_embed_pool"}) {
    INFO(term);
    CHECK(sm.find(term) != std::string::npos);
  }
  LoadedCheckpoint s = LoadCheckpoint(g.tmp / "s_mlfd.h5");
  CHECK(s.meta.kind == "student");
  CHECK(s.meta.model.arch == "resnet18");
  CHECK(s.meta.model.width == 0.125);
  h5::File sf = h5::File::Open(g.tmp / "s_mlfd.h5");
  for (const auto& n : sf.List("state")) CHECK(n.find("term") == std::string::npos);  // no regressors exported
  h5::File lf = h5::File::Open(g.tmp / "s_mlfd.last.h5");
  CHECK(lf.Exists("train_state/aux/term2.linear.weight"));  // ... but kept for resume
  auto ev = RunTool("evaluate", Msg("-v 0 --device cpu --name mlfd --out ", g.tmp / "ev.json", " ", g.tmp / "s_mlfd.h5", " ", g.a));
  INFO(ev.err);
  REQUIRE(ev.exit_code == 0);
  auto evj = nlohmann::json::parse(mlfd_test::ReadText(g.tmp / "ev.json"));
  CHECK(evj["name"] == "mlfd");
  CHECK(evj["val_top1"].get<double>() >= 0.0);

  std::string fj = g.tmp / "fj.h5";
  REQUIRE(RunTool("extract_features", Msg("-v 0 --levels fused,pool --splits train --out ", fj, " ", g.tmp / "j_on.h5", " ", g.a))
              .exit_code == 0);
  auto mc = RunTool("distill_student", Msg(st, "--method mlfd --teacher-signals cached --features ", fj, " --teacher ",
                                           g.tmp / "j_on.h5", " --out ", g.tmp / "s_mc.h5", " ", g.a));
  INFO(mc.err);
  REQUIRE(mc.exit_code == 0);
  // Exact resume with the regressors restored.
  auto part = RunTool("distill_student", Msg(st, "--method mlfd --stop-after 1 --teacher ", g.tmp / "j_on.h5", " --out ",
                                             g.tmp / "s_res.h5", " ", g.a));
  REQUIRE(part.exit_code == 0);
  auto rest = RunTool("distill_student", Msg(st, "--method mlfd --resume --teacher ", g.tmp / "j_on.h5", " --out ",
                                             g.tmp / "s_res.h5", " ", g.a));
  INFO(rest.err);
  REQUIRE(rest.exit_code == 0);
  h5::File fa = h5::File::Open(g.tmp / "s_mlfd.last.h5"), fb = h5::File::Open(g.tmp / "s_res.last.h5");
  for (const auto& n : fa.List("state")) CHECK(torch::equal(ReadTensor(fa, "state/" + n), ReadTensor(fb, "state/" + n)));

  // The levels a cache needs, derived from its readers' options: T*'s for MLFD (the preset and a
  // student with its own --pairs), the teacher's for KD and FitNet; logits always.
  auto levels_of = [&](const std::string& args, const std::string& model) {
    std::string out = g.tmp / "derived.h5";
    std::filesystem::remove(out);
    auto r = RunTool("extract_features", Msg("-v 0 --splits train ", args, " --out ", out, " ", model, " ", g.a));
    INFO(r.err);
    REQUIRE(r.exit_code == 0);
    auto l = h5::File::Open(out).GetJsonAttr("/", "levels").get<std::vector<std::string>>();
    // --print-levels answers the same list, in the same order, without writing anything.
    auto p = RunTool("extract_features", Msg("-v 0 --print-levels ", args, " ", model, " ", g.a));
    REQUIRE(p.exit_code == 0);
    CHECK(p.out == JoinNames(l) + "\n");
    std::sort(l.begin(), l.end());
    return l;
  };
  CHECK(levels_of("--for-student '--method mlfd'", g.tmp / "j_on.h5") == std::vector<std::string>{"fused", "logits", "pool"});
  CHECK(levels_of(Msg("--for-student '--method mlfd --like ", g.ta, "' --for-student '--method mlfd --pairs layer4:teacher0.layer4:0.1'"),
                  g.tmp / "j_on.h5") == std::vector<std::string>{"fused", "logits", "pool", "teacher0.layer4"});
  CHECK(levels_of("--for-student '--method fitnet' --for-student '--method kd --w-ce 0.5'", g.ta) ==
        std::vector<std::string>{"layer2", "logits"});
  CHECK(levels_of("--for-student '--method mlfd_code' --levels layer1", g.ta) ==
        std::vector<std::string>{"layer1", "layer4", "logits"});
  {
    auto multi = RunTool("extract_features", Msg("-v 0 --for-student '--method unic' --out ", g.tmp / "x.h5 ", g.ta, " ", g.a));
    CHECK(multi.exit_code == 2);
    CHECK(multi.err.find("--for-student '--method unic': method unic reads several teachers") != std::string::npos);
    auto unknown = RunTool("extract_features", Msg("-v 0 --for-student '--method kd --bogus 1' --out ", g.tmp / "x.h5 ", g.ta,
                                                   " ", g.a));
    CHECK(unknown.exit_code == 2);
    CHECK(unknown.err.find("--for-student '--method kd --bogus 1': unrecognised option '--bogus'") != std::string::npos);
    auto badpair = RunTool("extract_features", Msg("-v 0 --for-student '--pairs layer4:layer9' --out ", g.tmp / "x.h5 ",
                                                   g.tmp / "j_on.h5", " ", g.a));
    CHECK(badpair.exit_code == 2);
    CHECK(badpair.err.find("has no level 'layer9'") != std::string::npos);
    CHECK_FALSE(mlfd_test::FileExists(g.tmp / "x.h5"));
  }

  for (const char* m : {"kd", "fitnet"}) {
    auto b = RunTool("distill_student", Msg(st, "--method ", m, " --teacher ", g.ta, " --out ", g.tmp / m, ".h5 ", g.a));
    INFO(m << ": " << b.err);
    REQUIRE(b.exit_code == 0);
  }
  CHECK(mlfd_test::ReadText(g.tmp / "fitnet.metrics.jsonl").find("train_mse_layer2_layer2") != std::string::npos);

  SECTION("a teacher without the student's labels is refused for logit methods") {
    auto bad = RunTool("distill_student", Msg(st, "--method kd --teacher ", g.tb, " --out ", g.tmp / "bad.h5 ", g.a));
    CHECK(bad.exit_code == 1);
    CHECK(bad.err.find("has no logits for dataset 'dsa'") != std::string::npos);
    CHECK_FALSE(mlfd_test::FileExists(g.tmp / "bad.h5"));
    auto badp = RunTool("distill_student", Msg(st, "--pairs layer9:fused --teacher ", g.tmp / "j_on.h5", " --out ",
                                               g.tmp / "bad.h5 ", g.a));
    CHECK(badp.exit_code == 2);
    CHECK(badp.err.find("has no level 'layer9'") != std::string::npos);
    auto badw = RunTool("distill_student", Msg(st, "--pairs layer3:fused:0.5x --teacher ", g.tmp / "j_on.h5", " --out ",
                                               g.tmp / "bad.h5 ", g.a));
    CHECK(badw.exit_code == 2);
    CHECK(badw.err.find("--pairs: 'layer3:fused:0.5x': the weight '0.5x' is not a number >= 0") != std::string::npos);
    CHECK_FALSE(mlfd_test::FileExists(g.tmp / "bad.h5"));
  }
}

TEST_CASE("report: mean and standard deviation over seeds, Markdown and HTML", "[stage][report]") {
  TempDir tmp;
  std::vector<std::string> files;
  auto write = [&](const std::string& name, const std::string& ds, int seed, double test, double val) {
    std::string p = tmp / Msg(name, "_", ds, "_", seed, ".json");
    mlfd_test::WriteText(p, nlohmann::json{{"name", name}, {"dataset", ds}, {"split", "test"}, {"arch", "resnet18"},
                                           {"metrics", {{"top1", test}}}, {"val_top1", val}}
                                .dump());
    files.push_back(p);
  };
  write("teacher", "mnist", 1, 0.90, 0.91);
  write("teacher", "mnist", 2, 0.92, 0.93);
  write("mlfd", "mnist", 1, 0.95, 0.96);
  write("mlfd", "mnist", 2, 0.97, 0.96);
  write("joint_baseline", "mnist", 1, 0.99, 0.99);
  write("joint", "mnist", 1, 0.80, 0.85);
  auto tables = GatherReport(files);
  REQUIRE(tables.size() == 1);
  REQUIRE(tables[0].rows.size() == 4);
  CHECK(tables[0].rows[0].model == "teacher");
  CHECK(tables[0].rows[3].model == "mlfd");
  CHECK(MeanStd(tables[0].rows[0].test_top1) == "91.00 ± 1.41");
  std::string md = ReportMarkdown(tables, "t");
  CHECK(md.find("| MLFD student | resnet18 | 2 | 96.00 ± 1.41 | 96.00 ± 0.00 |") != std::string::npos);
  CHECK(md.find("MLFD student beats the individually trained model on test top-1 (+5.00 points") != std::string::npos);
  CHECK(md.find("does not beat the joint-training baseline") != std::string::npos);
  CHECK(md.find("T* is -7.00 points against the dataset's own teacher") != std::string::npos);
  // The HTML renders in headless Chromium and its table shows the same numbers.
  std::string html = tmp / "r.html";
  mlfd_test::WriteText(html, ReportHtml(tables, "t", tmp.path()));
  auto which = mlfd_test::RunShell("command -v chromium");
  REQUIRE(which.exit_code == 0);  // scripts/install_deps.sh installs it
  auto dom = mlfd_test::RunShell("timeout 120 chromium --headless --no-sandbox --disable-gpu --dump-dom file://" + html +
                                 " 2>/dev/null");
  REQUIRE(dom.exit_code == 0);
  CHECK(dom.out.find("<td class=\"num test\">96.00 ± 1.41</td>") != std::string::npos);
  CHECK(dom.out.find("data-model=\"joint_baseline\"") != std::string::npos);
  // A file without a name is refused.
  mlfd_test::WriteText(tmp / "x.json", R"({"dataset": "mnist", "split": "test", "metrics": {"top1": 0.5}})");
  CHECK_THROWS_WITH(GatherReport({tmp / "x.json"}), Catch::Contains("run evaluate with --name"));
}

TEST_CASE("Makefile.pipeline: the whole DAG on tiny data, reruns only what is out of date", "[pipeline][e2e]") {
  TempDir tmp;
  MakeStore(tmp, "pa", 3, 12, 12, 1, 31);
  MakeStore(tmp, "pb", 2, 12, 12, 1, 32);
  const std::string tiny = "--small-stem --width 0.125 --embed-dim 16 --batch-size 16 --workers 1 --lr 0.05 --epochs 2";
  mlfd_test::WriteText(tmp / "tiny.mk", Msg("DATASETS = pa pb\n",
                                            "TEACHER_OPTS = ", tiny, " --arch resnet18\n",
                                            "TEACHER_OPTS_pb = --label-smoothing 0.05\n",
                                            "BASELINE_OPTS = ", tiny, " --arch resnet18\n",
                                            "JOINT_BUILD_OPTS = --adaptor-dim 8\n",
                                            "JOINT_OPTS = --batch-size 16 --workers 1 --optimizer adam --lr 0.003 --epochs 1\n",
                                            "STUDENT_OPTS = --batch-size 16 --workers 1 --lr 0.05 --epochs 1\n",
                                            "JOINT_MAPS = cached\nSTUDENT_SIGNALS = cached\n",
                                            "JOINT_CACHE_LEVELS = fused,pool\nTEACHER_CACHE_LEVELS = layer2\n"));
  const std::string make = Msg("make -C ", MLFD_SOURCE_DIR, " -f Makefile.pipeline PIPELINE=tiny PIPELINE_FILE=", tmp / "tiny.mk",
                               " MANIFESTS=", tmp.path(), " RUN=", tmp / "run", " BIN=", MLFD_BIN_DIR, " VERBOSE=0 SEEDS='1 2'");
  auto plan = mlfd_test::RunShell(make + " -n");
  REQUIRE(plan.exit_code == 0);
  CHECK(plan.out.find("build_joint") != std::string::npos);
  CHECK(plan.out.find("--seed 2") != std::string::npos);
  auto run = mlfd_test::RunShell(make + " -j2");
  INFO(run.out.substr(run.out.size() > 3000 ? run.out.size() - 3000 : 0) << run.err.substr(run.err.size() > 3000 ? run.err.size() - 3000 : 0));
  REQUIRE(run.exit_code == 0);
  std::string report = mlfd_test::ReadText(tmp / "run/report.md");
  for (const char* row : {"## pa", "## pb", "| individual (stage-1 teacher, this dataset only) | resnet18 | 2 |",
                          "| joint teacher T* |", "| KD student", "| FitNet student", "| MLFD student | resnet18 | 2 |"}) {
    INFO(row);
    CHECK(report.find(row) != std::string::npos);
  }
  CHECK(mlfd_test::FileExists(tmp / "run/report.html"));
  CHECK(mlfd_test::FileExists(tmp / "run/seed2/features/teacher_maps_pb.h5"));
  auto nothing = mlfd_test::RunShell(make + " -n");  // everything up to date: only the report is printed
  CHECK(nothing.out.find("train_teacher") == std::string::npos);
  CHECK(nothing.out.find("bin/evaluate") == std::string::npos);
  CHECK(nothing.out.find("bin/report") == std::string::npos);
  auto settled = mlfd_test::RunShell(make);  // a finished run settles: make runs nothing, -q says done
  CHECK(settled.exit_code == 0);
  CHECK(settled.out.find("Nothing to be done for 'all'") != std::string::npos);
  CHECK(mlfd_test::RunShell(make + " -q").exit_code == 0);

  // Deleting T* reruns finetune_joint and what depends on it, nothing upstream.
  fs::remove(tmp / "run/seed1/joint/final.h5");
  auto again = mlfd_test::RunShell(make + " -n");
  REQUIRE(again.exit_code == 0);
  CHECK(again.out.find("finetune_joint") != std::string::npos);
  CHECK(again.out.find("--method mlfd") != std::string::npos);
  CHECK(again.out.find("train_teacher") == std::string::npos);
  CHECK(again.out.find("build_joint") == std::string::npos);
  CHECK(again.out.find("--method kd") == std::string::npos);
  CHECK(again.out.find("--seed 2") == std::string::npos);  // the other seed is untouched

  // A stage that fails leaves no file make would take as done; the next run finishes the work.
  auto broken = mlfd_test::RunShell(make + " JOINT_OPTS='--epochs 1 --lr -1'");
  CHECK(broken.exit_code != 0);
  CHECK_FALSE(mlfd_test::FileExists(tmp / "run/seed1/joint/final.h5"));
  auto fixed = mlfd_test::RunShell(make);
  INFO(fixed.err.substr(fixed.err.size() > 2000 ? fixed.err.size() - 2000 : 0));
  CHECK(fixed.exit_code == 0);
  CHECK(mlfd_test::FileExists(tmp / "run/seed1/joint/final.h5"));
  CHECK(mlfd_test::RunShell(make + " -q").exit_code == 0);
}

TEST_CASE("LevelPair::Parse: every field of a --pairs entry checked and a usage error naming it", "[unit][distill][options]") {
  auto p = LevelPair::Parse("layer3:fused", 0.2);
  CHECK(p.student == "layer3");
  CHECK(p.teacher == "fused");
  CHECK(p.weight == Approx(0.2));
  CHECK(p.regressor == "auto");
  p = LevelPair::Parse("embed:pool:0.75:none", 0.2);
  CHECK(p.weight == Approx(0.75));
  CHECK(p.regressor == "none");
  CHECK(LevelPair::Parse("layer2:layer2::conv", 1.0).weight == Approx(1.0));  // empty weight: the default
  const std::pair<const char*, const char*> bad[] = {
      {"layer3", "'layer3': 1 field, not 2 to 4"},
      {"a:b:1:conv:x", "'a:b:1:conv:x': 5 fields, not 2 to 4"},
      {":fused", "the student level is empty"},
      {"layer3:", "the teacher level is empty"},
      {"layer3:fused:abc", "the weight 'abc' is not a number >= 0"},
      {"layer3:fused:0.5x", "the weight '0.5x' is not a number >= 0"},
      {"layer3:fused:-1", "the weight '-1' is not a number >= 0"},
      {"layer3:fused:nan", "the weight 'nan' is not a number >= 0"},
      {"layer3:fused:1:linear", "the regressor 'linear' is not auto, conv or none"}};
  for (const auto& [spec, why] : bad) {
    INFO(spec);
    CHECK_THROWS_AS(LevelPair::Parse(spec, 1.0), UsageError);
    CHECK_THROWS_WITH(LevelPair::Parse(spec, 1.0), Catch::StartsWith("--pairs: '") && Catch::Contains(why));
  }
  // StudentOptions::Check reports a bad entry as a usage error before anything runs.
  StudentOptions o;
  o.pairs = {"layer3:fused:abc", "layer2:layer2"};
  CHECK_THROWS_WITH(o.Check(), Catch::Contains("--pairs: 'layer3:fused:abc': the weight 'abc' is not a number >= 0"));
  o.pairs = {"layer3:fused:0.5"};
  CHECK_NOTHROW(o.Check());
}

TEST_CASE("split fit: fold teachers train without their fold, T* is fitted on exactly the rows they never saw",
          "[stage][distill]") {
  TempDir tmp;
  const std::string a = MakeStore(tmp, "fa", 3, 20, 12, 1, 41), b = MakeStore(tmp, "fb", 2, 20, 12, 1, 42);
  const std::string ta = tmp / "ta.h5", tb = tmp / "tb.h5";
  const std::string base = Msg("-v 1 --threads 2 --device cpu --small-stem --embed-dim 16 --batch-size 8 --workers 1 "
                               "--arch resnet18 --width 0.125 --epochs 1 --seed 3 --fold 2/3 --fold-seed 5");
  auto r1 = RunTool("train_teacher", Msg(base, " --out ", ta, " ", a));
  auto r2 = RunTool("train_teacher", Msg(base, " --out ", tb, " ", b));
  INFO(r1.err << r2.err);
  REQUIRE(r1.exit_code == 0);
  REQUIRE(r2.exit_code == 0);
  // The training rows: 36 and 24, without fold 2 of 3 (12 and 8 per fold, stratified).
  CHECK(r1.err.find("fa: training on 24 of 36 training images (without fold 2/3, fold seed 5)") != std::string::npos);
  CHECK(r2.err.find("fb: training on 16 of 24 training images (without fold 2/3, fold seed 5)") != std::string::npos);
  // The checkpoint records the fold; the rows it selects are those the teacher trained on.
  const HeadInfo info = LoadCheckpoint(ta).meta.datasets.at(0);
  CHECK(info.train_fold.index == 2);
  CHECK(info.train_fold.count == 3);
  CHECK(info.train_fold.seed == 5);
  const ImageStore store = ImageStore::Open(a);
  const auto seen = info.train_fold.Select(store, store.split("train"), false);
  const auto unseen = info.train_fold.Select(store, store.split("train"), true);
  CHECK(seen.size() == 24);
  CHECK(unseen.size() == 12);
  for (int64_t r : unseen) CHECK_FALSE(std::binary_search(seen.begin(), seen.end(), r));

  auto built = RunTool("build_joint", Msg("-v 0 --adaptor-dim 8 --out ", tmp / "j.h5", " --teacher ", ta, " --teacher ", tb));
  REQUIRE(built.exit_code == 0);
  const std::string ft = "-v 1 --threads 2 --device cpu --batch-size 8 --workers 1 --epochs 1 --seed 3 ";
  auto fit = RunTool("finetune_joint", Msg(ft, "--fit-rows held-out --out ", tmp / "jf.h5 ", tmp / "j.h5 ", a, " ", b));
  INFO(fit.err);
  REQUIRE(fit.exit_code == 0);
  CHECK(fit.err.find("fa: fitting on the 12 of 36 training images its teacher never saw (fold 2/3)") != std::string::npos);
  CHECK(fit.err.find("fb: fitting on the 8 of 24 training images its teacher never saw (fold 2/3)") != std::string::npos);

  // A teacher trained on every row cannot give held-out rows.
  auto full = RunTool("train_teacher", Msg("-v 0 --threads 2 --device cpu --small-stem --embed-dim 16 --batch-size 8 "
                                           "--workers 1 --arch resnet18 --width 0.125 --epochs 1 --out ", tmp / "tf.h5 ", b));
  REQUIRE(full.exit_code == 0);
  REQUIRE(RunTool("build_joint", Msg("-v 0 --adaptor-dim 8 --out ", tmp / "j2.h5", " --teacher ", ta, " --teacher ",
                                     tmp / "tf.h5")).exit_code == 0);
  auto refused = RunTool("finetune_joint", Msg(ft, "--fit-rows held-out --out ", tmp / "jf2.h5 ", tmp / "j2.h5 ", a, " ", b));
  CHECK(refused.exit_code == 2);
  CHECK(refused.err.find("was trained on every training row; train it with --fold i/k") != std::string::npos);
  auto bad = RunTool("train_teacher", Msg("-v 0 --fold 3/2 --out ", tmp / "x.h5 ", a));
  CHECK(bad.exit_code == 2);
  CHECK(bad.err.find("--fold: expected i/k") != std::string::npos);
}

TEST_CASE("scripts/split_fit.sh: fold teachers, T* on the held-out fold and on every row, one table", "[stage][joint]") {
  TempDir tmp;
  MakeStore(tmp, "fashion_tops", 3, 20, 12, 1, 51);
  MakeStore(tmp, "fashion_shoes_bags", 2, 20, 12, 1, 52);
  const std::string cmd = Msg("cd ", MLFD_SOURCE_DIR, " && scripts/split_fit.sh --bin ", MLFD_BIN_DIR, " --data ", tmp.path(),
                              " --out ", tmp / "sf", " --folds 2 --teacher-epochs 1 --joint-epochs 1");
  auto r = mlfd_test::RunShell(cmd);
  INFO(r.err);
  REQUIRE(r.exit_code == 0);
  CHECK(r.out.find("| K | fit | best epoch | T* train acc | tops val (gain over teacher) |") != std::string::npos);
  CHECK(r.out.find("| 2 | held-out | 1 | ") != std::string::npos);
  CHECK(r.out.find("| 2 | all | 1 | ") != std::string::npos);
  CHECK(r.out.find("fold teachers' validation top-1: tops ") != std::string::npos);
  // The held-out fit saw half of each training split (36 and 24 rows), the control all of it.
  CHECK(r.err.find("fashion_tops: fitting on the 18 of 36 training images its teacher never saw (fold 1/2)") != std::string::npos);
  CHECK(r.err.find("fashion_shoes_bags: fitting on the 12 of 24 training images") != std::string::npos);
  CHECK(mlfd_test::FileExists(tmp / "sf/k2-seed1/joint_all.h5"));
  auto missing = mlfd_test::RunShell(Msg("cd ", MLFD_SOURCE_DIR, " && scripts/split_fit.sh --data ", tmp / "none",
                                         " --out ", tmp / "sf2"));
  CHECK(missing.exit_code == 1);
  CHECK(missing.err.find("fashion_tops.h5 does not exist") != std::string::npos);
}

TEST_CASE("joint teacher: channel dropout and noise on the teachers' maps act in training only", "[stage][joint]") {
  Group& g = SharedGroup();
  const std::string j = g.tmp / "j_reg.h5";
  auto r = RunTool("build_joint", Msg("-v 0 --level layer4 --adaptor-dim 8 --out ", j, " --teacher ", g.ta, " --teacher ", g.tb));
  REQUIRE(r.exit_code == 0);
  Net net = LoadCheckpoint(j).net;
  JointNetImpl& joint = AsJoint(net, j);
  torch::NoGradGuard ng;
  torch::Tensor x = torch::rand({4, 1, 12, 12});
  net->eval();
  torch::Tensor plain = net->Forward(x, {"fused"}, 0).at("fused");
  joint.SetInputRegularisation(0.5, 1.0);
  CHECK(torch::equal(net->Forward(x, {"fused"}, 0).at("fused"), plain));  // evaluation: untouched
  net->train();
  torch::manual_seed(1);
  torch::Tensor a = net->Forward(x, {"fused"}, 0).at("fused");
  torch::manual_seed(1);
  torch::Tensor b = net->Forward(x, {"fused"}, 0).at("fused");
  torch::manual_seed(2);
  torch::Tensor c = net->Forward(x, {"fused"}, 0).at("fused");
  CHECK(torch::equal(a, b));           // drawn from the seeded generator
  CHECK_FALSE(torch::equal(a, c));
  joint.SetInputRegularisation(0, 0);
  torch::Tensor d = net->Forward(x, {"fused"}, 0).at("fused");
  CHECK_FALSE(torch::equal(a, d));     // the regularisation changed the training-mode maps
  CHECK_THROWS_AS(joint.SetInputRegularisation(1.0, 0), Error);
  // finetune_joint takes them as options (and refuses bad values before any work).
  const std::string ft = Msg("-v 0 --threads 2 --device cpu --batch-size 16 --workers 1 --epochs 1 --seed 3 ");
  auto ok = RunTool("finetune_joint", Msg(ft, "--input-dropout 0.2 --input-noise 0.5 --out ", g.tmp / "j_reg_ft.h5 ", j, " ",
                                          g.a, " ", g.b));
  INFO(ok.err);
  CHECK(ok.exit_code == 0);
  auto bad = RunTool("finetune_joint", Msg(ft, "--input-dropout 1 --out ", g.tmp / "j_reg_bad.h5 ", j, " ", g.a, " ", g.b));
  CHECK(bad.exit_code == 2);
  CHECK(bad.err.find("--input-dropout") != std::string::npos);
}
