// The model zoo: torchvision's parameter counts and names (checked against torchvision itself in
// Python), level shapes at full size, tiny configurations forward and backward, heads, errors.
#include <catch2/catch.hpp>
#include <torch/torch.h>

#include <sstream>

#include "io/h5.h"
#include "models/checkpoint.h"
#include "models/joint.h"
#include "models/model.h"
#include "models/zoo.h"
#include "test_util.h"
#include "util/error.h"

using namespace mlfd;
using mlfd_test::TempDir;

namespace {
ModelConfig Full(const std::string& arch, int classes = 1000) {
  ModelConfig c;
  c.arch = arch;
  c.head_classes = {classes};
  c.embed_dim = 0;
  return c;
}
int64_t Count(Net& n) {
  int64_t k = 0;
  for (const auto& p : n->parameters()) k += p.numel();
  return k;
}
}  // namespace

TEST_CASE("models: torchvision parameter counts", "[unit][models]") {
  Net r18 = BuildModel(Full("resnet18")), r34 = BuildModel(Full("resnet34")), r50 = BuildModel(Full("resnet50"));
  Net eff = BuildModel(Full("efficientnet_b0"));
  CHECK(Count(r18) == 11689512);
  CHECK(Count(r34) == 21797672);
  CHECK(Count(r50) == 25557032);
  CHECK(Count(eff) == 5288548);
  // timm lists seresnext26t_32x4d at 16.8 M parameters.
  Net se = BuildModel(Full("seresnext26t_32x4d"));
  CHECK(Count(se) == Approx(16.8e6).epsilon(0.01));
}

TEST_CASE("models: names and shapes equal torchvision's state dicts", "[stage][models][python]") {
  mlfd_test::TempDir tmp;
  for (const std::string arch : {"resnet18", "resnet50", "efficientnet_b0"}) {
    Net n = BuildModel(Full(arch));
    std::ostringstream ours;
    for (const auto& p : n->named_parameters()) ours << p.key() << " " << p.value().sizes() << "\n";
    for (const auto& b : n->named_buffers()) ours << b.key() << " " << b.value().sizes() << "\n";
    mlfd_test::WriteText(tmp / "ours.txt", ours.str());
    auto r = mlfd_test::RunPython(tmp.path(), R"PY(
import sys, torchvision
m = getattr(torchvision.models, sys.argv[1])()
ref = sorted(f"{k} {list(v.shape)}".replace(" ", "").replace("[]", "[]") for k, v in m.state_dict().items())
ours = sorted(l.replace(" ", "") for l in open(sys.argv[2]).read().splitlines())
missing = sorted(set(ref) - set(ours)); extra = sorted(set(ours) - set(ref))
print(len(ref), len(ours), missing[:5], extra[:5])
sys.exit(0 if not missing and not extra else 1)
)PY",
                                  arch + " " + (tmp / "ours.txt"));
    INFO(arch << ": " << r.out << r.err);
    CHECK(r.exit_code == 0);
  }
}

TEST_CASE("models: level shapes at full size", "[unit][models]") {
  torch::NoGradGuard no_grad;
  torch::Tensor x = torch::randn({1, 3, 224, 224});
  struct Case { std::string arch; std::map<std::string, std::vector<int64_t>> shapes; };
  std::vector<Case> cases = {
      {"resnet18", {{"stem", {1, 64, 56, 56}}, {"layer1", {1, 64, 56, 56}}, {"layer2", {1, 128, 28, 28}},
                    {"layer3", {1, 256, 14, 14}}, {"layer4", {1, 512, 7, 7}}, {"pool", {1, 512}},
                    {"embed", {1, 2048}}, {"logits", {1, 10}}}},
      {"resnet50", {{"layer4", {1, 2048, 7, 7}}, {"pool", {1, 2048}}, {"logits", {1, 10}}}},
      {"efficientnet_b0", {{"stem", {1, 32, 112, 112}}, {"stage1", {1, 16, 112, 112}}, {"stage3", {1, 40, 28, 28}},
                           {"stage6", {1, 192, 7, 7}}, {"head_conv", {1, 1280, 7, 7}}, {"embed", {1, 2048}}}},
      {"seresnext26t_32x4d", {{"stem", {1, 64, 56, 56}}, {"layer1", {1, 256, 56, 56}}, {"layer4", {1, 2048, 7, 7}},
                              {"logits", {1, 10}}}},
  };
  for (auto& c : cases) {
    ModelConfig cfg;
    cfg.arch = c.arch;
    Net n = BuildModel(cfg);  // embed_dim 2048 (skipped where the feature size is 2048)
    n->eval();
    std::vector<std::string> want;
    for (auto& [k, v] : c.shapes) want.push_back(k);
    LevelMap out = n->Forward(x, want);
    for (auto& [k, v] : c.shapes) {
      INFO(c.arch << " " << k);
      REQUIRE(out.count(k));
      CHECK(out[k].sizes().vec() == v);
    }
    auto ch = n->LevelChannels();
    for (auto& [k, v] : c.shapes)
      if (k != "logits") CHECK(ch[k] == v[1]);
  }
  Net r50 = BuildModel(Full("resnet50", 10));
  CHECK(r50->embed_dim() == 0);
  ModelConfig with = Full("resnet50", 10);
  with.embed_dim = 2048;
  CHECK(BuildModel(with)->embed_dim() == 0);  // skipped when equal to the feature size
}

