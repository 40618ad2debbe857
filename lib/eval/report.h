// The comparison report: every evaluated model of a run (evaluate's JSON files, one per model,
// dataset and seed) gathered into one table per dataset, with test top-1 as mean and standard
// deviation over seeds (the checkpoint of each run is the epoch chosen on validation), validation
// top-1 next to it, and T* against each dataset's own teacher on validation. Written as Markdown
// and as a self-contained HTML page that links the training-curve and confusion-matrix plots.
// Rows named <model>@<variant> (ablation variants, Makefile.pipeline's VARIANTS) are kept out of
// the main table: each dataset gets an ablation table with the base row <model> first, then its
// variants, each paired by seed against the base row.
#pragma once

#include <nlohmann/json.hpp>
#include <string>
#include <vector>

namespace mlfd {

struct ReportRow {
  std::string model;                 // evaluate --name (e.g. teacher, joint_baseline, joint, kd, fitnet, mlfd)
  std::string arch;
  std::vector<double> test_top1, val_top1;  // one per seed (run)
  std::vector<int64_t> seeds;        // the seed each run was trained with (-1: not recorded)
  std::vector<std::string> runs;     // where each value came from
  std::vector<std::string> confusion_png, curves_png;
  std::string note;                  // evaluate --note of its first run that has one (a variant's options)
};

// "mlfd@t8" -> base "mlfd", variant "t8"; a name without '@' is its own base, variant "".
std::string BaseModelOf(const std::string& model);
std::string VariantOf(const std::string& model);

struct ReportTable {
  std::string dataset;
  std::vector<ReportRow> rows;      // in the report's order; no variant rows
  std::vector<ReportRow> variants;  // rows named <model>@<variant>, in the order first given
};

// Reads evaluate JSON files (each must have "name", "dataset", "split" and metrics).
std::vector<ReportTable> GatherReport(const std::vector<std::string>& eval_files);
// A comparison the user asks for (report --compare a:b): row a against row b, paired by seed, in
// every dataset that has both (main or variant rows, e.g. mlfd@mixup_x2:teacher@epochs_x2).
struct ReportCompare {
  std::string a, b;
};
// Parses "a:b" (two model names, variant rows as <model>@<variant>); throws UsageError otherwise.
ReportCompare ParseCompare(const std::string& text);
// Throws Error when a compared name is a row of no dataset (a typo would print nothing).
void CheckCompares(const std::vector<ReportTable>& tables, const std::vector<ReportCompare>& compares);

// Markdown: one table per dataset, then the findings (does the MLFD student beat the individual
// model and the joint-training baseline; T* vs own teacher on validation), then the dataset's
// ablation table when it has variant rows, then the paired comparisons asked for.
std::string ReportMarkdown(const std::vector<ReportTable>& tables, const std::string& title,
                           const std::vector<ReportCompare>& compares = {});
// HTML (plots referenced relative to `html_dir`).
std::string ReportHtml(const std::vector<ReportTable>& tables, const std::string& title, const std::string& html_dir,
                       const std::vector<ReportCompare>& compares = {});

// Paired comparison of two rows over the seeds both have (same seed, same data): the per-seed
// differences a - b of test top-1 (or validation top-1 with `val`), in points.
struct PairedDiff {
  std::vector<double> diffs;  // percentage points, in seed order
  std::vector<int64_t> seeds;  // the seed of each difference
  int wins = 0;               // seeds where a > b
  std::string Summary() const;  // "+0.84 ± 0.31, 3/3 seeds" ("" when no seed is shared)
  std::string PerSeed() const;  // "+0.43, +0.80, +1.35 (seeds 1, 2, 3)" ("" when no seed is shared)
};
PairedDiff Paired(const ReportRow& a, const ReportRow& b, bool val = false);

// "12.34 ± 0.56" (percent) or "12.34" for one value.
std::string MeanStd(const std::vector<double>& v);

}  // namespace mlfd
