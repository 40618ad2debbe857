// Video clips (action recognition): frame sampling (uniform, every k-th up to a maximum, padding
// and refusal of short videos), the clip store written by prepare_data from tiny videos written
// here with cv::VideoWriter (MJPG in .avi, H.264 in .mp4) and from frame folders, read
// back with h5py (one clip a chunk) and with ClipStore, bad videos listed, and the layouts of
// UCF101, HMDB51 and Kinetics-400 read through the shipped data_manifests/*.json.
#include <catch2/catch.hpp>
#include <filesystem>
#include <map>
#include <opencv2/imgcodecs.hpp>
#include <opencv2/videoio.hpp>
#include <set>

#include "data/clip_store.h"
#include "data/clips.h"
#include "data/image_store.h"
#include "data/prepare.h"
#include "data/source_readers.h"
#include "test_util.h"
#include "util/error.h"
#include "util/provenance.h"

using namespace mlfd;
using mlfd_test::RunTool;
using mlfd_test::TempDir;
using mlfd_test::WriteText;
namespace fs = std::filesystem;

namespace {

ClipSampling Uniform(int t, bool pad = true) {
  ClipSampling s;
  s.frames = t;
  s.pad = pad;
  return s;
}

ClipSampling Step(int k, int t, bool pad = true) {
  ClipSampling s;
  s.mode = ClipSampling::Mode::kStep;
  s.step = k;
  s.frames = t;
  s.pad = pad;
  return s;
}

// The grey level of frame i of video v: distinct per frame, so a stored frame names its source.
int Level(int v, int i) { return 20 + 12 * i + 3 * v; }

// A video of `frames` solid grey frames (Level(v, i)), 32 x 24, at 25 fps.
void WriteVideo(const std::string& path, int frames, int v = 0) {
  fs::create_directories(fs::path(path).parent_path());
  const bool mp4 = fs::path(path).extension() == ".mp4";
  cv::VideoWriter w(path,
                    mp4 ? cv::VideoWriter::fourcc('a', 'v', 'c', '1')
                        : cv::VideoWriter::fourcc('M', 'J', 'P', 'G'),
                    25.0, cv::Size(32, 24));
  REQUIRE(w.isOpened());
  for (int i = 0; i < frames; ++i) {
    int l = Level(v, i);
    w.write(cv::Mat(24, 32, CV_8UC3, cv::Scalar(l, l, l)));
  }
  w.release();
}

std::string ShippedManifest(const std::string& name) {
  return std::string(MLFD_SOURCE_DIR) + "/data_manifests/" + name + ".json";
}

std::vector<RawSample> ReadSources(const Manifest& m, const std::string& data_root) {
  std::vector<RawSample> out;
  for (const auto& src : m.sources) {
    SourceContext ctx{m, src, data_root};
    for (auto& s : ReadSource(ctx)) out.push_back(std::move(s));
  }
  return out;
}

std::map<std::string, int> CountSplits(const std::vector<RawSample>& samples) {
  std::map<std::string, int> n;
  for (const auto& s : samples) n[s.split]++;
  return n;
}

template <typename F>
std::string ErrorOf(F&& f) {
  try {
    f();
  } catch (const Error& e) {
    return e.what();
  }
  return "";
}

std::string VideoFolderManifest(const std::string& root, int size) {
  return Msg(
      R"({"name": "vids", "classes": "folders", "sources": [{"kind": "video_folder", "root": ")",
      root,
      R"("}], "split": {"mode": "stratified", "fractions": {"train": 0.6, "val": 0.2, "test": 0.2}, "seed": 1},)",
      R"( "image": {"size": )", size, R"(, "channels": 3}})");
}

}  // namespace