TEST_CASE("models: tiny configs train, heads, drop-path, errors", "[unit][models]") {
  for (const std::string arch : {"resnet18", "resnet34", "resnet50", "efficientnet_b0", "seresnext26t_32x4d"}) {
    ModelConfig c;
    c.arch = arch;
    c.width = 0.25;
    c.small_stem = true;
    c.in_channels = 1;
    c.embed_dim = 64;
    c.head_classes = {3, 5};
    c.drop_path = 0.1;
    c.dropout = 0.3;
    Net n = BuildModel(c);
    torch::Tensor x = torch::randn({4, 1, 28, 28});
    torch::Tensor z0 = n->forward(x, 0), z1 = n->forward(x, 1);
    INFO(arch);
    CHECK(z0.sizes() == torch::IntArrayRef({4, 3}));
    CHECK(z1.sizes() == torch::IntArrayRef({4, 5}));
    (z0.sum() + z1.sum()).backward();
    int with_grad = 0;
    for (const auto& p : n->parameters()) with_grad += p.grad().defined();
    CHECK(with_grad == static_cast<int>(n->parameters().size()));
    n->eval();
    torch::NoGradGuard ng;
    CHECK(torch::equal(n->forward(x, 1), n->forward(x, 1)));  // dropout and drop-path off in eval
    CHECK(ModelConfig::FromJson(c.ToJson(), "t").ToJson() == c.ToJson());
    CHECK_THROWS_WITH(n->Forward(x, {"layer9"}), Catch::Contains("unknown level 'layer9'") && Catch::Contains("valid:"));
    CHECK(n->LevelNames().back() == "logits");
  }
  ModelConfig bad;
  bad.arch = "vgg16";
  CHECK_THROWS_WITH(BuildModel(bad), Catch::Contains("unknown architecture 'vgg16' (valid: resnet18"));
  CHECK_THROWS_WITH(ModelConfig::FromJson(nlohmann::json{{"arch", "resnet18"}, {"in_channels", 3}, {"head_classes", {2}}, {"typo", 1}}, "ck.h5"),
                    Catch::Contains("ck.h5: typo: unknown key"));
}

