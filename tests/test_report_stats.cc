// The report's paired statistics: per-seed differences between two rows (same seed, same data),
// their mean ± standard deviation and the seeds won, against values computed by hand; and the
// seed evaluate records for each run.
#include <catch2/catch.hpp>

#include <cmath>

#include "eval/report.h"
#include "test_util.h"
#include "util/error.h"

using namespace mlfd;
using mlfd_test::RunTool;
using mlfd_test::TempDir;

namespace {
ReportRow Row(const std::string& model, std::vector<int64_t> seeds, std::vector<double> test, std::vector<double> val) {
  ReportRow r;
  r.model = model;
  r.seeds = std::move(seeds);
  r.test_top1 = std::move(test);
  r.val_top1 = std::move(val);
  return r;
}
}  // namespace

TEST_CASE("report: paired differences per seed against hand values", "[unit][report][stats]") {
  // Seeds 1, 2, 3: differences +1.00, -1.00, +1.00 points. Mean 1/3; sample std
  // sqrt(((2/3)^2 + (4/3)^2 + (2/3)^2) / 2) = sqrt(4/3) = 1.1547.
  ReportRow mlfd = Row("mlfd", {1, 2, 3}, {0.90, 0.92, 0.91}, {0.95, 0.96, 0.97});
  ReportRow ind = Row("teacher", {3, 1, 2}, {0.90, 0.89, 0.93}, {0.94, 0.94, 0.98});  // other order
  PairedDiff p = Paired(mlfd, ind);
  REQUIRE(p.diffs.size() == 3);
  CHECK(p.diffs[0] == Approx(1.0));
  CHECK(p.diffs[1] == Approx(-1.0));
  CHECK(p.diffs[2] == Approx(1.0));
  CHECK(p.wins == 2);
  CHECK(p.Summary() == "+0.33 ± 1.15, 2/3 seeds");
  // Validation (seed 1: 95-94, seed 2: 96-98, seed 3: 97-94): +1, -2, +3 -> mean 2/3, std
  // sqrt(((1/3)^2 + (8/3)^2 + (7/3)^2) / 2) = sqrt(19/3) = 2.5166.
  CHECK(Paired(mlfd, ind, true).Summary() == "+0.67 ± 2.52, 2/3 seeds");
  // Only the seeds both rows have are paired; unknown seeds (-1) are never paired.
  ReportRow two = Row("joint_baseline", {2, 3, -1}, {0.90, 0.90, 0.10}, {});
  CHECK(Paired(mlfd, two).Summary() == "+1.50 ± 0.71, 2/2 seeds");
  CHECK(Paired(mlfd, two, true).Summary().empty());  // no validation values recorded
  ReportRow one = Row("x", {3}, {0.905}, {});
  CHECK(Paired(mlfd, one).Summary() == "+0.50, 1/1 seeds");
  CHECK(Paired(mlfd, Row("y", {7}, {0.5}, {})).Summary().empty());
}

TEST_CASE("report: findings print the paired comparison and evaluate records the seed", "[stage][report][stats][e2e]") {
  TempDir tmp;
  auto eval = [&](const std::string& file, const std::string& name, int seed, double test, double val) {
    mlfd_test::WriteText(tmp / file, Msg(R"({"name": ")", name, R"(", "dataset": "d", "split": "test", "arch": "resnet18",
      "seed": )", seed, R"(, "checkpoint_sha256": ")", file, R"(", "metrics": {"top1": )", test, R"(}, "val_top1": )", val, "}"));
    return tmp / file;
  };
  std::vector<std::string> files = {
      eval("m1.json", "mlfd", 1, 0.90, 0.95),    eval("m2.json", "mlfd", 2, 0.92, 0.96),
      eval("m3.json", "mlfd", 3, 0.91, 0.97),    eval("t1.json", "teacher", 1, 0.89, 0.94),
      eval("t2.json", "teacher", 2, 0.93, 0.98), eval("t3.json", "teacher", 3, 0.90, 0.94),
      eval("j1.json", "joint", 1, 0.88, 0.96),   eval("j2.json", "joint", 2, 0.88, 0.99),
      eval("j3.json", "joint", 3, 0.88, 0.95)};
  std::string md = ReportMarkdown(GatherReport(files), "t");
  INFO(md);
  CHECK(md.find("paired by seed: +0.33 ± 1.15, 2/3 seeds won") != std::string::npos);
  // T* - teacher on validation: +2, +1, +1 -> +1.33 ± 0.58.
  CHECK(md.find("paired by seed: +1.33 ± 0.58, 3/3 seeds above it") != std::string::npos);

  std::string store = mlfd_test::MakeStore(tmp, "toy", 2, 10, 8, 1, 3);
  auto t = RunTool("train_teacher", Msg("-v 0 --threads 2 --device cpu --arch resnet18 --width 0.125 --small-stem "
                                        "--embed-dim 16 --batch-size 16 --epochs 1 --seed 42 --out ", tmp / "t.h5 ", store));
  REQUIRE(t.exit_code == 0);
  auto e = RunTool("evaluate", Msg("-v 0 --device cpu --name teacher --out ", tmp / "e.json ", tmp / "t.h5 ", store));
  INFO(e.err);
  REQUIRE(e.exit_code == 0);
  CHECK(nlohmann::json::parse(mlfd_test::ReadText(tmp / "e.json"))["seed"] == 42);
}