TEST_CASE("clips: uniform sampling takes segment middles and pads short videos by repeating frames",
          "[unit][clips]") {
  CHECK(SampleFrameIndices(32, Uniform(4)) == std::vector<int64_t>{4, 12, 20, 28});
  CHECK(SampleFrameIndices(10, Uniform(4)) == std::vector<int64_t>{1, 3, 6, 8});
  CHECK(SampleFrameIndices(4, Uniform(4)) == std::vector<int64_t>{0, 1, 2, 3});
  // Shorter than T: every frame in order, some twice.
  CHECK(SampleFrameIndices(4, Uniform(8)) == std::vector<int64_t>{0, 0, 1, 1, 2, 2, 3, 3});
  CHECK(SampleFrameIndices(3, Uniform(8)) == std::vector<int64_t>{0, 0, 0, 1, 1, 2, 2, 2});
  CHECK(SampleFrameIndices(1, Uniform(3)) == std::vector<int64_t>{0, 0, 0});
  // Refused: too short, or no frames at all.
  CHECK(SampleFrameIndices(3, Uniform(8, false)).empty());
  CHECK(SampleFrameIndices(8, Uniform(8, false)) == std::vector<int64_t>{0, 1, 2, 3, 4, 5, 6, 7});
  CHECK(SampleFrameIndices(0, Uniform(4)).empty());
  CHECK(Uniform(8).FramesNeeded() == 8);
  CHECK(Uniform(8, false).ToJson().dump() ==
        R"({"frames":8,"mode":"uniform","short_video":"refuse"})");
}

TEST_CASE("clips: every k-th frame up to a maximum repeats the last one of a short video",
          "[unit][clips]") {
  CHECK(Step(3, 4).FramesNeeded() == 10);
  CHECK(SampleFrameIndices(20, Step(3, 4)) == std::vector<int64_t>{0, 3, 6, 9});
  CHECK(SampleFrameIndices(10, Step(3, 4)) == std::vector<int64_t>{0, 3, 6, 9});
  CHECK(SampleFrameIndices(9, Step(3, 4)) == std::vector<int64_t>{0, 3, 6, 6});
  CHECK(SampleFrameIndices(1, Step(3, 4)) == std::vector<int64_t>{0, 0, 0, 0});
  CHECK(SampleFrameIndices(9, Step(3, 4, false)).empty());
  CHECK(SampleFrameIndices(5, Step(1, 5, false)) == std::vector<int64_t>{0, 1, 2, 3, 4});
  CHECK(Step(2, 6).ToJson().dump() ==
        R"({"max_frames":6,"mode":"step","short_video":"pad","step":2})");
  // Frame files in natural order of their names.
  std::vector<std::string> names{"10.jpg",      "2.jpg",        "1.jpg", "frame_10.png",
                                 "frame_2.png", "frame_01.png", "b.jpg"};
  std::sort(names.begin(), names.end(), NaturalLess);
  CHECK(names == std::vector<std::string>{"1.jpg", "2.jpg", "10.jpg", "b.jpg", "frame_01.png",
                                          "frame_2.png", "frame_10.png"});
  // Options: one sampling mode, checked before any work.
  PrepareOptions o;
  CHECK(o.Sampling().frames == 16);
  o.frames = 8;
  o.frame_step = 2;
  CHECK_THROWS_WITH(o.Check(),
                    Catch::Contains("--frames: give --frames (uniform sampling) or --frame-step"));
  o.frames = 0;
  CHECK_THROWS_WITH(o.Check(), Catch::Contains("--max-frames: is needed with --frame-step"));
  o.max_frames = 5;
  o.short_video = "loop";
  CHECK_THROWS_WITH(o.Check(), Catch::Contains("--short-video: must be pad or refuse"));
  o.short_video = "refuse";
  o.Check();
  CHECK(o.Sampling().ToJson().dump() ==
        R"({"max_frames":5,"mode":"step","short_video":"refuse","step":2})");
}

