// PyTorch interoperability (tools/torch_to_h5.py, tools/h5_to_torch.py, tools/mlfd_torch.py),
// checked end to end against torchvision as the independent reference: a seeded random
// torchvision ResNet-18 imported into our checkpoint gives, in our `evaluate`, the logits
// torchvision computes on the same stored images; teachers trained by our `train_teacher`
// (small stem, width multiplier, embed layer; several heads; the standard config) give in PyTorch
// the logits `evaluate` wrote; bad inputs fail with one clear line and write nothing.
// The video ResNets (r3d_18, mc3_18, r2plus1d_18) go both ways too: seeded random torchvision
// networks imported with torch_to_h5.py give torchvision's logits in our evaluate's code path, and
// our networks exported with h5_to_torch.py give ours in torchvision / mlfd_torch.
// Needs the system Python with torch, torchvision and h5py; without them the tests only warn.
#include <catch2/catch.hpp>
#include <torch/torch.h>

#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <opencv2/core.hpp>
#include <opencv2/imgcodecs.hpp>
#include <random>

#include "models/checkpoint.h"
#include "models/model.h"
#include "test_util.h"
#include "util/error.h"
#include "util/provenance.h"

using mlfd::Msg;
using mlfd_test::RunPython;
using mlfd_test::RunResult;
using mlfd_test::RunShell;
using mlfd_test::RunTool;
using mlfd_test::TempDir;
namespace fs = std::filesystem;

namespace {

const std::string kTools = std::string(MLFD_SOURCE_DIR) + "/tools";

bool HavePyTorch() {
  static int have = -1;
  if (have < 0) {
    RunResult r = RunShell(mlfd_test::SystemPython() + " -c 'import torch, torchvision, h5py, numpy'");
    have = r.exit_code == 0 ? 1 : 0;
  }
  if (!have) WARN("system Python lacks torch/torchvision/h5py: interop test not run");
  return have == 1;
}

// One thread everywhere: the networks are tiny, and OpenMP threads competing with other processes
// on a loaded 2-core machine can slow a run down 50-fold.
RunResult RunToolPy(const std::string& script, const std::string& args) {
  return RunShell("OMP_NUM_THREADS=1 " + mlfd_test::SystemPython() + " " + kTools + "/" + script + " " + args);
}

// A store of `classes` classes of uniform-noise RGB images (full 0..255 range, so a wrong
// normalisation or channel order shows), written as PNG by OpenCV and read by prepare_data.
std::string MakeNoiseStore(const TempDir& tmp, const std::string& name, int classes, int per_class,
                           int size, uint64_t seed) {
  std::string root = tmp / (name + "_imgs");
  cv::RNG rng(seed);
  for (int c = 0; c < classes; ++c) {
    fs::create_directories(Msg(root, "/class", c));
    for (int k = 0; k < per_class; ++k) {
      cv::Mat img(size, size, CV_8UC3);
      rng.fill(img, cv::RNG::UNIFORM, 0, 256);
      REQUIRE(cv::imwrite(Msg(root, "/class", c, "/", k, ".png"), img));
    }
  }
  std::string manifest = tmp / (name + ".json");
  mlfd_test::WriteText(
      manifest, Msg(R"({"name": ")", name, R"(", "classes": "folders", "sources": [{"kind": "folder", "root": ")",
                    root, R"("}], "split": {"mode": "stratified", "fractions": {"train": 0.5, "val": 0.25, "test": 0.25}, "seed": 1},)",
                    R"("image": {"size": )", size, R"(, "channels": 3}})"));
  std::string store = tmp / (name + ".h5");
  RunResult r = RunTool("prepare_data", "-v 0 " + manifest + " " + store);
  INFO(r.err);
  REQUIRE(r.exit_code == 0);
  return store;
}

