// report: the comparison table of a run (or several seeds' runs) from evaluate's JSON files.
#include <iostream>

#include "eval/report.h"
#include "app/app.h"
#include "dist/dist.h"
#include "util/error.h"
#include "util/file_roles.h"
#include "util/fs.h"
#include "util/staged_files.h"

int main(int argc, char** argv) {
  return mlfd::RunMain("report", [&] {
    mlfd::CommandLine cli(
        {"report",
         "Gathers evaluate's JSON files (run with --name <model>, on the test split) into one table per "
         "dataset: individual model, joint-training baseline, T*, KD, FitNet and MLFD students (and any "
         "other named model), with test top-1 as mean and standard deviation over the runs given (seeds) "
         "and validation top-1 next to it, followed by the findings (does the MLFD student beat the "
         "individual model and the joint-training baseline; T* against each own teacher). Rows named "
         "<model>@<variant> (evaluate --name mlfd@t8, the pipeline's VARIANTS) go to an ablation table per "
         "dataset instead: the base row <model> first, then each variant with its options (evaluate --note), "
         "and its paired difference by seed against the base row. --compare a:b adds any other pair of rows "
         "(main or variant), paired by seed, per dataset. Prints "
         "Markdown; writes Markdown and HTML (with the plots) when asked.",
         "report [options] <eval1.json> [<eval2.json> ...]",
         "report --md runs/demo/report.md --html runs/demo/report.html runs/demo/seed*/eval/*.json"});
    std::string md, html, title = "MLFD comparison report";
    std::vector<std::string> files, compare_text;
    cli.options().add_options()("md", mlfd::po::value(&md), "write the Markdown report here")(
        "html", mlfd::po::value(&html), "write the HTML report here")(
        "title", mlfd::po::value(&title)->default_value(title), "report title")(
        "compare", mlfd::po::value(&compare_text)->composing(),
        "a:b, repeatable: row a against row b (evaluate --name; variants <model>@<variant>), the paired "
        "difference of test and validation top-1 per seed, in every dataset with both");
    cli.AddPositionalList("eval", &files, "evaluate JSON files");
    mlfd::dist::RequireSingleProcess("report");
    if (!cli.Parse(argc, argv)) return 0;
    for (const auto& f : files) mlfd::DeclareInput("evaluation", f);
    if (!md.empty()) mlfd::CheckTextOutput("--md", md, mlfd::OutputKind::kMarkdown);
    if (!html.empty()) mlfd::CheckTextOutput("--html", html, mlfd::OutputKind::kHtml);
    std::vector<mlfd::ReportCompare> compares;
    for (const auto& c : compare_text) compares.push_back(mlfd::ParseCompare(c));
    auto tables = mlfd::GatherReport(files);
    mlfd::CheckCompares(tables, compares);
    std::string text = mlfd::ReportMarkdown(tables, title, compares);
    mlfd::StagedFiles staged;  // both written, then renamed together: a failure leaves neither
    if (!md.empty()) staged.Add(md, text);
    if (!html.empty()) {
      std::string dir = html.find('/') == std::string::npos ? "." : html.substr(0, html.rfind('/'));
      staged.Add(html, mlfd::ReportHtml(tables, title, dir, compares));
    }
    staged.Commit();
    std::cout << text;
    return 0;
  });
}