TEST_CASE(
    "prepare_data: videos in class folders give a clip store that h5py reads one clip a chunk",
    "[stage][clips]") {
  TempDir tmp;
  const std::vector<std::string> classes{"jump", "run", "clap"};
  for (size_t c = 0; c < classes.size(); ++c)
    for (int k = 0; k < 5; ++k) {
      int v = static_cast<int>(c) * 5 + k;
      WriteVideo(Msg(tmp / "vids/", classes[c], "/v", k, ".avi"), v == 7 ? 3 : 12, v);
    }
  WriteText(tmp / "m.json", VideoFolderManifest(tmp / "vids", 16));
  auto r = RunTool("prepare_data", "-v 0 --frames 4 " + (tmp / "m.json") + " " + (tmp / "s.h5"));
  INFO(r.err);
  REQUIRE(r.exit_code == 0);
  auto summary = nlohmann::json::parse(r.out);
  CHECK(summary["samples"] == 15);
  CHECK(summary["frames"] == 4);
  CHECK(summary["padded"] == 1);

  ClipStore s = ClipStore::Open(tmp / "s.h5");
  CHECK(s.size() == 15);
  CHECK(s.frames() == 4);
  CHECK(s.height() == 16);
  CHECK(s.channels() == 3);
  CHECK(s.class_names() == std::vector<std::string>{"clap", "jump", "run"});
  CHECK(s.split("train").size() == 9);
  CHECK(s.split("test").size() == 3);
  // ReadIndices in any order equals ReadRows clip by clip.
  std::vector<uint8_t> two(static_cast<size_t>(2 * s.clip_bytes())),
      one(static_cast<size_t>(s.clip_bytes()));
  s.ReadIndices({4, 1}, two.data());
  s.ReadRows(1, 1, one.data());
  CHECK(std::equal(one.begin(), one.end(), two.begin() + s.clip_bytes()));
  // Each store is refused where the other is expected, with one line saying which it is.
  CHECK_THROWS_WITH(ImageStore::Open(tmp / "s.h5"),
                    Catch::Contains("is a clip store") && Catch::Contains("not an image store"));
  std::string image_store = mlfd_test::MakeStore(tmp, "imgs", 2, 5, 8, 1, 1);
  CHECK_THROWS_WITH(ClipStore::Open(image_store),
                    Catch::Contains("is an image store") && Catch::Contains("not a clip store"));

  // Independently, with h5py: shape, one clip a chunk, attributes, and every stored frame is the
  // source frame frame_indices names (MJPG is lossy: within a few grey levels).
  auto py = mlfd_test::RunPython(tmp.path(), R"PY(
import sys, json, h5py, numpy as np
f = h5py.File(sys.argv[1], 'r')
d = f['clips']
assert d.shape == (15, 4, 16, 16, 3) and d.dtype == np.uint8, (d.shape, d.dtype)
assert d.chunks == (1, 4, 16, 16, 3), d.chunks
assert d.fletcher32
a = f.attrs
assert a['format'] == 'mlfd.clip_store' and a['frames'] == 4 and a['layout'] == 'NTHWC', dict(a)
assert json.loads(a['sampling']) == {'mode': 'uniform', 'frames': 4, 'short_video': 'pad'}
assert a['num_padded'] == 1 and a['num_skipped'] == 0
assert json.loads(a['provenance'])['options']['frames'] == 4
names = [s.decode() for s in f['class_names'][()]]
sources = [s.decode() for s in f['sources'][()]]
idx = f['frame_indices'][()]
nsrc = f['num_source_frames'][()]
assert (f['frame_rate'][()] == 25.0).all()
order = ['jump', 'run', 'clap']
clips = d[()]
for row, src in enumerate(sources):
    cls = src.split('/')[-2]
    v = order.index(cls) * 5 + int(src.split('/')[-1][1:-4])
    assert names[f['labels'][row]] == cls
    want_n = 3 if v == 7 else 12
    assert nsrc[row] == want_n, (src, nsrc[row])
    want_idx = [0, 1, 1, 2] if v == 7 else [1, 4, 7, 10]
    assert list(idx[row]) == want_idx, (src, idx[row])
    for t in range(4):
        level = 20 + 12 * want_idx[t] + 3 * v
        assert abs(float(clips[row, t].mean()) - level) < 3, (src, t, clips[row, t].mean(), level)
train = f['splits/train'][()]
x = clips[train].astype(np.float64) / 255
assert np.allclose(a['mean'], x.reshape(-1, 3).mean(0), atol=1e-9)
assert np.allclose(a['std'], x.reshape(-1, 3).std(0), atol=1e-6)
print('ok')
)PY",
                                 tmp / "s.h5");
  INFO(py.err);
  CHECK(py.exit_code == 0);
  CHECK(py.out == "ok\n");
}