TEST_CASE("models: BatchNorm folded into the convolutions gives the same outputs, stays frozen, is never saved",
          "[unit][models]") {
  TempDir tmp;
  for (const std::string arch : {"resnet18", "resnet50", "efficientnet_b0", "seresnext26t_32x4d"}) {
    INFO(arch);
    ModelConfig c;
    c.arch = arch;
    c.width = 0.25;
    c.small_stem = true;
    c.in_channels = 3;
    c.embed_dim = 32;
    c.head_classes = {4};
    torch::manual_seed(2);
    Net n = BuildModel(c);
    // Statistics and affine parameters far from the identity, as a trained network's are.
    int norms = 0;
    {
      torch::NoGradGuard g;
      for (const auto& b : n->named_buffers())
        if (b.key().find("running_mean") != std::string::npos) b.value().normal_(0, 0.5), ++norms;
        else if (b.key().find("running_var") != std::string::npos) b.value().uniform_(0.2, 3.0);
      for (const auto& p : n->named_parameters())
        if (p.value().dim() == 1) p.value().uniform_(-0.5, 1.5);
    }
    n->eval();
    torch::Tensor x = torch::randn({6, 3, 28, 28});
    std::vector<std::string> levels = n->MapLevels();
    levels.push_back("logits");
    LevelMap before, after;
    {
      torch::NoGradGuard g;
      before = n->Forward(x, levels);
    }
    const auto names_before = n->named_parameters().keys();
    const int folded = FoldBatchNorm(*n);
    // Every BatchNorm that follows its convolution directly; SE-ResNeXt's stem BatchNorm follows
    // its three-convolution stem Sequential and is left as it is.
    CHECK(folded == (arch == "seresnext26t_32x4d" ? norms - 1 : norms));
    CHECK(HasFoldedNorm(*n));
    CHECK(FoldBatchNorm(*n) == 0);  // folding twice changes nothing
    {
      torch::NoGradGuard g;
      after = n->Forward(x, levels);
    }
    for (const auto& l : levels) {
      INFO(l);
      const double scale = std::max(1.0, before.at(l).abs().max().item<double>());
      CHECK((after.at(l) - before.at(l)).abs().max().item<double>() <= 1e-4 * scale);
    }
    CHECK(n->named_parameters().keys() == names_before);  // the checkpoint's names are unchanged
    n->train();
    CHECK_THROWS_WITH(n->forward(x), Catch::Contains("folded for inference was run in training mode"));
    n->eval();
    h5::File f = h5::File::Create(tmp / (arch + ".h5"));
    CHECK_THROWS_WITH(WriteModelState(f, "state", *n), Catch::Contains("BatchNorm folded for inference is not saved"));
  }
}

// The video ResNets (lib/models/video_resnet.cc): torchvision.models.video's counts, names and level
// shapes (the shapes and counts below were printed by torchvision 0.14 for a 1 x 3 x 4 x 32 x 32 clip).
TEST_CASE("models: video ResNets have torchvision's parameter counts", "[unit][models][video]") {
  Net r3d = BuildModel(Full("r3d_18", 400)), mc3 = BuildModel(Full("mc3_18", 400));
  Net r21d = BuildModel(Full("r2plus1d_18", 400));
  CHECK(Count(r3d) == 33371472);
  CHECK(Count(mc3) == 11695440);
  CHECK(Count(r21d) == 31505325);
  // Parameters and buffers (state-dict entries), as torchvision's state_dict().
  CHECK(r3d->named_parameters().size() + r3d->named_buffers().size() == 122);
  CHECK(mc3->named_parameters().size() + mc3->named_buffers().size() == 122);
  CHECK(r21d->named_parameters().size() + r21d->named_buffers().size() == 224);
  for (const auto* arch : {"r3d_18", "mc3_18", "r2plus1d_18"}) CHECK(IsVideoArch(arch));
  CHECK_FALSE(IsVideoArch("resnet18"));
}

TEST_CASE("models: video ResNet names and shapes equal torchvision's state dicts", "[stage][models][python][video]") {
  mlfd_test::TempDir tmp;
  std::string files;
  for (const std::string arch : {"r3d_18", "mc3_18", "r2plus1d_18"}) {
    Net n = BuildModel(Full(arch, 400));
    std::ostringstream ours;
    for (const auto& p : n->named_parameters()) ours << p.key() << " " << p.value().sizes() << "\n";
    for (const auto& b : n->named_buffers()) ours << b.key() << " " << b.value().sizes() << "\n";
    mlfd_test::WriteText(tmp / (arch + ".txt"), ours.str());
    files += " " + arch + " " + (tmp / (arch + ".txt"));
  }
  auto r = mlfd_test::RunPython(tmp.path(), R"PY(
import sys, torchvision.models.video as video
bad = 0
for arch, path in zip(sys.argv[1::2], sys.argv[2::2]):
    m = getattr(video, arch)()
    ref = sorted(f"{k} {list(v.shape)}".replace(" ", "") for k, v in m.state_dict().items())
    ours = sorted(l.replace(" ", "") for l in open(path).read().splitlines())
    missing = sorted(set(ref) - set(ours)); extra = sorted(set(ours) - set(ref))
    print(arch, len(ref), len(ours), missing[:5], extra[:5])
    bad += bool(missing or extra)
sys.exit(1 if bad else 0)
)PY",
                                files);
  INFO(r.out << r.err);
  CHECK(r.exit_code == 0);
}