// Our evaluate's logits for a split (and dataset).
std::string EvalLogits(const TempDir& tmp, const std::string& ckpt, const std::string& store,
                       const std::string& out_name, const std::string& extra = "") {
  std::string out = tmp / out_name;
  RunResult r = RunTool("evaluate", "-v 0 --device cpu --threads 1 --split test --logits-out " + out + " " +
                                        extra + " " + ckpt + " " + store);
  INFO(r.err);
  REQUIRE(r.exit_code == 0);
  return out;
}

// Runs a Python check that prints the max abs difference as its last line; returns it.
double PythonMaxDiff(const TempDir& tmp, const std::string& code, const std::string& args) {
  RunResult r = RunPython(tmp.path(), code, args);
  INFO("python stdout: " << r.out << "\npython stderr: " << r.err);
  REQUIRE(r.exit_code == 0);
  auto pos = r.out.find_last_of('\n', r.out.size() >= 2 ? r.out.size() - 2 : 0);
  std::string last = r.out.substr(pos == std::string::npos ? 0 : pos + 1);
  return std::stod(last);
}

// Reference normalisation, written independently of mlfd_torch.normalize: float64 (x/255-m)/s.
const char* kPyPrelude = R"PY(
import sys, json, h5py, numpy as np, torch
torch.set_num_threads(1)
def stored(store, logits_file, mean, std):
    """The rows evaluate used, normalised in float64 from the raw uint8 pixels, and its logits."""
    l = h5py.File(logits_file, 'r')
    rows = l['indices'][()]
    with h5py.File(store, 'r') as s:
        x = s['images'][()][rows].astype(np.float64) / 255.0   # N H W C, RGB
        assert (s['labels'][()][rows] == l['labels'][()]).all()
    x = (x - np.array(mean)) / np.array(std)
    return torch.from_numpy(x.transpose(0, 3, 1, 2).astype(np.float32)), l['logits'][()]
)PY";

}  // namespace

TEST_CASE("torch_to_h5: an imported torchvision resnet18 gives torchvision's logits in evaluate",
          "[stage][interop]") {
  if (!HavePyTorch()) return;
  TempDir tmp;
  std::string store = MakeNoiseStore(tmp, "noise", 3, 8, 32, 11);
  std::string ckpt = tmp / "imported.h5";
  RunResult r = RunToolPy("torch_to_h5.py", "--random-seed 7 --num-classes 3 --store " + store + " --out " + ckpt);
  INFO(r.err);
  REQUIRE(r.exit_code == 0);
  auto summary = nlohmann::json::parse(r.out);
  CHECK(summary["verified_max_abs_diff"].get<double>() < 1e-5);
  std::string logits = EvalLogits(tmp, ckpt, store, "imported_logits.h5");

  // torchvision's own network (same seed), on the stored pixels, with the store's normalisation.
  double diff = PythonMaxDiff(tmp, std::string(kPyPrelude) + R"PY(
import torchvision
sys.path.insert(0, sys.argv[4])
from torch_to_h5 import random_torchvision     # the weights; the forward pass is torchvision's
ckpt, store, logits_file = sys.argv[1:4]
net = torchvision.models.resnet18(num_classes=3)
net.load_state_dict(random_torchvision('resnet18', 3, 7))
net.eval()
with h5py.File(store, 'r') as s:
    mean, std, names = list(s.attrs['mean']), list(s.attrs['std']), [n.decode() for n in s['class_names'][()]]
with h5py.File(ckpt, 'r') as c:
    assert c.attrs['kind'] == 'imported'
    prov = json.loads(c.attrs['provenance'])
    assert prov['tool'] == 'torch_to_h5'
    import hashlib
    assert prov['inputs']['store']['sha256'] == hashlib.sha256(open(store, 'rb').read()).hexdigest()
    heads = json.loads(c.attrs['datasets'])
    assert heads[0]['dataset'] == 'noise' and heads[0]['class_names'] == names, heads
    assert [n.decode() for n in c['class_names/noise'][()]] == names
    assert np.allclose(heads[0]['mean'], mean) and np.allclose(heads[0]['std'], std)
x, ours = stored(store, logits_file, mean, std)
with torch.no_grad():
    ref = net(x).numpy()
assert ref.shape == ours.shape, (ref.shape, ours.shape)
assert np.abs(ref).max() > 1e-2     # not a degenerate comparison
print(float(np.abs(ref - ours).max()))
)PY",
                              ckpt + " " + store + " " + logits + " " + kTools);
  WARN("torchvision resnet18 vs our evaluate, max abs logit difference: " << diff);
  CHECK(diff < 1e-4);
}