TEST_CASE(
    "prepare_data: unreadable empty and short videos are listed and fail the run unless --skip-bad",
    "[stage][clips]") {
  TempDir tmp;
  for (const char* cls : {"a", "b"})
    for (int k = 0; k < 5; ++k) WriteVideo(Msg(tmp / "vids/", cls, "/v", k, ".avi"), 6, k);
  WriteText(tmp / "vids/a/empty.avi", "");
  for (int k = 0; k < 21; ++k)
    WriteText(Msg(tmp / "vids/b/broken", k, ".mp4"), "not a video at all");
  WriteVideo(tmp / "vids/a/short.avi", 2);
  WriteText(tmp / "m.json", VideoFolderManifest(tmp / "vids", 8));
  auto run = [&](const std::string& args) {
    return RunTool("prepare_data", args + " -v 0 " + (tmp / "m.json") + " " + (tmp / "out.h5"));
  };
  auto no_output = [&] {
    CHECK_FALSE(mlfd_test::FileExists(tmp / "out.h5"));
    for (auto& e : fs::directory_iterator(tmp.path()))
      CHECK(e.path().filename().string().find(".tmp-") == std::string::npos);
  };
  {
    auto r = run("--frames 4 --short-video refuse");
    INFO(r.err);
    CHECK(r.exit_code == 1);
    CHECK(r.err.find("prepare_data: error: vids: 23 video(s) could not be read (use --skip-bad") ==
          0);
    CHECK(r.err.find("a/empty.avi (an empty file)") != std::string::npos);
    CHECK(r.err.find("b/broken0.mp4 (cannot be opened as a video)") != std::string::npos);
    CHECK(r.err.find("a/short.avi (2 frame(s), 4 needed (--short-video refuse))") !=
          std::string::npos);
    CHECK(r.err.find("... and 3 more") != std::string::npos);  // the first 20 and a count
    CHECK(r.err.find(" @ 0x") == std::string::npos);           // no FFmpeg chatter
    no_output();
  }
  {
    auto r = run("--frames 4 --skip-bad --short-video refuse");
    INFO(r.err);
    REQUIRE(r.exit_code == 0);
    ClipStore s = ClipStore::Open(tmp / "out.h5");
    CHECK(s.size() == 10);
    CHECK(s.file().GetIntAttr("/", "num_skipped") == 23);
    auto skipped = s.file().ReadStrings("skipped");
    REQUIRE(skipped.size() == 23);
    CHECK(std::count_if(skipped.begin(), skipped.end(), [](const std::string& p) {
            return p.find("short.avi") != std::string::npos;
          }) == 1);
  }
  {  // padded by default: the short video is kept, its frames repeated
    auto r = run("--frames 4 --skip-bad");
    INFO(r.err);
    REQUIRE(r.exit_code == 0);
    ClipStore s = ClipStore::Open(tmp / "out.h5");
    CHECK(s.size() == 11);
    CHECK(s.file().GetIntAttr("/", "num_skipped") == 22);
    CHECK(s.file().GetIntAttr("/", "num_padded") == 1);
  }
  fs::remove(tmp / "out.h5");
  {  // sampling options: one mode, and only for videos (usage errors, exit 2)
    auto r = run("--frames 4 --frame-step 2");
    CHECK(r.exit_code == 2);
    CHECK(r.err.find("--frames: give --frames (uniform sampling) or --frame-step") !=
          std::string::npos);
    r = run("--split-id 2");
    CHECK(r.exit_code == 2);
    CHECK(r.err.find("--split-id applies to ucf101 and hmdb51 sources") != std::string::npos);
    cv::imwrite(tmp / "imgs/x/0.png", cv::Mat(4, 4, CV_8UC1, cv::Scalar(1)));
    WriteText(tmp / "img.json",
              Msg(R"({"name": "i", "classes": "folders", "sources": [{"kind": "folder", "root": ")",
                  tmp / "imgs",
                  R"("}], "split": {"mode": "stratified", "fractions": {"train": 1, "test": 0}},)",
                  R"( "image": {"channels": 1}})"));
    r = RunTool("prepare_data", "-v 0 --frames 4 " + (tmp / "img.json") + " " + (tmp / "out.h5"));
    CHECK(r.exit_code == 2);
    CHECK(r.err.find(
              "--frames, --frame-step, --max-frames and --short-video apply to video sources") !=
          std::string::npos);
    no_output();
  }
  // A manifest mixing images and videos is refused, naming the key.
  WriteText(
      tmp / "mix.json",
      Msg(R"({"name": "x", "classes": "folders", "sources": [{"kind": "folder", "root": "a"},)",
          R"( {"kind": "video_folder", "root": "b"}], "image": {"channels": 3}})"));
  CHECK_THROWS_WITH(
      LoadManifest(tmp / "mix.json"),
      Catch::Contains(
          "sources[1].kind: 'video_folder' cannot be mixed with sources[0]'s 'folder'"));
}

