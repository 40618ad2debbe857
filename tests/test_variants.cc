// Ablation variants: Makefile.pipeline's VARIANTS (VARIANT_STAGE_<v>, VARIANT_OPTS_<v>, VARIANT_DROP_<v>) train each
// variant per seed under seed<s>/variants/<v>/ and evaluate it as <model>@<v>; the report keeps those
// rows out of the main table and prints an ablation table per dataset, paired by seed against the
// base row.
#include <catch2/catch.hpp>

#include <filesystem>
#include <nlohmann/json.hpp>

#include "eval/report.h"
#include "test_util.h"
#include "util/error.h"

using namespace mlfd;
using mlfd_test::MakeStore;
using mlfd_test::TempDir;
namespace fs = std::filesystem;

namespace {

// The lines of `md` from the heading `from` up to the next heading ("## " or "### ").
std::string Section(const std::string& md, const std::string& from) {
  auto a = md.find(from);
  if (a == std::string::npos) return "";
  auto b = md.find("\n#", a + from.size());
  return md.substr(a, b == std::string::npos ? std::string::npos : b - a);
}

size_t Count(const std::string& s, const std::string& what) {
  size_t n = 0;
  for (auto p = s.find(what); p != std::string::npos; p = s.find(what, p + what.size())) ++n;
  return n;
}

// The table line of `section` that starts with `prefix` ("" when none).
std::string Line(const std::string& section, const std::string& prefix) {
  auto a = section.find("\n" + prefix);
  if (a == std::string::npos) return "";
  auto b = section.find('\n', a + 1);
  return section.substr(a + 1, b == std::string::npos ? std::string::npos : b - a - 1);
}

}  // namespace

