// Augmentation: each AutoAugment operation against torchvision.transforms.functional on the same
// uint8 images (exact for point operations, nearly exact for geometric ones), determinism given
// the seed, output shapes, pad+crop and flip semantics; and the OpenCV plots.
#include <catch2/catch.hpp>

#include <fstream>
#include <opencv2/imgcodecs.hpp>

#include "data/augment.h"
#include "eval/plot.h"
#include "test_util.h"
#include "util/error.h"

using namespace mlfd;
using mlfd_test::TempDir;

namespace {
void WriteRaw(const std::string& path, const cv::Mat& m) {
  std::ofstream out(path, std::ios::binary);
  out.write(reinterpret_cast<const char*>(m.data), static_cast<std::streamsize>(m.total() * m.elemSize()));
}
cv::Mat ReadRaw(const std::string& path, int rows, int cols, int channels) {
  cv::Mat m(rows, cols, CV_8UC(channels));
  std::ifstream in(path, std::ios::binary);
  in.read(reinterpret_cast<char*>(m.data), static_cast<std::streamsize>(m.total() * m.elemSize()));
  REQUIRE(in.gcount() == static_cast<std::streamsize>(m.total() * m.elemSize()));
  return m;
}
}  // namespace

TEST_CASE("augment: operations match torchvision.transforms.functional", "[stage][augment][python]") {
  TempDir tmp;
  cv::Mat img(20, 24, CV_8UC3);
  cv::randu(img, 0, 256);
  img(cv::Rect(4, 4, 10, 8)).setTo(cv::Scalar(200, 30, 90));  // some structure
  WriteRaw(tmp / "in.raw", img);
  // name, our result, torchvision expression (x = CHW uint8 tensor), exact?
  struct Case { std::string name; cv::Mat ours; std::string tv; bool exact; };
  std::vector<Case> cases = {
      {"brightness", aug::Brightness(img, 1.6), "F.adjust_brightness(x, 1.6)", true},
      {"color", aug::Color(img, 0.3), "F.adjust_saturation(x, 0.3)", true},
      {"contrast", aug::Contrast(img, 1.7), "F.adjust_contrast(x, 1.7)", true},
      {"sharpness", aug::Sharpness(img, 1.8), "F.adjust_sharpness(x, 1.8)", true},
      {"posterize", aug::Posterize(img, 3), "F.posterize(x, 3)", true},
      {"solarize", aug::Solarize(img, 128.0), "F.solarize(x, 128.0)", true},
      {"autocontrast", aug::AutoContrast(img), "F.autocontrast(x)", true},
      {"equalize", aug::Equalize(img), "F.equalize(x)", true},
      {"invert", aug::Invert(img), "F.invert(x)", true},
      {"rotate", aug::Rotate(img, 20.0), "F.rotate(x, 20.0, interpolation=I.NEAREST, fill=[0])", false},
      {"translatex", aug::TranslateX(img, 5), "F.affine(x, angle=0.0, translate=[5, 0], scale=1.0, shear=[0.0, 0.0], interpolation=I.NEAREST, fill=[0])", false},
  };
  std::string script = "import sys, numpy as np, torch\n"
                       "import torchvision.transforms.functional as F\n"
                       "from torchvision.transforms import InterpolationMode as I\n"
                       "img = np.fromfile(sys.argv[1], dtype=np.uint8).reshape(20, 24, 3)\n"
                       "x = torch.from_numpy(img).permute(2, 0, 1).contiguous()\n";
  for (auto& c : cases) {
    script += "y = " + c.tv + "\n";
    script += "y.permute(1, 2, 0).contiguous().numpy().tofile(sys.argv[2] + '/" + c.name + ".raw')\n";
  }
  auto r = mlfd_test::RunPython(tmp.path(), script, (tmp / "in.raw") + " " + tmp.path());
  INFO(r.err);
  REQUIRE(r.exit_code == 0);
  for (auto& c : cases) {
    cv::Mat ref = ReadRaw(tmp / (c.name + ".raw"), 20, 24, 3);
    cv::Mat diff;
    cv::absdiff(c.ours, ref, diff);
    double max_diff;
    cv::minMaxLoc(diff.reshape(1), nullptr, &max_diff);
    int off = cv::countNonZero(diff.reshape(1) > 1);
    INFO(c.name << ": max |diff| " << max_diff << ", " << off << " values differ by more than 1");
    if (c.exact) {
      CHECK(max_diff <= 1.0);  // float rounding of blends may differ by one level
      CHECK(off == 0);
    } else {
      CHECK(off <= static_cast<int>(0.03 * diff.total() * 3));  // pixel-centre conventions at edges
    }
  }
}