TEST_CASE("clips: frame folders in natural order sampled every k-th frame", "[unit][clips]") {
  TempDir tmp;
  // <root>/<class>/<video>/<n>.png, n = 1..12: name order would put 10, 11, 12 before 2.
  for (const char* cls : {"wave", "sit"})
    for (int v = 0; v < 3; ++v) {
      std::string dir = Msg(tmp / "frames/", cls, "/clip", v);
      fs::create_directories(dir);
      for (int i = 0; i < (v == 2 ? 5 : 12); ++i) {
        int l = Level(v, i);
        REQUIRE(
            cv::imwrite(Msg(dir, "/", i + 1, ".png"), cv::Mat(6, 6, CV_8UC3, cv::Scalar(l, l, l))));
      }
    }
  fs::create_directories(tmp / "frames/sit/clip_empty");
  fs::copy(tmp / "frames/sit/clip0", tmp / "frames/sit/clip_badframe");
  WriteText(tmp / "frames/sit/clip_badframe/4.png", "not a png");  // frame 3: sampled
  WriteText(
      tmp / "m.json",
      Msg(R"({"name": "fr", "classes": "folders", "sources": [{"kind": "frame_folder", "root": ")",
          tmp / "frames", R"(", "frame_rate": 12.5}],)",
          R"( "split": {"mode": "stratified", "fractions": {"train": 0.5, "test": 0.5}},)",
          R"( "image": {"size": 4, "channels": 1}})"));
  PrepareOptions o;
  o.data_root = "";
  o.frame_step = 3;
  o.max_frames = 4;
  o.Check();
  // The empty folder is a video without frames: listed, and the run fails without --skip-bad.
  CHECK_THAT(ErrorOf([&] { PrepareData(tmp / "m.json", tmp / "s.h5", o, Provenance{}, 2); }),
             Catch::Contains("2 video(s) could not be read") &&
                 Catch::Contains("clip_empty (no frame images)") &&
                 Catch::Contains("clip_badframe (frame 4.png cannot be read)"));
  o.skip_bad = true;
  auto sum = PrepareData(tmp / "m.json", tmp / "s.h5", o, Provenance{}, 2);
  CHECK(sum.num_samples == 6);
  CHECK(sum.frames == 4);
  CHECK(sum.num_padded == 2);  // the 5-frame videos: 0, 3, 3, 3
  ClipStore s = ClipStore::Open(tmp / "s.h5");
  auto sources = s.file().ReadStrings("sources");
  std::vector<uint8_t> clip(static_cast<size_t>(s.clip_bytes()));
  for (int64_t row = 0; row < s.size(); ++row) {
    int v = sources[static_cast<size_t>(row)].back() - '0';
    std::vector<int64_t> want =
        v == 2 ? std::vector<int64_t>{0, 3, 3, 3} : std::vector<int64_t>{0, 3, 6, 9};
    CHECK(s.FrameIndices(row) == want);
    CHECK(s.frame_rates()[static_cast<size_t>(row)] == 12.5);
    CHECK(s.num_source_frames()[static_cast<size_t>(row)] == (v == 2 ? 5 : 12));
    s.ReadRows(row, 1, clip.data());
    for (int t = 0; t < 4; ++t)
      CHECK(clip[static_cast<size_t>(t * s.frame_bytes())] ==
            Level(v, static_cast<int>(want[static_cast<size_t>(t)])));
  }
}