TEST_CASE("report: ablation table of variant rows paired by seed against the base row", "[unit][report][variants]") {
  TempDir tmp;
  std::vector<std::string> files;
  auto write = [&](const std::string& name, int seed, double test, double val, const std::string& note = "") {
    std::string p = tmp / Msg(name.substr(0, name.find('@')), "_", name.find('@') == std::string::npos ? "" : name.substr(name.find('@') + 1),
                              "_", seed, ".json");
    nlohmann::json j{{"name", name},           {"dataset", "mnist"}, {"split", "test"}, {"arch", "resnet18"},
                     {"metrics", {{"top1", test}}}, {"val_top1", val}, {"seed", seed}};
    if (!note.empty()) j["note"] = note;
    mlfd_test::WriteText(p, j.dump());
    files.push_back(p);
  };
  write("mlfd", 1, 0.90, 0.80);
  write("mlfd", 2, 0.91, 0.81);
  write("mlfd", 3, 0.92, 0.82);
  // Given first, so listed first: variants keep the order they are first given.
  write("mlfd@zeta", 1, 0.91, 0.85, "distill_student --temperature 8");
  write("mlfd@zeta", 2, 0.93, 0.85, "distill_student --temperature 8");
  write("mlfd@zeta", 3, 0.92, 0.85, "distill_student --temperature 8");
  write("mlfd@alpha", 1, 0.89, 0.70, "distill_student --w-ce 0");
  write("mlfd@alpha", 2, 0.90, 0.70, "distill_student --w-ce 0");
  write("joint@res", 1, 0.50, 0.50, "build_joint --residual-logits");
  write("teacher", 1, 0.95, 0.95);

  auto tables = GatherReport(files);
  REQUIRE(tables.size() == 1);
  const auto& t = tables[0];
  REQUIRE(t.rows.size() == 2);  // teacher, mlfd: no variant in the main table
  CHECK(t.rows[0].model == "teacher");
  CHECK(t.rows[1].model == "mlfd");
  REQUIRE(t.variants.size() == 3);
  CHECK(t.variants[0].model == "mlfd@zeta");
  CHECK(t.variants[1].model == "mlfd@alpha");
  CHECK(t.variants[2].model == "joint@res");
  CHECK(t.variants[0].note == "distill_student --temperature 8");
  CHECK(BaseModelOf("mlfd@zeta") == "mlfd");
  CHECK(VariantOf("mlfd@zeta") == "zeta");
  CHECK(VariantOf("mlfd").empty());
  // Per seed: zeta - base = +1, +2, 0 points; alpha - base = -1, -1 (seeds 1 and 2 only).
  CHECK(Paired(t.variants[0], t.rows[1]).Summary() == "+1.00 ± 1.00, 2/3 seeds");
  CHECK(Paired(t.variants[1], t.rows[1]).Summary() == "-1.00 ± 0.00, 0/2 seeds");

  std::string md = ReportMarkdown(tables, "t");
  std::string main = Section(md, "## mnist");
  CHECK(main.find("zeta") == std::string::npos);
  CHECK(main.find("@") == std::string::npos);
  CHECK(Count(main, "| MLFD student |") == 1);
  std::string ab = Section(md, "### Ablations: mnist");
  INFO(md);
  REQUIRE_FALSE(ab.empty());
  CHECK(ab.find("| model | variant | options | runs | test top-1 | val top-1 | test vs base, paired by seed |") !=
        std::string::npos);
  CHECK(Line(ab, "| MLFD student | base |") == "| MLFD student | base | - | 3 | 91.00 ± 1.00 | 81.00 ± 1.00 | - |");
  CHECK(Line(ab, "| MLFD student | zeta |") ==
        "| MLFD student | zeta | distill_student --temperature 8 | 3 | 92.00 ± 1.00 | 85.00 ± 0.00 | +1.00 ± 1.00, 2/3 seeds |");
  CHECK(Line(ab, "| MLFD student | alpha |") ==
        "| MLFD student | alpha | distill_student --w-ce 0 | 2 | 89.50 ± 0.71 | 70.00 ± 0.00 | -1.00 ± 0.00, 0/2 seeds |");
  // A variant whose base model has no row of its own: shown, nothing to pair with.
  CHECK(Line(ab, "| joint teacher T* | res |") ==
        "| joint teacher T* | res | build_joint --residual-logits | 1 | 50.00 | 50.00 | no base row |");
  // Order: the base row, then its variants as given; mlfd's block before joint's (no base row).
  CHECK(ab.find("| MLFD student | base |") < ab.find("| MLFD student | zeta |"));
  CHECK(ab.find("| MLFD student | zeta |") < ab.find("| MLFD student | alpha |"));
  CHECK(ab.find("| MLFD student | alpha |") < ab.find("| joint teacher T* | res |"));
  // The findings still compare the base rows only.
  CHECK(main.find("MLFD student does not beat the individually trained model") != std::string::npos);

  std::string html = ReportHtml(tables, "t", tmp.path());
  CHECK(html.find("<table class=\"ablations\" data-dataset=\"mnist\">") != std::string::npos);
  CHECK(html.find("<tr data-model=\"mlfd@zeta\">") != std::string::npos);
  CHECK(html.find("<td class=\"num paired\">+1.00 ± 1.00, 2/3 seeds</td>") != std::string::npos);
  CHECK(html.find("<td class=\"num paired\">-1.00 ± 0.00, 0/2 seeds</td>") != std::string::npos);
  CHECK(html.find("<code>distill_student --w-ce 0</code>") != std::string::npos);
  CHECK(Count(html, "<tr data-model=\"mlfd\">") == 2);  // main table and ablation base row

  // --compare a:b: any two rows (main or variant), paired by seed; a dataset without both skips it.
  std::vector<ReportCompare> cmp{ParseCompare("mlfd@zeta:teacher"), ParseCompare("mlfd@alpha:mlfd@zeta"),
                                 ParseCompare("joint@res:mlfd")};
  CHECK(cmp[0].a == "mlfd@zeta");
  CHECK(cmp[0].b == "teacher");
  CHECK_NOTHROW(CheckCompares(tables, cmp));
  std::string md_cmp = ReportMarkdown(tables, "t", cmp);
  CHECK(md_cmp.substr(0, md.size()) == md);  // the comparisons come last; nothing else changes
  std::string pc = Section(md_cmp, "### Paired comparisons: mnist");
  INFO(pc);
  REQUIRE_FALSE(pc.empty());
  // zeta - teacher: seed 1 only (91 - 95 = -4 test, 85 - 95 = -10 val).
  CHECK(Line(pc, "| MLFD student, variant zeta | individual (stage-1 teacher, this dataset only) |") ==
        "| MLFD student, variant zeta | individual (stage-1 teacher, this dataset only) | -4.00 (seed 1) | "
        "-4.00, 0/1 seeds | -10.00, 0/1 seeds |");
  // alpha - zeta on seeds 1 and 2: 89 - 91 = -2, 90 - 93 = -3.
  CHECK(Line(pc, "| MLFD student, variant alpha | MLFD student, variant zeta |") ==
        "| MLFD student, variant alpha | MLFD student, variant zeta | -2.00, -3.00 (seeds 1, 2) | "
        "-2.50 ± 0.71, 0/2 seeds | -15.00 ± 0.00, 0/2 seeds |");
  CHECK(Line(pc, "| joint teacher T*, variant res | MLFD student |").find("-40.00 (seed 1)") != std::string::npos);
  std::string html_cmp = ReportHtml(tables, "t", tmp.path(), cmp);
  CHECK(html_cmp.find("<table class=\"compares\" data-dataset=\"mnist\">") != std::string::npos);
  CHECK(html_cmp.find("<tr data-a=\"mlfd@alpha\" data-b=\"mlfd@zeta\">") != std::string::npos);
  CHECK_THROWS_WITH(CheckCompares(tables, {ParseCompare("mlfd@zeta:kd")}),
                    Catch::Contains("--compare mlfd@zeta:kd: no evaluation named 'kd'"));
  CHECK_THROWS_WITH(ParseCompare("mlfd"), Catch::Contains("write two model names as a:b"));
  CHECK_THROWS_WITH(ParseCompare("mlfd:"), Catch::Contains("write two model names as a:b"));
  CHECK_THROWS_WITH(ParseCompare("a:b:c"), Catch::Contains("write two model names as a:b"));
  CHECK_THROWS_WITH(ParseCompare("mlfd:mlfd"), Catch::Contains("compares a model with itself"));

  // Without variant rows there is no ablation table.
  CHECK(ReportMarkdown(GatherReport({files[0], files[1]}), "t").find("Ablations") == std::string::npos);
  // A malformed variant name is refused.
  mlfd_test::WriteText(tmp / "bad.json", R"({"name": "@x", "dataset": "mnist", "split": "test", "metrics": {"top1": 0.5}})");
  CHECK_THROWS_WITH(GatherReport({tmp / "bad.json"}), Catch::Contains("a variant row is <model>@<variant>"));
}