TEST_CASE("torch_to_h5: mismatched inputs fail with one clear line and write nothing", "[stage][interop]") {
  if (!HavePyTorch()) return;
  TempDir tmp;
  std::string store = MakeNoiseStore(tmp, "noise", 3, 4, 32, 12);
  std::string out = tmp / "x.h5";
  // --num-classes disagrees with the store.
  RunResult r = RunToolPy("torch_to_h5.py", "--random-seed 1 --num-classes 5 --store " + store + " --out " + out);
  CHECK(r.exit_code == 1);
  CHECK(r.err.find("--num-classes 5") != std::string::npos);
  CHECK(r.err.find("has 3 classes") != std::string::npos);
  CHECK_FALSE(mlfd_test::FileExists(out));
  // A state dict with 10 outputs (e.g. trained on another dataset), and one that is no ResNet-50.
  RunResult py = RunPython(tmp.path(), R"PY(
import sys, torch, torchvision
torch.save(torchvision.models.resnet18(num_classes=10).state_dict(), sys.argv[1] + '/ten.pt')
torch.save(torchvision.models.resnet18(num_classes=3).state_dict(), sys.argv[1] + '/three.pt')
)PY", tmp.path());
  INFO(py.err);
  REQUIRE(py.exit_code == 0);
  r = RunToolPy("torch_to_h5.py", "--weights " + (tmp / "ten.pt") + " --store " + store + " --out " + out);
  CHECK(r.exit_code == 1);
  CHECK(r.err.find("10 output classes") != std::string::npos);
  CHECK(r.err.find("has 3") != std::string::npos);
  r = RunToolPy("torch_to_h5.py", "--arch resnet50 --weights " + (tmp / "three.pt") + " --store " + store +
                                      " --out " + out);
  CHECK(r.exit_code == 1);
  CHECK(r.err.find("is not a torchvision resnet50") != std::string::npos);
  CHECK(r.err.find("missing layer1.0.conv3.weight") != std::string::npos);
  CHECK_FALSE(mlfd_test::FileExists(out));
  // Never overwrites a file that is not a checkpoint (here: the image store itself).
  std::string before = mlfd_test::ReadText(store);
  r = RunToolPy("torch_to_h5.py", "--random-seed 1 --store " + store + " --out " + store);
  CHECK(r.exit_code == 1);
  CHECK(r.err.find("refusing to overwrite") != std::string::npos);
  CHECK(mlfd_test::ReadText(store) == before);
  // No leftover temporary files.
  for (const auto& e : fs::directory_iterator(tmp.path()))
    CHECK(e.path().filename().string().find(".tmp-") == std::string::npos);
  // Usage error: exit 2.
  CHECK(RunToolPy("torch_to_h5.py", "--store " + store).exit_code == 2);
}