namespace {

// UCF101 after extraction: ucf101/UCF-101/<Class>/v_<Class>_gXX_cYY.avi and
// ucf101/ucfTrainTestlist/. Groups 1..6, two clips each; split k tests groups 2k-1 and 2k (the real
// lists test 7 of 25 groups).
void WriteUcfTree(const std::string& root, const std::vector<std::string>& classes, bool videos) {
  fs::create_directories(root + "/ucfTrainTestlist");
  std::string class_ind;
  for (size_t c = 0; c < classes.size(); ++c) class_ind += Msg(c + 1, " ", classes[c], "\r\n");
  WriteText(root + "/ucfTrainTestlist/classInd.txt", class_ind);
  for (int k = 1; k <= 3; ++k) {
    std::string train, test;
    for (size_t c = 0; c < classes.size(); ++c)
      for (int g = 1; g <= 6; ++g)
        for (int clip = 1; clip <= 2; ++clip) {
          char name[128];
          std::snprintf(name, sizeof(name), "%s/v_%s_g%02d_c%02d.avi", classes[c].c_str(),
                        classes[c].c_str(), g, clip);
          if (k == 1) {
            if (videos)
              WriteVideo(root + "/UCF-101/" + name, 8, g);
            else {
              fs::create_directories(fs::path(root + "/UCF-101/" + name).parent_path());
              WriteText(root + "/UCF-101/" + name, "");
            }
          }
          if (g == 2 * k - 1 || g == 2 * k)
            test += Msg(name, "\r\n");
          else
            train += Msg(name, " ", c + 1, "\r\n");
        }
    WriteText(Msg(root, "/ucfTrainTestlist/trainlist0", k, ".txt"), train);
    WriteText(Msg(root, "/ucfTrainTestlist/testlist0", k, ".txt"), test);
  }
}

}  // namespace

TEST_CASE("ucf101: the official lists choose split 1 2 or 3 of a synthetic tree", "[unit][clips]") {
  TempDir tmp;
  const std::vector<std::string> classes{"ApplyEyeMakeup", "Basketball", "YoYo"};
  WriteUcfTree(tmp / "ucf101", classes, /*videos=*/false);
  Manifest m = LoadManifest(ShippedManifest("ucf101"));
  auto samples = ReadSources(m, tmp.path());
  CHECK(samples.size() == 36);
  CHECK(CountSplits(samples) == std::map<std::string, int>{{"train", 24}, {"test", 12}});
  CHECK(ResolveClassNames(m, tmp.path(), samples) == classes);
  CHECK(samples[0].media == "video");
  CHECK(samples[0].label_name == "ApplyEyeMakeup");
  CHECK(samples[0].file == tmp / "ucf101/UCF-101/ApplyEyeMakeup/v_ApplyEyeMakeup_g03_c01.avi");
  // Split 3 tests groups 5 and 6.
  m.sources[0].spec["split_id"] = 3;
  samples = ReadSources(m, tmp.path());
  for (const auto& s : samples)
    CHECK((s.split == "test") ==
          (s.file.find("_g05_") != std::string::npos || s.file.find("_g06_") != std::string::npos));
  // Frame folders of the same layout: the path without .avi.
  m.sources[0].spec["layout"] = "frames";
  samples = ReadSources(m, tmp.path());
  CHECK(samples[0].media == "frames");
  CHECK(samples[0].file == tmp / "ucf101/UCF-101/ApplyEyeMakeup/v_ApplyEyeMakeup_g01_c01");
  // A list line whose class index disagrees with classInd.txt, and a split id out of range.
  WriteText(tmp / "ucf101/ucfTrainTestlist/trainlist02.txt", "YoYo/v_YoYo_g01_c01.avi 2\n");
  m.sources[0].spec["split_id"] = 2;
  CHECK_THAT(ErrorOf([&] { ReadSources(m, tmp.path()); }),
             Catch::Contains("trainlist02.txt:1: class index 2 but") &&
                 Catch::Contains("gives 'YoYo' index 3"));
  m.sources[0].spec["split_id"] = 4;
  CHECK_THAT(ErrorOf([&] { ReadSources(m, tmp.path()); }),
             Catch::Contains("sources[0].split_id: must be 1, 2 or 3"));

  // End to end on real (tiny) videos, split 2 chosen on the command line's option.
  TempDir tmp2;
  WriteUcfTree(tmp2 / "ucf101", classes, /*videos=*/true);
  PrepareOptions o;
  o.data_root = tmp2.path();
  o.frames = 4;
  o.split_id = 2;
  auto sum = PrepareData(ShippedManifest("ucf101"), tmp2 / "ucf.h5", o, Provenance{}, 2);
  CHECK(sum.num_samples == 36);
  CHECK(sum.num_classes == 3);
  CHECK(sum.split_sizes["test"] == 12);
  CHECK(sum.split_sizes["val"] == 3);  // 10% of each class's 8 training videos, rounded: 1
  CHECK(sum.split_sizes["train"] == 21);
  ClipStore s = ClipStore::Open(tmp2 / "ucf.h5");
  CHECK(s.file().GetIntAttr("/", "split_id") == 2);
  CHECK(s.height() == 112);
  auto sources = s.file().ReadStrings("sources");
  for (int64_t i : s.split("test")) {
    const std::string& src = sources[static_cast<size_t>(i)];
    CHECK((src.find("_g03_") != std::string::npos || src.find("_g04_") != std::string::npos));
  }
}