TEST_CASE("models: video ResNet levels on a tiny clip and their options", "[unit][models][video]") {
  torch::NoGradGuard no_grad;
  torch::manual_seed(3);
  torch::Tensor x = torch::randn({1, 3, 4, 32, 32});
  using Shapes = std::map<std::string, std::vector<int64_t>>;
  const Shapes strided = {{"stem", {1, 64, 4, 16, 16}}, {"layer1", {1, 64, 4, 16, 16}}, {"layer2", {1, 128, 2, 8, 8}},
                          {"layer3", {1, 256, 1, 4, 4}}, {"layer4", {1, 512, 1, 2, 2}}, {"pool", {1, 512}},
                          {"embed", {1, 2048}}, {"logits", {1, 10}}};
  Shapes mc3 = strided;  // 1x3x3 convolutions and (1, 2, 2) downsampling keep the 4 frames
  mc3["layer2"] = {1, 128, 4, 8, 8};
  mc3["layer3"] = {1, 256, 4, 4, 4};
  mc3["layer4"] = {1, 512, 4, 2, 2};
  for (const auto& [arch, shapes] : std::vector<std::pair<std::string, Shapes>>{
           {"r3d_18", strided}, {"mc3_18", mc3}, {"r2plus1d_18", strided}}) {
    INFO(arch);
    ModelConfig cfg;
    cfg.arch = arch;  // embed_dim 2048 by default, 10 classes
    Net n = BuildModel(cfg);
    n->eval();
    CHECK(n->LevelNames() == std::vector<std::string>{"stem", "layer1", "layer2", "layer3", "layer4", "pool", "embed", "logits"});
    std::vector<std::string> want;
    for (const auto& [k, v] : shapes) want.push_back(k);
    LevelMap out = n->Forward(x, want);
    for (const auto& [k, v] : shapes) {
      INFO(k);
      REQUIRE(out.count(k));
      CHECK(out[k].sizes().vec() == v);
    }
    CHECK(torch::allclose(out["logits"], n->forward(x), 1e-5, 1e-6));
    auto ch = n->LevelChannels();
    for (const auto& [k, v] : shapes)
      if (k != "logits") CHECK(ch[k] == v[1]);
    CHECK_THROWS_WITH(n->forward(torch::randn({1, 3, 32, 32})),
                      Catch::Contains(arch + " takes clips N x C x T x H x W, not a 4-D input"));

    // Small stem (no spatial stride), width 0.25, 1 channel, embed, two heads, drop-path: trains.
    ModelConfig small;
    small.arch = arch;
    small.small_stem = true;
    small.width = 0.25;
    small.in_channels = 1;
    small.embed_dim = 24;
    small.head_classes = {3, 5};
    small.drop_path = 0.2;
    small.dropout = 0.3;
    Net s = BuildModel(small);
    torch::Tensor clip = torch::randn({2, 1, 4, 16, 16});
    LevelMap sl = s->Forward(clip, {"stem", "layer4", "embed"});
    CHECK(sl["stem"].sizes().vec() == std::vector<int64_t>{2, 16, 4, 16, 16});
    CHECK(sl["layer4"].size(1) == 128);
    CHECK(sl["embed"].sizes().vec() == std::vector<int64_t>{2, 24});
    {
      torch::AutoGradMode grad(true);
      s->train();
      torch::Tensor z0 = s->forward(clip, 0), z1 = s->forward(clip, 1);
      CHECK(z1.sizes().vec() == std::vector<int64_t>{2, 5});
      (z0.sum() + z1.sum()).backward();
      int with_grad = 0;
      for (const auto& p : s->parameters()) with_grad += p.grad().defined();
      CHECK(with_grad == static_cast<int>(s->parameters().size()));
    }
    s->eval();
    CHECK(torch::equal(s->forward(clip, 1), s->forward(clip, 1)));  // dropout and drop-path off
    CHECK(ModelConfig::FromJson(small.ToJson(), "t").ToJson() == small.ToJson());
  }
}