TEST_CASE("h5_to_torch: trained teachers give evaluate's logits in PyTorch", "[stage][interop]") {
  if (!HavePyTorch()) return;
  TempDir tmp;
  std::string a = MakeNoiseStore(tmp, "noise_a", 3, 8, 32, 21);
  std::string b = MakeNoiseStore(tmp, "noise_b", 2, 8, 32, 22);
  // A small learning rate: lr 0.1 on 8-image batches of noise drives the logits to 1e3..1e11, where
  // float32 rounding alone exceeds an absolute 1e-4.
  const std::string common = "-v 0 --threads 1 --device cpu --epochs 1 --batch-size 8 --workers 1 --seed 5 --lr 0.01 ";

  // Check: the exported .pt + .json rebuilt as mlfd_torch.MLFDResNet (or torchvision) reproduce
  // evaluate's logits for dataset argv[4] on its store.
  const std::string check = std::string(kPyPrelude) + R"PY(
pt, side, store, dataset, logits_file, tools, use_tv = sys.argv[1:8]
sys.path.insert(0, tools)
import mlfd_torch
cfg = json.load(open(side))
head = [d for d in cfg['datasets'] if d['dataset'] == dataset][0]
if use_tv == '1':
    import torchvision
    net = getattr(torchvision.models, cfg['model']['arch'])(num_classes=cfg['model']['head_classes'][0])
else:
    net = mlfd_torch.MLFDResNet.from_config(cfg['model'])
net.load_state_dict(torch.load(pt), strict=True)
net.eval()
x, ours = stored(store, logits_file, head['mean'], head['std'])
with torch.no_grad():
    ref = net(x) if use_tv == '1' else net(x, head['head'])
ref = ref.numpy()[:, head['label_offset']:head['label_offset'] + len(head['class_names'])]
assert ref.shape == ours.shape, (ref.shape, ours.shape)
assert np.abs(ref).max() > 1e-3
print(float(np.abs(ref - ours).max()))
)PY";

  SECTION("resnet18, small stem, width 0.25, embed 32") {
    std::string ckpt = tmp / "small.h5";
    RunResult r = RunTool("train_teacher", common + "--arch resnet18 --small-stem --width 0.25 --embed-dim 32 --out " +
                                               ckpt + " " + a);
    INFO(r.err);
    REQUIRE(r.exit_code == 0);
    std::string logits = EvalLogits(tmp, ckpt, a, "small_logits.h5");
    r = RunToolPy("h5_to_torch.py", ckpt + " " + (tmp / "small.pt"));
    INFO(r.err);
    REQUIRE(r.exit_code == 0);
    REQUIRE(mlfd_test::FileExists(tmp / "small.json"));
    double diff = PythonMaxDiff(tmp, check, Msg(tmp / "small.pt", " ", tmp / "small.json", " ", a, " noise_a ",
                                                logits, " ", kTools, " 0"));
    WARN("resnet18 small-stem/width 0.25/embed 32: mlfd_torch vs evaluate, max abs diff " << diff);
    CHECK(diff < 1e-4);
    // Not a torchvision network: --torchvision explains why and writes nothing.
    r = RunToolPy("h5_to_torch.py", "--torchvision " + ckpt + " " + (tmp / "tv.pt"));
    CHECK(r.exit_code == 1);
    CHECK(r.err.find("small_stem") != std::string::npos);
    CHECK(r.err.find("width is 0.25") != std::string::npos);
    CHECK(r.err.find("embed") != std::string::npos);
    CHECK_FALSE(mlfd_test::FileExists(tmp / "tv.pt"));
  }

  SECTION("resnet50 joint baseline, two heads, drop-path, width 0.1015625 (64w = 6.5 rounds up)") {
    std::string ckpt = tmp / "joint.h5";
    RunResult r = RunTool("train_teacher", common + "--arch resnet50 --small-stem --width 0.1015625 --embed-dim 24 "
                                               "--drop-path 0.1 --out " + ckpt + " " + a + " " + b);
    INFO(r.err);
    REQUIRE(r.exit_code == 0);
    r = RunToolPy("h5_to_torch.py", ckpt + " " + (tmp / "joint.pt"));
    INFO(r.err);
    REQUIRE(r.exit_code == 0);
    for (auto [name, store] : {std::pair<std::string, std::string>{"noise_a", a}, {"noise_b", b}}) {
      std::string logits = EvalLogits(tmp, ckpt, store, name + "_logits.h5", "--dataset " + name);
      double diff = PythonMaxDiff(tmp, check, Msg(tmp / "joint.pt", " ", tmp / "joint.json", " ", store, " ", name, " ",
                                                  logits, " ", kTools, " 0"));
      WARN("resnet50 two heads, head " << name << ": mlfd_torch vs evaluate, max abs diff " << diff);
      CHECK(diff < 1e-4);
    }
    auto side = nlohmann::json::parse(mlfd_test::ReadText(tmp / "joint.json"));
    CHECK(side["model"]["head_classes"] == std::vector<int>{3, 2});
    CHECK(side["torchvision_compatible"] == false);
  }

  SECTION("dropout is off in evaluation: evaluate matches PyTorch's eval mode") {
    std::string ckpt = tmp / "drop.h5";
    RunResult r = RunTool("train_teacher", common + "--arch resnet18 --small-stem --width 0.25 --embed-dim 32 "
                                               "--dropout 0.5 --out " + ckpt + " " + a);
    INFO(r.err);
    REQUIRE(r.exit_code == 0);
    std::string logits = EvalLogits(tmp, ckpt, a, "drop_logits.h5");
    r = RunToolPy("h5_to_torch.py", ckpt + " " + (tmp / "drop.pt"));
    INFO(r.err);
    REQUIRE(r.exit_code == 0);
    double diff = PythonMaxDiff(tmp, check, Msg(tmp / "drop.pt", " ", tmp / "drop.json", " ", a, " noise_a ",
                                                logits, " ", kTools, " 0"));
    WARN("resnet18 with dropout 0.5: mlfd_torch (eval) vs evaluate, max abs diff " << diff);
    CHECK(diff < 1e-4);
  }

  SECTION("standard config (no small stem, width 1, no embed) loads into torchvision.models.resnet18") {
    std::string ckpt = tmp / "std.h5";
    RunResult r = RunTool("train_teacher", common + "--arch resnet18 --embed-dim 0 --out " + ckpt + " " + a);
    INFO(r.err);
    REQUIRE(r.exit_code == 0);
    std::string logits = EvalLogits(tmp, ckpt, a, "std_logits.h5");
    r = RunToolPy("h5_to_torch.py", "--torchvision " + ckpt + " " + (tmp / "std.pt"));
    INFO(r.err);
    REQUIRE(r.exit_code == 0);
    CHECK(nlohmann::json::parse(r.out)["torchvision_max_abs_diff"].get<double>() < 1e-5);
    double diff = PythonMaxDiff(tmp, check, Msg(tmp / "std.pt", " ", tmp / "std.json", " ", a, " noise_a ", logits,
                                                " ", kTools, " 1"));
    WARN("standard resnet18: torchvision vs evaluate, max abs diff " << diff);
    CHECK(diff < 1e-4);
  }
}