TEST_CASE("hmdb51: split files with 0 1 2 marks choose train and test videos", "[unit][clips]") {
  TempDir tmp;
  const std::vector<std::string> classes{"brush_hair", "cartwheel", "wave"};
  fs::create_directories(tmp / "hmdb51/testTrainMulti_7030_splits");
  // Per class 6 videos; in split k, video j is 1 (train) for j < 3, 2 (test) for j == 3 + (k - 1)
  // % 3... and 0 otherwise: 3 train, 1 test, 2 unused.
  for (const auto& cls : classes) {
    fs::create_directories(tmp / "hmdb51/videos/" + cls);
    for (int j = 0; j < 6; ++j)
      WriteText(Msg(tmp / "hmdb51/videos/", cls, "/", cls, "_clip", j, ".avi"), "");
    for (int k = 1; k <= 3; ++k) {
      std::string text;
      for (int j = 0; j < 6; ++j)
        text += Msg(cls, "_clip", j, ".avi ", j < 3 ? 1 : j == 2 + k ? 2 : 0, " \n");
      WriteText(Msg(tmp / "hmdb51/testTrainMulti_7030_splits/", cls, "_test_split", k, ".txt"),
                text);
    }
  }
  Manifest m = LoadManifest(ShippedManifest("hmdb51"));
  auto samples = ReadSources(m, tmp.path());
  CHECK(CountSplits(samples) == std::map<std::string, int>{{"train", 9}, {"test", 3}});
  CHECK(ResolveClassNames(m, tmp.path(), samples) == classes);
  for (const auto& s : samples) {
    CHECK(s.media == "video");
    CHECK(s.file.find(tmp / "hmdb51/videos/" + s.label_name + "/" + s.label_name + "_clip") == 0);
    if (s.split == "test") CHECK(s.file.find("_clip3.avi") != std::string::npos);
  }
  m.sources[0].spec["split_id"] = 3;
  for (const auto& s : ReadSources(m, tmp.path()))
    if (s.split == "test") CHECK(s.file.find("_clip5.avi") != std::string::npos);
  // A mark other than 0, 1, 2 names the file and line; a folder without split files is refused.
  WriteText(tmp / "hmdb51/testTrainMulti_7030_splits/wave_test_split3.txt",
            "wave_clip0.avi 1\nwave_clip1.avi 7\n");
  CHECK_THAT(ErrorOf([&] { ReadSources(m, tmp.path()); }),
             Catch::Contains("wave_test_split3.txt:2: expected \"<video>.avi <0|1|2>\""));
  fs::remove_all(tmp / "hmdb51/testTrainMulti_7030_splits");
  fs::create_directories(tmp / "hmdb51/testTrainMulti_7030_splits");
  CHECK_THAT(ErrorOf([&] { ReadSources(m, tmp.path()); }),
             Catch::Contains("has no <class>_test_split3.txt files"));
}