TEST_CASE("models: video ResNets folded and channels-last give the same outputs", "[unit][models][video]") {
  for (const std::string arch : {"r3d_18", "mc3_18", "r2plus1d_18"}) {
    INFO(arch);
    ModelConfig c;
    c.arch = arch;
    c.width = 0.25;
    c.small_stem = true;
    c.embed_dim = 32;
    c.head_classes = {4};
    torch::manual_seed(2);
    Net n = BuildModel(c);
    int norms = 0;
    {
      torch::NoGradGuard g;
      for (const auto& b : n->named_buffers())
        if (b.key().find("running_mean") != std::string::npos) b.value().normal_(0, 0.5), ++norms;
        else if (b.key().find("running_var") != std::string::npos) b.value().uniform_(0.2, 3.0);
      for (const auto& p : n->named_parameters())
        if (p.value().dim() == 1) p.value().uniform_(-0.5, 1.5);
    }
    n->eval();
    torch::Tensor x = torch::randn({2, 3, 4, 16, 16});
    std::vector<std::string> levels = n->MapLevels();
    levels.push_back("logits");
    LevelMap before, after;
    {
      torch::NoGradGuard g;
      before = n->Forward(x, levels);
    }
    const auto names_before = n->named_parameters().keys();
    PrepareFrozen(*n);
    // Every BatchNorm, also r2plus1d's that follow a (2+1)-D Sequential ending in its 3x1x1 conv.
    CHECK(FoldBatchNorm(*n) == 0);
    int folded = 0;
    for (const auto& m : n->modules())
      if (auto* b = dynamic_cast<NormImpl*>(m.get())) folded += b->folded;
    CHECK(folded == norms);
    for (const auto& p : n->parameters())
      if (p.dim() == 5) CHECK(p.is_contiguous(torch::MemoryFormat::ChannelsLast3d));
    {
      torch::NoGradGuard g;
      after = n->Forward(x, levels);
    }
    for (const auto& l : levels) {
      INFO(l);
      const double scale = std::max(1.0, before.at(l).abs().max().item<double>());
      const double diff = (after.at(l) - before.at(l)).abs().max().item<double>();
      CHECK(diff <= 1e-4 * scale);
    }
    CHECK(n->named_parameters().keys() == names_before);
  }
}

TEST_CASE("models: a joint teacher's members are all image or all video networks", "[unit][models][video]") {
  ModelConfig member = Full("r3d_18", 3);
  HeadInfo h;
  h.dataset = "clips";
  h.class_names = {"a", "b", "c"};
  h.mean = h.std = {0.5, 0.5, 0.5};
  h.height = h.width = 32;
  h.channels = 3;
  JointSpec spec;
  spec.teachers = {JointTeacher{"", "", "layer4", member, {h}}};
  spec.adaptor_dim = 8;
  spec.cout = 8;
  spec.stages = 0;
  spec.input_size = 32;
  spec.teacher_map_size = {2};
  spec.fuse_size = 2;
  spec.embedded = true;
  spec.own_teacher = {0};
  ModelConfig joint;
  joint.arch = "joint";
  joint.head_classes = {3};
  joint.embed_dim = 0;
  joint.joint = spec.ToJson();
  CHECK_THROWS_WITH(BuildModel(joint), Catch::Contains("joint teacher 0: r3d_18 is a video network") &&
                                           Catch::Contains("fuses image feature maps"));
  // Declared a video joint (clips of 4 frames), it builds; an image member is then refused.
  spec.frames = 4;
  spec.fuse_frames = 1;
  joint.joint = spec.ToJson();
  Net net = BuildModel(joint);
  CHECK(IsVideoModel(net->config()));
  net->eval();
  torch::NoGradGuard g;
  CHECK(net->Forward(torch::rand({2, 3, 4, 32, 32}), {"fused", "logits"}).at("fused").sizes() ==
        torch::IntArrayRef({2, 8, 1, 2, 2}));
  spec.teachers[0].model = Full("resnet18", 3);
  joint.joint = spec.ToJson();
  CHECK_THROWS_WITH(BuildModel(joint), Catch::Contains("resnet18 is an image network") &&
                                           Catch::Contains("fuses video feature maps"));
  spec.fuse_frames = 0;  // frames without fuse_frames: an inconsistent specification
  joint.joint = spec.ToJson();
  CHECK_THROWS_WITH(BuildModel(joint), Catch::Contains("frames and fuse_frames must both be > 0"));
}