namespace {

// A float32 tensor as raw contiguous bytes (numpy.fromfile reads it back).
void WriteRaw(const std::string& path, const torch::Tensor& t) {
  torch::Tensor c = t.to(torch::kFloat32).contiguous();
  std::ofstream f(path, std::ios::binary);
  f.write(reinterpret_cast<const char*>(c.data_ptr<float>()), static_cast<std::streamsize>(c.numel() * sizeof(float)));
  REQUIRE(f.good());
}

// What evaluate does with a checkpoint (LoadCheckpoint, PrepareFrozen: BatchNorm folded,
// channels-last-3d) before its forward passes, without gradients; the logits of head `head`.
torch::Tensor EvaluateLogits(const std::string& ckpt, const torch::Tensor& x, int head = 0) {
  mlfd::LoadedCheckpoint ck = mlfd::LoadCheckpoint(ckpt);
  mlfd::PrepareFrozen(*ck.net);
  torch::NoGradGuard no_grad;
  return ck.net->forward(x, head);
}

}  // namespace

TEST_CASE("interop: torchvision video ResNets move both ways with the same logits", "[stage][interop][video]") {
  if (!HavePyTorch()) return;
  TempDir tmp;
  torch::manual_seed(17);
  const torch::Tensor x = torch::randn({2, 3, 4, 32, 32});  // 2 clips of 4 frames, 32 x 32
  WriteRaw(tmp / "x.f32", x);
  const std::vector<std::string> archs{"r3d_18", "mc3_18", "r2plus1d_18"};

  // Import: a seeded random torchvision network (random BatchNorm statistics too) -> our checkpoint.
  for (const auto& arch : archs) {
    RunResult r = RunToolPy("torch_to_h5.py", "--arch " + arch + " --random-seed 7 --num-classes 3 --dataset clips --out " +
                                                  (tmp / (arch + ".h5")));
    INFO(arch << ": " << r.err);
    REQUIRE(r.exit_code == 0);
    CHECK(nlohmann::json::parse(r.out)["verified_max_abs_diff"].get<double>() < 1e-5);
    WriteRaw(tmp / (arch + ".logits.f32"), EvaluateLogits(tmp / (arch + ".h5"), x));
  }

  // Export: our networks with random weights and BatchNorm statistics -> .pt; the standard config
  // (no small stem, width 1, no embed, one head) must load into torchvision (--torchvision), the
  // MLFD config (small stem, width 0.25, embed 16, two heads) into mlfd_torch.MLFDVideoResNet.
  struct Export { std::string name, arch; bool standard; };
  const std::vector<Export> exports{{"std_r3d", "r3d_18", true},        {"std_mc3", "mc3_18", true},
                                    {"std_r2plus1d", "r2plus1d_18", true}, {"mlfd_mc3", "mc3_18", false},
                                    {"mlfd_r2plus1d", "r2plus1d_18", false}};
  for (const auto& e : exports) {
    mlfd::ModelConfig c;
    c.arch = e.arch;
    c.head_classes = e.standard ? std::vector<int>{3} : std::vector<int>{3, 2};
    c.embed_dim = e.standard ? 0 : 16;
    c.small_stem = !e.standard;
    c.width = e.standard ? 1.0 : 0.25;
    torch::manual_seed(5);
    mlfd::Net net = mlfd::BuildModel(c);
    {
      torch::NoGradGuard g;
      for (const auto& b : net->named_buffers())
        if (b.key().find("running_mean") != std::string::npos) b.value().uniform_(-0.2, 0.2);
        else if (b.key().find("running_var") != std::string::npos) b.value().uniform_(0.5, 2.0);
      for (const auto& p : net->named_parameters())  // as torch_to_h5's random_torchvision
        if (p.value().dim() == 1 && p.key().find("bias") != std::string::npos) p.value().uniform_(-0.2, 0.2);
        else if (p.value().dim() == 1) p.value().uniform_(0.5, 1.5);
        else if (p.value().dim() == 2) p.value().normal_(0, 0.1);  // Linear: logits of order 1
    }
    mlfd::CheckpointMeta meta;
    meta.model = c;
    for (int h = 0; h < static_cast<int>(c.head_classes.size()); ++h) {
      mlfd::HeadInfo info;
      info.dataset = Msg("clips", h);
      for (int k = 0; k < c.head_classes[static_cast<size_t>(h)]; ++k) info.class_names.push_back(Msg("c", k));
      info.mean = {0.45, 0.45, 0.45};
      info.std = {0.225, 0.225, 0.225};
      info.height = info.width = 32;
      info.channels = 3;
      info.head = h;
      meta.datasets.push_back(info);
    }
    const std::string ckpt = tmp / (e.name + ".h5");
    mlfd::SaveCheckpoint(ckpt, *net, meta, nullptr, mlfd::Provenance());
    for (int h = 0; h < static_cast<int>(c.head_classes.size()); ++h)
      WriteRaw(tmp / Msg(e.name, ".logits", h, ".f32"), EvaluateLogits(ckpt, x, h));
    RunResult r = RunToolPy("h5_to_torch.py", (e.standard ? "--torchvision " : "") + ckpt + " " + (tmp / (e.name + ".pt")));
    INFO(e.name << ": " << r.err);
    REQUIRE(r.exit_code == 0);
    auto summary = nlohmann::json::parse(r.out);
    CHECK(summary["torchvision_compatible"] == e.standard);
    if (e.standard) CHECK(summary["torchvision_max_abs_diff"].get<double>() < 1e-5);
  }
  // Not a torchvision network: --torchvision says why and writes nothing.
  RunResult no = RunToolPy("h5_to_torch.py", "--torchvision " + (tmp / "mlfd_mc3.h5") + " " + (tmp / "tv.pt"));
  CHECK(no.exit_code == 1);
  CHECK(no.err.find("small_stem is on (torchvision's stem has spatial stride 2") != std::string::npos);
  CHECK_FALSE(mlfd_test::FileExists(tmp / "tv.pt"));

  // The references, computed by torchvision's own forward passes (and MLFDVideoResNet for the MLFD
  // configs); one Python process prints "<name> <max abs diff>" per comparison.
  RunResult py = RunPython(tmp.path(), R"PY(
import sys, json, numpy as np, torch, torchvision.models.video as video
torch.set_num_threads(1)
d = sys.argv[1]
sys.path.insert(0, sys.argv[2])
from torch_to_h5 import random_torchvision
import mlfd_torch
x = torch.from_numpy(np.fromfile(d + '/x.f32', dtype=np.float32).reshape(2, 3, 4, 32, 32))
def compare(name, net, ours_file, head=None):
    net.eval()
    with torch.no_grad():
        ref = (net(x) if head is None else net(x, head)).numpy()
    ours = np.fromfile(ours_file, dtype=np.float32).reshape(ref.shape)
    assert np.abs(ref).max() > 1e-2, name     # not a degenerate comparison
    print(name, float(np.abs(ref - ours).max()), float(np.abs(ref).max()))
for arch in ('r3d_18', 'mc3_18', 'r2plus1d_18'):
    net = getattr(video, arch)(num_classes=3)
    net.load_state_dict(random_torchvision(arch, 3, 7))
    compare('import_' + arch, net, '%s/%s.logits.f32' % (d, arch))
for name, arch in (('std_r3d', 'r3d_18'), ('std_mc3', 'mc3_18'), ('std_r2plus1d', 'r2plus1d_18')):
    net = getattr(video, arch)(num_classes=3)
    net.load_state_dict(torch.load('%s/%s.pt' % (d, name)), strict=True)
    compare('export_' + name, net, '%s/%s.logits0.f32' % (d, name))
for name in ('mlfd_mc3', 'mlfd_r2plus1d'):
    side = json.load(open('%s/%s.json' % (d, name)))
    net = mlfd_torch.build_model(side['model'])
    net.load_state_dict(torch.load('%s/%s.pt' % (d, name)), strict=True)
    for h in range(2):
        compare('export_%s_head%d' % (name, h), net, '%s/%s.logits%d.f32' % (d, name, h), h)
)PY",
                               tmp.path() + " " + kTools);
  INFO("python stdout: " << py.out << "\npython stderr: " << py.err);
  REQUIRE(py.exit_code == 0);
  std::istringstream lines(py.out);
  std::string name;
  double diff = 0, size = 0;
  int compared = 0;
  while (lines >> name >> diff >> size) {
    WARN("video interop " << name << ": max abs logit difference " << diff << " (max abs logit " << size << ")");
    CHECK(diff < 1e-4);
    ++compared;
  }
  CHECK(compared == 10);  // 3 imports, 3 exports into torchvision, 2 x 2 heads into MLFDVideoResNet
}