TEST_CASE("kinetics400: class folders of mp4 videos and of frame folders", "[unit][clips]") {
  TempDir tmp;
  const std::vector<std::string> classes{"abseiling", "air drumming", "zumba"};
  for (const auto& cls : classes) {
    for (int k = 0; k < 10; ++k)
      WriteVideo(Msg(tmp / "kinetics400/train/", cls, "/yt", k, "_000010_000020.mp4"), 10, k);
    WriteVideo(Msg(tmp / "kinetics400/val/", cls, "/ytv_000001_000011.mp4"), 10, 5);
  }
  Manifest m = LoadManifest(ShippedManifest("kinetics400"));
  auto samples = ReadSources(m, tmp.path());
  CHECK(CountSplits(samples) == std::map<std::string, int>{{"train", 30}, {"test", 3}});
  CHECK(ResolveClassNames(m, tmp.path(), samples) == classes);
  PrepareOptions o;
  o.data_root = tmp.path();
  o.frame_step = 2;
  o.max_frames = 4;
  auto sum = PrepareData(ShippedManifest("kinetics400"), tmp / "k.h5", o, Provenance{}, 2);
  CHECK(sum.num_samples == 33);
  CHECK(sum.num_padded == 0);
  CHECK(sum.split_sizes["test"] == 3);
  CHECK(sum.split_sizes["val"] == 3);  // 5% of 10 videos a class, rounded: 1
  ClipStore s = ClipStore::Open(tmp / "k.h5");
  CHECK(s.FrameIndices(0) == std::vector<int64_t>{0, 2, 4, 6});
  CHECK(s.frame_rates()[0] == Approx(25.0));
  CHECK(s.num_source_frames()[0] == 10);  // decoding stopped at frame 7; the container says 10
  // Frames kept at the source size are each their own frame (not one reused decoder buffer).
  ImageSpec keep;
  keep.size = 0;
  DecodedClip c =
      DecodeVideoClip(tmp / "kinetics400/train/zumba/yt3_000010_000020.mp4", keep, Uniform(5));
  REQUIRE(c.error.empty());
  CHECK(c.indices == std::vector<int64_t>{1, 3, 5, 7, 9});
  CHECK(c.frames[0].cols == 32);
  for (size_t t = 0; t < 5; ++t)
    CHECK(cv::mean(c.frames[t])[0] == Approx(Level(3, static_cast<int>(c.indices[t]))).margin(4));
  // A truncated video whose container promises more frames than decode: the clip is sampled over
  // the frames that decode (a second pass keeps the right ones).
  WriteVideo(tmp / "t.avi", 12, 1);
  const std::string whole = mlfd_test::ReadText(tmp / "t.avi");
  WriteText(tmp / "cut.avi", whole.substr(0, whole.size() * 9 / 10));
  cv::VideoCapture cap(tmp / "cut.avi", cv::CAP_FFMPEG);
  REQUIRE(cap.get(cv::CAP_PROP_FRAME_COUNT) == 12);
  c = DecodeVideoClip(tmp / "cut.avi", keep, Uniform(4));
  REQUIRE(c.error.empty());
  REQUIRE(c.num_source_frames > 4);
  REQUIRE(c.num_source_frames < 12);
  CHECK(c.indices == SampleFrameIndices(c.num_source_frames, Uniform(4)));
  for (size_t t = 0; t < 4; ++t)
    CHECK(cv::mean(c.frames[t])[0] == Approx(Level(1, static_cast<int>(c.indices[t]))).margin(4));
  // The frame-folder variant of the same layout.
  for (const auto& cls : classes) {
    for (int k = 0; k < 2; ++k) {
      std::string dir = Msg(tmp / "kf/kinetics400/train/", cls, "/yt", k);
      fs::create_directories(dir);
      REQUIRE(cv::imwrite(dir + "/img_00001.jpg", cv::Mat(4, 4, CV_8UC3, cv::Scalar(9, 9, 9))));
    }
    fs::create_directories(Msg(tmp / "kf/kinetics400/val/", cls, "/ytv"));
  }
  Manifest mf = LoadManifest(ShippedManifest("kinetics400_frames"));
  samples = ReadSources(mf, tmp / "kf");
  CHECK(CountSplits(samples) == std::map<std::string, int>{{"train", 6}, {"test", 3}});
  CHECK(samples[0].media == "frames");
  CHECK(samples[0].frame_rate == 30.0);
}
