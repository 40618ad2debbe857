// The synthetic video group (pipelines/video_sprites.mk) end to end through Makefile.pipeline with
// the real stage binaries, at a tiny size: MNIST digits -> moving sprites -> clip stores -> video
// teachers, the joint-training baseline, T* on 5-D maps, KD / FitNet / MLFD students -> evaluate
// -> the report, whose title says the clips are synthetic; a second make has nothing to do.
#include <catch2/catch.hpp>
#include <filesystem>
#include <nlohmann/json.hpp>

#include "test_util.h"
#include "util/error.h"

using mlfd::Msg;
using mlfd_test::TempDir;
namespace fs = std::filesystem;

TEST_CASE("video_sprites pipeline: the synthetic video group runs end to end and settles", "[pipeline][video]") {
  TempDir tmp;
  const std::string run = tmp / "run";
  // Tiny: 6 frames of 24 px, 6 / 3 / 3 clips per motion, one epoch of everything, 4-frame crops.
  const std::string make =
      Msg("make -C ", MLFD_SOURCE_DIR, " -f Makefile.pipeline PIPELINE=video_sprites RUN=", run, " BIN=", MLFD_BIN_DIR,
          " DATA_ROOT=", MLFD_SOURCE_DIR, "/data VERBOSE=0 THREADS=1 EPOCHS=1",
          " SPRITES_OPTS='--frames 6 --canvas 24 --clips-per-class 6,3,3' PREPARE_OPTS='--frames 6'",
          " TRAIN_COMMON='--optimizer adam --lr 0.002 --pad 1 --clip-frames 4 --batch-size 8'",
          " JOINT_OPTS='--optimizer adamw --lr 1e-3 --batch-size 8 --pad 1 --epochs 1'");
  auto r = mlfd_test::RunShell(make);
  INFO(r.out << r.err);
  REQUIRE(r.exit_code == 0);

  // The report prints, labelled synthetic, with every row of both datasets.
  const std::string report = mlfd_test::ReadText(run + "/report.md");
  CHECK(report.find("SYNTHETIC moving-sprite clips") != std::string::npos);
  CHECK(r.out.find("SYNTHETIC moving-sprite clips") != std::string::npos);  // printed by make
  for (const char* ds : {"sprites_translate", "sprites_turn_zoom"}) {
    INFO(ds);
    CHECK(report.find(ds) != std::string::npos);
    for (const char* model : {"teacher", "joint_baseline", "joint", "kd", "fitnet", "mlfd"}) {
      INFO(model);
      const std::string path = Msg(run, "/seed1/eval/", model, "_", ds, ".json");
      REQUIRE(fs::exists(path));
      auto j = nlohmann::json::parse(mlfd_test::ReadText(path));
      CHECK(j["frames"] == 4);  // evaluated on the centred 4-frame crop of each 6-frame clip
      CHECK(j["metrics"]["count"] == (std::string(ds) == "sprites_translate" ? 18 : 12));  // 3 test clips a motion
      const double top1 = j["metrics"]["top1"].get<double>();
      CHECK(top1 >= 0.0);
      CHECK(top1 <= 1.0);
    }
  }
  // The sprites and the stores are the pipeline's own artefacts, marked as such.
  auto marker = nlohmann::json::parse(mlfd_test::ReadText(run + "/sprites/sprites_turn_zoom/moving_sprites.json"));
  CHECK(marker.dump().find("zoom_in") != std::string::npos);

  // A finished run settles: nothing to do, and -q agrees.
  auto again = mlfd_test::RunShell(make);
  INFO(again.out << again.err);
  CHECK(again.exit_code == 0);
  CHECK(again.out.find("Nothing to be done") != std::string::npos);
  CHECK(mlfd_test::RunShell(make + " -q").exit_code == 0);
}
