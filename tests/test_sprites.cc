// The moving-sprites dataset (make_moving_sprites): the motion of each class measured on the
// rendered frames, determinism, the frame-folder layout and its marker, replacement rules.
#include <catch2/catch.hpp>

#include <filesystem>
#include <nlohmann/json.hpp>
#include <opencv2/core.hpp>
#include <opencv2/imgcodecs.hpp>

#include "data/moving_sprites.h"
#include "test_util.h"
#include "util/error.h"

using namespace mlfd;
using mlfd_test::RunTool;
using mlfd_test::TempDir;
namespace fs = std::filesystem;

namespace {
// Intensity centroid (x, y) and mass of a gray frame.
cv::Vec3d Moments(const cv::Mat& f) {
  double m = 0, mx = 0, my = 0;
  for (int y = 0; y < f.rows; ++y)
    for (int x = 0; x < f.cols; ++x) {
      double v = f.at<uint8_t>(y, x);
      m += v, mx += v * x, my += v * y;
    }
  return {mx / m, my / m, m};
}
}  // namespace

TEST_CASE("moving sprites: every motion moves the sprite as its name says", "[unit][video][sprites]") {
  cv::Mat sprite(12, 12, CV_8UC1, cv::Scalar(0));
  sprite(cv::Rect(3, 3, 6, 6)).setTo(cv::Scalar(255));
  SpriteOptions o;
  o.frames = 12;
  o.canvas = 64;
  for (uint64_t seed = 0; seed < 10; ++seed) {
    for (const auto& motion : MotionNames()) {
      INFO(motion << " seed " << seed);
      auto clip = RenderClip(sprite, motion, o, seed);
      REQUIRE(clip.size() == 12);
      REQUIRE(clip[0].rows == 64);
      REQUIRE(clip[0].cols == 64);
      cv::Vec3d a = Moments(clip.front()), b = Moments(clip.back()), mid = Moments(clip[6]);
      // The sprite stays whole on the canvas (all of its mass is drawn): 36 pixels of 255 at scale 1.
      const double dx = b[0] - a[0], dy = b[1] - a[1];
      if (motion == "right") CHECK((dx > 4 && std::abs(dy) < 0.5));
      if (motion == "left") CHECK((dx < -4 && std::abs(dy) < 0.5));
      if (motion == "down") CHECK((dy > 4 && std::abs(dx) < 0.5));
      if (motion == "up") CHECK((dy < -4 && std::abs(dx) < 0.5));
      if (motion == "down_right") CHECK((dx > 3 && std::abs(dx - dy) < 0.5));
      if (motion == "up_left") CHECK((dx < -3 && std::abs(dx - dy) < 0.5));
      if (motion.rfind("zoom", 0) == 0) {
        CHECK(std::abs(dx) < 0.5);
        CHECK(std::abs(dy) < 0.5);
        CHECK((motion == "zoom_in" ? b[2] > 2.5 * a[2] : a[2] > 2.5 * b[2]));  // area grows or shrinks
      } else {
        CHECK(a[2] == Approx(36 * 255.0).epsilon(0.02));
        CHECK(b[2] == Approx(36 * 255.0).epsilon(0.02));
      }
      if (motion == "clockwise" || motion == "counterclockwise") {
        // The turn's sign: the cross product of successive displacements (screen y points down,
        // so clockwise on screen is a positive cross product).
        const double cross = (mid[0] - a[0]) * (b[1] - mid[1]) - (mid[1] - a[1]) * (b[0] - mid[0]);
        CHECK((motion == "clockwise" ? cross > 0 : cross < 0));
      }
    }
  }
  // The same seed draws the same path; another seed another one.
  auto c1 = RenderClip(sprite, "clockwise", o, 3), c2 = RenderClip(sprite, "clockwise", o, 3);
  auto c3 = RenderClip(sprite, "clockwise", o, 4);
  CHECK(cv::norm(c1[5], c2[5]) == 0);
  CHECK(cv::norm(c1[5], c3[5]) > 0);
  CHECK_THROWS_WITH(RenderClip(sprite, "spin", o, 1), Catch::Contains("unknown motion 'spin'"));
}