TEST_CASE("augment: shapes, determinism, crop and flip", "[unit][augment]") {
  cv::Mat img(28, 28, CV_8UC1);
  cv::randu(img, 0, 256);
  AugmentConfig c;
  c.pad = 2;
  c.hflip = true;
  c.autoaugment = true;
  for (uint64_t seed = 0; seed < 50; ++seed) {
    std::mt19937_64 a(seed), b(seed);
    cv::Mat x = Augment(img, c, a), y = Augment(img, c, b);
    REQUIRE(x.size() == img.size());
    REQUIRE(x.type() == img.type());
    CHECK(cv::countNonZero(x != y) == 0);
  }
  // Pad + crop only: the output is the input shifted by at most `pad` pixels.
  AugmentConfig pc;
  pc.pad = 3;
  std::mt19937_64 rng(5);
  cv::Mat shifted = Augment(img, pc, rng);
  bool found = false;
  for (int dy = -3; dy <= 3 && !found; ++dy)
    for (int dx = -3; dx <= 3 && !found; ++dx) {
      cv::Rect inner(std::max(0, dx), std::max(0, dy), 28 - std::abs(dx), 28 - std::abs(dy));
      cv::Rect src(std::max(0, -dx), std::max(0, -dy), inner.width, inner.height);
      found = cv::countNonZero(shifted(inner) != img(src)) == 0;
    }
  CHECK(found);
  // Flip: over many draws, both the image and its mirror appear.
  AugmentConfig fc;
  fc.hflip = true;
  cv::Mat mirror;
  cv::flip(img, mirror, 1);
  int flipped = 0;
  for (uint64_t s = 0; s < 40; ++s) {
    std::mt19937_64 g(s);
    cv::Mat o = Augment(img, fc, g);
    flipped += cv::countNonZero(o != mirror) == 0;
    CHECK((cv::countNonZero(o != mirror) == 0 || cv::countNonZero(o != img) == 0));
  }
  CHECK(flipped > 5);
  CHECK(flipped < 35);
  // Random resized crop and resize give the requested size, for RGB too.
  cv::Mat rgb(40, 30, CV_8UC3, cv::Scalar(1, 2, 3));
  AugmentConfig rc;
  rc.random_resized_crop = true;
  rc.out_size = 16;
  std::mt19937_64 g(1);
  cv::Mat o = Augment(rgb, rc, g);
  CHECK(o.rows == 16);
  CHECK(o.cols == 16);
  CHECK(o.channels() == 3);
  CHECK(o.at<cv::Vec3b>(5, 5) == cv::Vec3b(1, 2, 3));
  CHECK(EvalTransform(rgb, rc).size() == cv::Size(16, 16));
}

TEST_CASE("plots: confusion matrix and curves are drawn and readable", "[unit][plot]") {
  TempDir tmp;
  std::vector<int64_t> counts = {50, 0, 0, 0, 40, 10, 0, 5, 45};
  PlotConfusionMatrix(counts, {"cat", "dog", "bird"}, "test", tmp / "cm.png");
  cv::Mat cm = cv::imread(tmp / "cm.png");
  REQUIRE(!cm.empty());
  // Cell centres (layout of plot.cc: 48 px cells from (150, 60)): diagonal darker than off-diagonal.
  auto at = [&](int r, int c) { return cm.at<cv::Vec3b>(60 + r * 48 + 5, 150 + c * 48 + 5); };
  CHECK(at(0, 0)[2] < at(0, 1)[2]);
  CHECK(at(2, 2)[2] < at(2, 0)[2]);
  PlotLines({{"train", {1, 2, 3}, {0.5, NAN, 0.9}}, {"val", {1, 2, 3}, {0.4, 0.6, 0.7}}}, "curves", "epoch", "acc",
            tmp / "l.png");
  cv::Mat l = cv::imread(tmp / "l.png");
  REQUIRE(!l.empty());
  cv::Scalar mean, sd;
  cv::meanStdDev(l, mean, sd);
  CHECK(sd[0] > 10);  // not blank
  CHECK_THROWS_AS(PlotLines({{"x", {1}, {1}}}, "t", "x", "y", tmp / "nodir/l.png"), Error);
  CHECK_THROWS_AS(PlotConfusionMatrix({1, 2}, {"a", "b"}, "t", tmp / "bad.png"), Error);
}