TEST_CASE("Makefile.pipeline: VARIANTS train each variant per seed and the report prints their ablation tables",
          "[pipeline][variants][e2e]") {
  TempDir tmp;
  MakeStore(tmp, "va", 3, 12, 12, 1, 41);
  MakeStore(tmp, "vb", 2, 12, 12, 1, 42);
  const std::string tiny = "--small-stem --width 0.125 --embed-dim 16 --batch-size 16 --workers 1 --lr 0.05 --epochs 1";
  mlfd_test::WriteText(tmp / "var.mk", Msg("DATASETS = va vb\n",
                                           "TEACHER_OPTS = ", tiny, " --arch resnet18\n",
                                           "BASE_MODELS = teacher joint\n",
                                           "METHODS = mlfd\n",
                                           "JOINT_BUILD_OPTS = --adaptor-dim 8\n",
                                           "JOINT_OPTS = --batch-size 16 --workers 1 --optimizer adam --lr 0.003 --epochs 1\n",
                                           "STUDENT_OPTS = --batch-size 16 --workers 1 --lr 0.05 --epochs 1\n",
                                           "JOINT_MAPS = cached\nSTUDENT_SIGNALS = cached\n",
                                           "JOINT_CACHE_LEVELS = fused,pool\n",
                                           "VARIANTS = t8 res long kdm\n",
                                           "VARIANT_STAGE_t8 = student\n",
                                           "VARIANT_OPTS_t8 = --temperature 8\n",
                                           "VARIANT_STAGE_res = joint\n",
                                           "VARIANT_OPTS_res = --residual-logits\n",
                                           // A teacher variant trained longer: --epochs=1 drops '--epochs 1'.
                                           "VARIANT_STAGE_long = teacher\n",
                                           "VARIANT_DROP_long = --epochs=1\n",
                                           "VARIANT_OPTS_long = --epochs 2\n",
                                           // A KD student variant from the dataset's own teacher.
                                           "VARIANT_METHOD_kdm = kd\n",
                                           "VARIANT_OPTS_kdm = --temperature 2\n",
                                           // Pairs for the report; one names a variant this run lacks.
                                           "REPORT_COMPARE = kd@kdm:teacher@long mlfd@t8:teacher mlfd@gone:teacher\n"));
  const std::string make = Msg("make -C ", MLFD_SOURCE_DIR, " -f Makefile.pipeline PIPELINE=var PIPELINE_FILE=", tmp / "var.mk",
                               " MANIFESTS=", tmp.path(), " RUN=", tmp / "run", " BIN=", MLFD_BIN_DIR, " VERBOSE=0 SEEDS='1 2'");
  auto plan = mlfd_test::RunShell(make + " -n");
  INFO(plan.err);
  REQUIRE(plan.exit_code == 0);
  CHECK(plan.out.find("--name mlfd@t8 --note 'distill_student --temperature 8'") != std::string::npos);
  CHECK(plan.out.find("--name joint@res --note 'build_joint --residual-logits'") != std::string::npos);
  CHECK(plan.out.find("--residual-logits --seed 2") != std::string::npos);
  CHECK(plan.out.find("--lr 0.05 --arch resnet18 --epochs 2 --seed 2 --out " + tmp / "run/seed2/variants/long/teachers/vb.h5 " +
                      tmp / "run/data/vb.h5") != std::string::npos);
  CHECK(plan.out.find("--name teacher@long --note 'train_teacher without --epochs=1, with --epochs 2'") != std::string::npos);
  CHECK(plan.out.find("--method kd --batch-size 16 --workers 1 --lr 0.05 --epochs 1 --temperature 2 --seed 1 --like " +
                      tmp / "run/seed1/teachers/va.h5 --teacher " + tmp / "run/seed1/teachers/va.h5 --teacher-signals cached --features " +
                      tmp / "run/seed1/features/teacher_va.h5 --out " + tmp / "run/seed1/variants/kdm/students/kd_va.h5") !=
        std::string::npos);
  CHECK(plan.out.find("--name kd@kdm --note 'distill_student --temperature 2'") != std::string::npos);

  auto run = mlfd_test::RunShell(make + " -j2");
  INFO(run.out.substr(run.out.size() > 3000 ? run.out.size() - 3000 : 0)
       << run.err.substr(run.err.size() > 3000 ? run.err.size() - 3000 : 0));
  REQUIRE(run.exit_code == 0);
  for (const char* f : {"seed1/variants/t8/students/mlfd_va.h5", "seed2/variants/t8/eval/mlfd_vb.json",
                        "seed1/variants/res/joint/init.h5", "seed2/variants/res/joint/final.h5",
                        "seed1/variants/res/features/teacher_maps_vb.h5", "seed2/variants/res/features/joint_va.h5",
                        "seed2/variants/res/students/mlfd_vb.h5", "seed1/variants/res/eval/joint_va.json",
                        "seed2/variants/long/teachers/va.h5", "seed1/variants/long/eval/teacher_vb.json",
                        "seed1/variants/kdm/students/kd_vb.h5", "seed2/variants/kdm/eval/kd_va.json"}) {
    INFO(f);
    CHECK(mlfd_test::FileExists(tmp / Msg("run/", f)));
  }
  CHECK_FALSE(mlfd_test::FileExists(tmp / "run/seed1/variants/t8/joint/final.h5"));  // a student variant uses T*
  // A teacher variant trains no student; a KD variant none of MLFD.
  CHECK_FALSE(mlfd_test::FileExists(tmp / "run/seed1/variants/long/students"));
  CHECK_FALSE(mlfd_test::FileExists(tmp / "run/seed1/variants/kdm/students/mlfd_va.h5"));
  auto long_teacher = nlohmann::json::parse(mlfd_test::ReadText(tmp / "run/seed1/variants/long/teachers/va.json"));
  CHECK(long_teacher.at("epochs_run") == 2);
  auto ev = nlohmann::json::parse(mlfd_test::ReadText(tmp / "run/seed2/variants/t8/eval/mlfd_va.json"));
  CHECK(ev.at("name") == "mlfd@t8");
  CHECK(ev.at("note") == "distill_student --temperature 8");
  CHECK(ev.at("seed") == 2);

  std::string md = mlfd_test::ReadText(tmp / "run/report.md");
  INFO(md);
  for (const char* ds : {"va", "vb"}) {
    std::string main = Section(md, Msg("## ", ds, "\n"));
    CHECK(Count(main, "| MLFD student | resnet18 | 2 |") == 1);
    CHECK(main.find("@") == std::string::npos);
    std::string ab = Section(md, Msg("### Ablations: ", ds));
    REQUIRE_FALSE(ab.empty());
    // The MLFD student's base row and one row per variant (two extra rows), and T* with its variant.
    CHECK(Count(ab, "| MLFD student |") == 3);
    CHECK(Line(ab, "| MLFD student | base |").find("| - | 2 |") != std::string::npos);
    for (const char* prefix : {"| MLFD student | t8 | distill_student --temperature 8 | 2 |",
                               "| MLFD student | res | build_joint --residual-logits | 2 |",
                               "| joint teacher T* | res | build_joint --residual-logits | 2 |"}) {
      std::string line = Line(ab, prefix);
      INFO(prefix);
      CHECK_FALSE(line.empty());
      CHECK(line.find("/2 seeds |") != std::string::npos);  // paired against the base row on both seeds
    }
    CHECK(Line(ab, "| joint teacher T* | base |").find("| - | 2 |") != std::string::npos);
    // The teacher variant against the individual model; the KD variant has no base row (METHODS has no kd).
    std::string long_line = Line(ab, "| individual (stage-1 teacher, this dataset only) | long | train_teacher without --epochs=1, with --epochs 2 | 2 |");
    CHECK(long_line.find("/2 seeds |") != std::string::npos);
    CHECK(Line(ab, "| KD student (from the individual teacher) | kdm | distill_student --temperature 2 | 2 |").find("no base row") != std::string::npos);
    std::string pc = Section(md, Msg("### Paired comparisons: ", ds));
    CHECK(Line(pc, "| KD student (from the individual teacher), variant kdm | individual (stage-1 teacher, this dataset only), "
                   "variant long | ").find("(seeds 1, 2) |") != std::string::npos);
    CHECK(Line(pc, "| MLFD student, variant t8 | individual (stage-1 teacher, this dataset only) | ").find("/2 seeds |") !=
          std::string::npos);
    CHECK(pc.find("gone") == std::string::npos);
  }
  std::string html = mlfd_test::ReadText(tmp / "run/report.html");
  CHECK(Count(html, "<table class=\"ablations\"") == 2);

  // Everything is up to date: make plans nothing but printing the report.
  auto nothing = mlfd_test::RunShell(make + " -n");
  REQUIRE(nothing.exit_code == 0);
  CHECK(nothing.out.find(MLFD_BIN_DIR) == std::string::npos);
  // Deleting a variant's student reruns it and its evaluation only.
  fs::remove(tmp / "run/seed1/variants/t8/students/mlfd_vb.h5");
  auto again = mlfd_test::RunShell(make + " -n");
  CHECK(Count(again.out, "bin/distill_student") == 1);
  CHECK(again.out.find("--temperature 8 --seed 1") != std::string::npos);
  CHECK(Count(again.out, "bin/evaluate") == 1);
  CHECK(again.out.find("build_joint") == std::string::npos);

  // A finetune variant: the seed's initial T* (and its cached teacher maps) fine-tuned with its options.
  auto ft = mlfd_test::RunShell(make + " -n VARIANTS='t8 res ft' VARIANT_STAGE_ft=finetune VARIANT_OPTS_ft='--lr 0.001'");
  INFO(ft.out << ft.err);
  REQUIRE(ft.exit_code == 0);
  CHECK(ft.out.find("build_joint") == std::string::npos);
  CHECK(ft.out.find("--epochs 1 --lr 0.001 --seed 2") != std::string::npos);
  CHECK(ft.out.find("--features " + tmp / "run/seed2/features/teacher_maps_va.h5," + tmp / "run/seed2/features/teacher_maps_vb.h5") !=
        std::string::npos);
  CHECK(ft.out.find("--out " + tmp / "run/seed2/variants/ft/joint/final.h5 " + tmp / "run/seed2/joint/init.h5") !=
        std::string::npos);
  CHECK(ft.out.find("--name joint@ft --note 'finetune_joint --lr 0.001'") != std::string::npos);
  // VARIANT_DROP_<v>: base options the variant leaves out, in its stage only; the note says so.
  auto drop = mlfd_test::RunShell(make + " -n VARIANTS='t8 res plain' JOINT_BUILD_OPTS='--adaptor-dim=8 --residual-logits'"
                                         " VARIANT_STAGE_plain=joint VARIANT_DROP_plain='--residual-logits --adaptor-dim=8'"
                                         " VARIANT_OPTS_plain=--adaptor-dim=4 VARIANT_OPTS_res=--dropout=0.2");
  INFO(drop.out << drop.err);
  REQUIRE(drop.exit_code == 0);
  auto line_with = [](const std::string& text, const std::string& what) {
    size_t at = text.find(what);
    if (at == std::string::npos) return std::string();
    size_t begin = text.rfind('\n', at);
    begin = begin == std::string::npos ? 0 : begin + 1;
    return text.substr(begin, text.find('\n', at) - begin);
  };
  std::string plain_build = line_with(drop.out, "--out " + tmp / "run/seed2/variants/plain/joint/init.h5");
  REQUIRE_FALSE(plain_build.empty());
  CHECK(plain_build.find("--residual-logits") == std::string::npos);
  CHECK(plain_build.find("--adaptor-dim=8") == std::string::npos);
  CHECK(plain_build.find(" --adaptor-dim=4 --seed 2 ") != std::string::npos);
  // The base T* and the other variant keep the dropped options.
  CHECK(line_with(drop.out, "--out " + tmp / "run/seed2/variants/res/joint/init.h5")
            .find("--adaptor-dim=8 --residual-logits --dropout=0.2 --seed 2") != std::string::npos);
  CHECK(line_with(drop.out, "--out " + tmp / "run/seed2/joint/init.h5").find("--adaptor-dim=8 --residual-logits --seed 2") !=
        std::string::npos);
  CHECK(drop.out.find("--name joint@plain --note 'build_joint without --residual-logits --adaptor-dim=8, with --adaptor-dim=4'") !=
        std::string::npos);
  auto typo = mlfd_test::RunShell(make + " -n VARIANT_DROP_t8=--temprature");
  CHECK(typo.exit_code != 0);
  CHECK(typo.err.find("VARIANT_DROP_t8: '--temprature' is not in the student stage's options") != std::string::npos);
  // Unknown stages and malformed names stop make at once.
  auto bad = mlfd_test::RunShell(make + " -n VARIANTS=x VARIANT_STAGE_x=trainer");
  CHECK(bad.exit_code != 0);
  CHECK(bad.err.find("VARIANT_STAGE_x = 'trainer': must be student, joint, finetune or teacher") != std::string::npos);
  auto method = mlfd_test::RunShell(make + " -n VARIANTS=x VARIANT_METHOD_x=unic");
  CHECK(method.exit_code != 0);
  CHECK(method.err.find("VARIANT_METHOD_x = 'unic': must be mlfd, kd or fitnet") != std::string::npos);
  auto method_stage = mlfd_test::RunShell(make + " -n VARIANTS=x VARIANT_STAGE_x=joint VARIANT_METHOD_x=kd");
  CHECK(method_stage.exit_code != 0);
  CHECK(method_stage.err.find("only a student variant chooses its method") != std::string::npos);
  // A KD variant's base is the KD row's options: an MLFD_OPTS word is not in it.
  auto kd_drop = mlfd_test::RunShell(make + " -n MLFD_OPTS=--w-ce=0.2 VARIANT_DROP_kdm=--w-ce=0.2");
  CHECK(kd_drop.exit_code != 0);
  CHECK(kd_drop.err.find("VARIANT_DROP_kdm: '--w-ce=0.2' is not in the student stage's options") != std::string::npos);
  auto teacher_typo = mlfd_test::RunShell(make + " -n VARIANT_DROP_long=--epochs=3");
  CHECK(teacher_typo.exit_code != 0);
  CHECK(teacher_typo.err.find("VARIANT_DROP_long: '--epochs=3' is not in the teacher stage's options") != std::string::npos);
  auto twice = mlfd_test::RunShell(make + " -n VARIANTS='t8 t8'");
  CHECK(twice.exit_code != 0);
  CHECK(twice.err.find("VARIANTS names a variant twice") != std::string::npos);
}