TEST_CASE("make_moving_sprites: frame folders per split and motion from the store's splits", "[stage][video][sprites]") {
  TempDir tmp;
  std::string store = mlfd_test::MakeStore(tmp, "src", 3, 10, 12, 1, 5);
  std::string out = tmp / "sprites";
  const std::string args = "-v 0 --motions up,zoom_out --frames 5 --canvas 24 --clips-per-class 3,2,1 --seed 4 ";
  auto r = RunTool("make_moving_sprites", args + store + " " + out);
  INFO(r.err);
  REQUIRE(r.exit_code == 0);
  auto j = nlohmann::json::parse(r.out);
  CHECK(j["clips"] == 12);  // (3 + 2 + 1) x 2 motions
  CHECK(j["frames"] == 60);
  CHECK(j["splits"]["train"] == 6);
  for (const char* split : {"train", "val", "test"})
    for (const char* motion : {"up", "zoom_out"}) CHECK(fs::is_directory(out + "/" + split + "/" + motion));
  const std::string clip = out + "/train/up/up_train_2";
  for (int t = 0; t < 5; ++t) {
    cv::Mat f = cv::imread(clip + "/000" + std::to_string(t) + ".png", cv::IMREAD_UNCHANGED);
    REQUIRE(!f.empty());
    CHECK(f.rows == 24);
    CHECK(f.type() == CV_8UC1);
  }
  CHECK_FALSE(fs::exists(clip + "/0005.png"));
  auto marker = nlohmann::json::parse(mlfd_test::ReadText(out + "/moving_sprites.json"));
  CHECK(marker["format"] == "mlfd.moving_sprites");
  CHECK(marker["motions"] == nlohmann::json({"up", "zoom_out"}));
  CHECK(marker["provenance"]["tool"] == "make_moving_sprites");
  // Rerun: our own folder is replaced with the same clips (same seed); no temporaries are left.
  const std::string before = mlfd_test::ReadText(clip + "/0003.png");
  auto again = RunTool("make_moving_sprites", args + store + " " + out);
  REQUIRE(again.exit_code == 0);
  CHECK(mlfd_test::ReadText(clip + "/0003.png") == before);
  int hidden = 0;
  for (const auto& e : fs::directory_iterator(tmp.path())) hidden += e.path().filename().string()[0] == '.';
  CHECK(hidden == 0);
  // A folder that is not ours is never replaced; bad options are usage errors.
  fs::create_directories(tmp / "mine");
  mlfd_test::WriteText(tmp / "mine/notes.txt", "keep");
  auto refuse = RunTool("make_moving_sprites", args + store + " " + (tmp / "mine"));
  CHECK(refuse.exit_code == 1);
  CHECK(refuse.err.find("exists and is not a moving-sprites dataset") != std::string::npos);
  CHECK(mlfd_test::ReadText(tmp / "mine/notes.txt") == "keep");
  auto bad = RunTool("make_moving_sprites", "-v 0 --motions up,spin " + store + " " + (tmp / "x"));
  CHECK(bad.exit_code == 2);
  CHECK(bad.err.find("--motions: unknown motion 'spin'") != std::string::npos);
  auto dup = RunTool("make_moving_sprites", "-v 0 --motions up,up " + store + " " + (tmp / "x"));
  CHECK(dup.exit_code == 2);
  auto counts = RunTool("make_moving_sprites", "-v 0 --clips-per-class 3,2 " + store + " " + (tmp / "x"));
  CHECK(counts.exit_code == 2);
  CHECK(counts.err.find("give train,val,test counts") != std::string::npos);
  CHECK_FALSE(fs::exists(tmp / "x"));
}
