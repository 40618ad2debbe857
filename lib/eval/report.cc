// The comparison report.
#include "eval/report.h"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <map>

#include "util/error.h"
#include "util/fs.h"
#include "util/json_view.h"

namespace mlfd {

namespace {
// The report's row order; other names follow alphabetically.
const std::vector<std::string>& KnownModels() {
  static const std::vector<std::string> k{"teacher", "team_a", "team_b", "team_c", "ce", "joint_baseline", "joint",
                                          "kd", "fitnet", "mlfd_code", "mlfd", "mtkd", "amtml", "feed1", "feed2", "feed",
                                          "unic"};
  return k;
}

std::string Describe(const std::string& model) {
  static const std::map<std::string, std::string> d{
      {"teacher", "individual (stage-1 teacher, this dataset only)"},
      {"joint_baseline", "joint-training baseline"},
      {"joint", "joint teacher T*"},
      {"kd", "KD student (from the individual teacher)"},
      {"fitnet", "FitNet student (from the individual teacher)"},
      {"mlfd_code", "MLFD student, last map only (mlfd_code)"},
      {"mlfd", "MLFD student"},
      {"team_a", "teacher a (same dataset)"},
      {"team_b", "teacher b (same dataset)"},
      {"team_c", "teacher c (same dataset)"},
      {"ce", "student trained alone (labels only, the students' recipe)"},
      {"mtkd", "uniform multi-teacher KD student"},
      {"amtml", "AMTML-KD student"},
      {"feed1", "FEED student, one teacher"},
      {"feed2", "sequential FEED, generation 2 (taught by the one-teacher FEED student)"},
      {"feed", "FEED student (parallel, every teacher)"},
      {"unic", "UNIC student"}};
  auto it = d.find(model);
  return it == d.end() ? model : it->second;
}

double Mean(const std::vector<double>& v) {
  double s = 0;
  for (double x : v) s += x;
  return v.empty() ? NAN : s / static_cast<double>(v.size());
}

double Std(const std::vector<double>& v) {
  if (v.size() < 2) return 0;
  double m = Mean(v), s = 0;
  for (double x : v) s += (x - m) * (x - m);
  return std::sqrt(s / static_cast<double>(v.size() - 1));
}

std::string Pct(double x) {
  char b[32];
  std::snprintf(b, sizeof(b), "%.2f", 100 * x);
  return b;
}

std::string HtmlEscape(const std::string& s) {
  std::string o;
  for (char c : s) {
    if (c == '<') o += "&lt;";
    else if (c == '>') o += "&gt;";
    else if (c == '&') o += "&amp;";
    else if (c == '"') o += "&quot;";
    else o += c;
  }
  return o;
}

const ReportRow* Find(const ReportTable& t, const std::string& model) {
  for (const auto& r : t.rows)
    if (r.model == model) return &r;
  return nullptr;
}

std::string Signed(double points) {
  char b[32];
  std::snprintf(b, sizeof(b), "%+.2f", points);
  return b;
}

// Findings per dataset, as plain sentences.
std::vector<std::string> Findings(const ReportTable& t) {
  std::vector<std::string> f;
  const ReportRow* mlfd = Find(t, "mlfd");
  const ReportRow* ind = Find(t, "teacher");
  const ReportRow* jb = Find(t, "joint_baseline");
  const ReportRow* joint = Find(t, "joint");
  auto cmp = [&](const ReportRow* a, const ReportRow* b, const std::string& what) {
    if (!a || !b || a->test_top1.empty() || b->test_top1.empty()) return;
    double d = Mean(a->test_top1) - Mean(b->test_top1);
    std::string paired = Paired(*a, *b).Summary();
    f.push_back(Msg(Describe(a->model), " ", d > 0 ? "beats" : "does not beat", " ", what, " on test top-1 (",
                    d >= 0 ? "+" : "", Pct(d), " points, means over ", a->test_top1.size(), " and ",
                    b->test_top1.size(), " runs", paired.empty() ? "" : "; paired by seed: " + paired + " won", ")."));
  };
  cmp(mlfd, ind, "the individually trained model");
  cmp(mlfd, jb, "the joint-training baseline");
  // The related methods (issue: AMTML-KD vs uniform multi-teacher KD, parallel FEED vs one
  // teacher, each against the student trained alone, or the individual model without one).
  const ReportRow* ce = Find(t, "ce");
  const ReportRow* alone = ce ? ce : ind;
  const std::string alone_what = ce ? "the student trained alone" : "the individually trained model";
  cmp(Find(t, "amtml"), Find(t, "mtkd"), "uniform multi-teacher KD");
  cmp(Find(t, "feed"), Find(t, "feed1"), "FEED with one teacher");
  cmp(Find(t, "feed2"), Find(t, "feed1"), "its teacher, the one-teacher FEED student");
  for (const char* m : {"mtkd", "amtml", "feed1", "feed", "feed2", "unic"}) cmp(Find(t, m), alone, alone_what);
  if (joint && ind && !joint->val_top1.empty() && !ind->val_top1.empty()) {
    double d = Mean(joint->val_top1) - Mean(ind->val_top1);
    std::string paired = Paired(*joint, *ind, /*val=*/true).Summary();
    f.push_back(Msg("On validation, T* is ", d >= 0 ? "+" : "", Pct(d), " points against the dataset's own teacher (",
                    Pct(Mean(joint->val_top1)), " vs ", Pct(Mean(ind->val_top1)),
                    paired.empty() ? "" : "; paired by seed: " + paired + " above it", ")",
                    d > 0 ? "." : ": the student cannot gain much from a T* that is not better than the teacher."));
  }
  return f;
}

// The ablation table of a dataset: per base model (in the main table's order, then any base
// without a row of its own), the base row then its variants.
struct AblationLine {
  const ReportRow* row;
  std::string base, variant;  // variant "" for the base row
  std::string paired;         // against the base row ("" for the base row)
};
std::vector<AblationLine> Ablations(const ReportTable& t) {
  std::vector<AblationLine> out;
  std::vector<std::string> bases;
  for (const auto& r : t.rows) bases.push_back(r.model);
  for (const auto& v : t.variants)
    if (std::find(bases.begin(), bases.end(), BaseModelOf(v.model)) == bases.end()) bases.push_back(BaseModelOf(v.model));
  for (const auto& b : bases) {
    const ReportRow* base = Find(t, b);
    bool any = false;
    for (const auto& v : t.variants) {
      if (BaseModelOf(v.model) != b) continue;
      if (!any && base) out.push_back({base, b, "", ""});
      any = true;
      std::string p = base ? Paired(v, *base).Summary() : "";
      out.push_back({&v, b, VariantOf(v.model), base ? (p.empty() ? "-" : p) : "no base row"});
    }
  }
  return out;
}

std::string MdCell(const std::string& x) {
  std::string o;
  for (char c : x) o += c == '|' ? std::string("\\|") : std::string(1, c);
  return o;
}

const char* kAblationIntro =
    "Each variant against its base row: the paired difference of test top-1 (variant minus base, points) "
    "over the seeds both have, mean ± standard deviation, and the seeds where the variant is above.";
}  // namespace

std::string BaseModelOf(const std::string& model) { return model.substr(0, model.find('@')); }
std::string VariantOf(const std::string& model) {
  auto at = model.find('@');
  return at == std::string::npos ? "" : model.substr(at + 1);
}

PairedDiff Paired(const ReportRow& a, const ReportRow& b, bool val) {
  PairedDiff p;
  const auto& va = val ? a.val_top1 : a.test_top1;
  const auto& vb = val ? b.val_top1 : b.test_top1;
  // Validation values are optional per run: pair only rows whose values line up with their seeds.
  if (va.size() != a.seeds.size() || vb.size() != b.seeds.size()) return p;
  std::map<int64_t, double> bv;
  for (size_t i = 0; i < vb.size(); ++i)
    if (b.seeds[i] >= 0) bv[b.seeds[i]] = vb[i];
  std::map<int64_t, double> d;
  for (size_t i = 0; i < va.size(); ++i) {
    auto it = bv.find(a.seeds[i]);
    if (a.seeds[i] >= 0 && it != bv.end()) d[a.seeds[i]] = 100.0 * (va[i] - it->second);
  }
  for (const auto& [seed, x] : d) {
    p.diffs.push_back(x);
    p.seeds.push_back(seed);
    if (x > 0) ++p.wins;
  }
  return p;
}

std::string PairedDiff::PerSeed() const {
  if (diffs.empty()) return "";
  std::string d, k;
  for (size_t i = 0; i < diffs.size(); ++i) {
    d += (i ? ", " : "") + Signed(diffs[i]);
    k += Msg(i ? ", " : "", seeds[i]);
  }
  return Msg(d, " (seed", seeds.size() > 1 ? "s " : " ", k, ")");
}

ReportCompare ParseCompare(const std::string& text) {
  auto colon = text.find(':');
  if (colon == std::string::npos || colon == 0 || colon + 1 == text.size() ||
      text.find(':', colon + 1) != std::string::npos)
    throw UsageError(Msg("--compare '", text, "': write two model names as a:b (e.g. mlfd@mixup_x2:teacher)"));
  ReportCompare c{text.substr(0, colon), text.substr(colon + 1)};
  if (c.a == c.b) throw UsageError(Msg("--compare '", text, "': compares a model with itself"));
  return c;
}

namespace {
const ReportRow* FindAny(const ReportTable& t, const std::string& model) {
  if (const ReportRow* r = Find(t, model)) return r;
  for (const auto& r : t.variants)
    if (r.model == model) return &r;
  return nullptr;
}

// The paired comparisons of one dataset: those whose two rows it has.
struct CompareLine {
  const ReportRow *a, *b;
  PairedDiff test, val;
};
std::vector<CompareLine> Compares(const ReportTable& t, const std::vector<ReportCompare>& compares) {
  std::vector<CompareLine> out;
  for (const auto& c : compares) {
    const ReportRow* a = FindAny(t, c.a);
    const ReportRow* b = FindAny(t, c.b);
    if (a && b) out.push_back({a, b, Paired(*a, *b), Paired(*a, *b, /*val=*/true)});
  }
  return out;
}

std::string RowName(const ReportRow& r) {
  return VariantOf(r.model).empty() ? Describe(r.model) : Msg(Describe(BaseModelOf(r.model)), ", variant ", VariantOf(r.model));
}

const char* kCompareIntro =
    "Each comparison asked for (report --compare a:b): the paired difference a - b of top-1 (points) per seed "
    "both have, its mean ± standard deviation, and the seeds where a is above.";
}  // namespace

void CheckCompares(const std::vector<ReportTable>& tables, const std::vector<ReportCompare>& compares) {
  for (const auto& c : compares)
    for (const std::string& name : {c.a, c.b}) {
      bool found = false;
      for (const auto& t : tables) found = found || FindAny(t, name);
      if (!found)
        throw Error(Msg("--compare ", c.a, ":", c.b, ": no evaluation named '", name,
                        "' among the files given (names are evaluate --name, variants <model>@<variant>)"));
    }
}

std::string PairedDiff::Summary() const {
  if (diffs.empty()) return "";
  double m = Mean(diffs);
  std::string s = Signed(m);
  if (diffs.size() > 1) {
    char b[32];
    std::snprintf(b, sizeof(b), "%.2f", Std(diffs));
    s += std::string(" ± ") + b;
  }
  return Msg(s, ", ", wins, "/", diffs.size(), " seeds");
}

std::string MeanStd(const std::vector<double>& v) {
  if (v.empty()) return "-";
  if (v.size() == 1) return Pct(v[0]);
  return Pct(Mean(v)) + " ± " + Pct(Std(v));
}

std::vector<ReportTable> GatherReport(const std::vector<std::string>& files) {
  std::map<std::string, std::map<std::string, ReportRow>> by;
  std::vector<std::string> dataset_order;
  // One run counted twice would shrink the spread and fake agreement: refuse the same file given
  // twice (under any spelling) and two files evaluating one checkpoint on one store and split.
  std::map<std::string, std::string> seen_file, seen_run;
  std::map<std::string, std::vector<std::string>> variant_order;  // per dataset, as first given
  for (const auto& path : files) {
    std::error_code ec;
    std::string real = std::filesystem::weakly_canonical(path, ec).string();
    auto [it, fresh] = seen_file.emplace(ec ? path : real, path);
    if (!fresh) throw Error(Msg(path, ": given twice (also as ", it->second, "); give each run once"));
    nlohmann::json j = ReadJsonFile(path);
    JsonView v(j, path);
    std::string ck_sha = j.value("checkpoint_sha256", "");
    if (!ck_sha.empty()) {
      std::string key = ck_sha + "|" + j.value("store_sha256", "") + "|" + j.value("split", "");
      auto [r, first] = seen_run.emplace(key, path);
      if (!first)
        throw Error(Msg(path, ": evaluates the same checkpoint (sha256 ", ck_sha.substr(0, 12),
                        ") on the same store and split as ", r->second, "; give each run once"));
    }
    std::string name = v.Str("name", "");
    if (name.empty()) throw Error(Msg(path, ": no \"name\" (run evaluate with --name <model>)"));
    std::string ds = v.Str("dataset");
    if (v.Str("split") != "test") throw Error(Msg(path, ": split '", v.Str("split"), "'; the report shows test results"));
    if (!by.count(ds)) dataset_order.push_back(ds);
    ReportRow& r = by[ds][name];
    r.model = name;
    r.arch = v.Str("arch", "");
    r.test_top1.push_back(j.at("metrics").at("top1").get<double>());
    if (j.contains("val_top1")) r.val_top1.push_back(j.at("val_top1").get<double>());
    r.seeds.push_back(j.contains("seed") && j["seed"].is_number_integer() ? j["seed"].get<int64_t>() : -1);
    r.runs.push_back(path);
    r.confusion_png.push_back(j.value("confusion_png", ""));
    r.curves_png.push_back(j.value("curves_png", ""));
    if (r.note.empty() && j.contains("note") && j["note"].is_string()) r.note = j["note"].get<std::string>();
    if (!VariantOf(name).empty() && (BaseModelOf(name).empty() || VariantOf(name).find('@') != std::string::npos))
      throw Error(Msg(path, ": name '", name, "': a variant row is <model>@<variant>"));
    auto& order = variant_order[ds];
    if (!VariantOf(name).empty() && std::find(order.begin(), order.end(), name) == order.end()) order.push_back(name);
  }
  std::vector<ReportTable> out;
  for (const auto& ds : dataset_order) {
    ReportTable t;
    t.dataset = ds;
    for (const auto& k : KnownModels())
      if (by[ds].count(k)) t.rows.push_back(by[ds][k]);
    for (const auto& [k, r] : by[ds])
      if (std::find(KnownModels().begin(), KnownModels().end(), k) == KnownModels().end() && VariantOf(k).empty())
        t.rows.push_back(r);
    for (const auto& k : variant_order[ds]) t.variants.push_back(by[ds][k]);
    out.push_back(t);
  }
  return out;
}

std::string ReportMarkdown(const std::vector<ReportTable>& tables, const std::string& title,
                           const std::vector<ReportCompare>& compares) {
  std::string s = "# " + title + "\n\n";
  s += "Top-1 accuracy (%), mean ± standard deviation over runs (seeds). Each run's checkpoint is the epoch "
       "with the best validation accuracy; the test split is read only here.\n";
  for (const auto& t : tables) {
    s += "\n## " + t.dataset + "\n\n| model | arch | runs | test top-1 | val top-1 |\n|---|---|---|---|---|\n";
    for (const auto& r : t.rows)
      s += Msg("| ", Describe(r.model), " | ", r.arch, " | ", r.test_top1.size(), " | ", MeanStd(r.test_top1), " | ",
               MeanStd(r.val_top1), " |\n");
    auto f = Findings(t);
    if (!f.empty()) {
      s += "\n";
      for (const auto& x : f) s += "- " + x + "\n";
    }
    auto ab = Ablations(t);
    if (!ab.empty()) {
      s += Msg("\n### Ablations: ", t.dataset, "\n\n", kAblationIntro, "\n\n",
               "| model | variant | options | runs | test top-1 | val top-1 | test vs base, paired by seed |\n"
               "|---|---|---|---|---|---|---|\n");
      for (const auto& a : ab)
        s += Msg("| ", MdCell(Describe(a.base)), " | ", a.variant.empty() ? "base" : MdCell(a.variant), " | ",
                 a.variant.empty() || a.row->note.empty() ? "-" : MdCell(a.row->note), " | ", a.row->test_top1.size(),
                 " | ", MeanStd(a.row->test_top1), " | ", MeanStd(a.row->val_top1), " | ",
                 a.variant.empty() ? "-" : a.paired, " |\n");
    }
    auto cl = Compares(t, compares);
    if (!cl.empty()) {
      s += Msg("\n### Paired comparisons: ", t.dataset, "\n\n", kCompareIntro, "\n\n",
               "| model a | model b | test a - b per seed | test a - b | val a - b |\n|---|---|---|---|---|\n");
      for (const auto& c : cl)
        s += Msg("| ", MdCell(RowName(*c.a)), " | ", MdCell(RowName(*c.b)), " | ",
                 c.test.diffs.empty() ? "no seed in common" : c.test.PerSeed(), " | ",
                 c.test.diffs.empty() ? "-" : c.test.Summary(), " | ", c.val.diffs.empty() ? "-" : c.val.Summary(),
                 " |\n");
    }
  }
  return s;
}

std::string ReportHtml(const std::vector<ReportTable>& tables, const std::string& title, const std::string& html_dir,
                       const std::vector<ReportCompare>& compares) {
  namespace fs = std::filesystem;
  auto rel = [&](const std::string& p) {
    if (p.empty()) return std::string();
    std::error_code ec;
    fs::path r = fs::relative(fs::absolute(p), fs::absolute(html_dir.empty() ? "." : html_dir), ec);
    return ec ? p : r.string();
  };
  std::string h = "<!DOCTYPE html>\n<html><head><meta charset=\"utf-8\"><title>" + HtmlEscape(title) +
                  "</title>\n<style>body{font-family:sans-serif;margin:2em;max-width:70em}table{border-collapse:"
                  "collapse;margin:1em 0}td,th{border:1px solid #999;padding:.3em .7em;text-align:left}"
                  "td.num{text-align:right;font-variant-numeric:tabular-nums}img{max-width:30em;margin:.3em}"
                  "</style></head>\n<body>\n<h1>" +
                  HtmlEscape(title) +
                  "</h1>\n<p>Top-1 accuracy (%), mean &plusmn; standard deviation over runs (seeds). Each run's "
                  "checkpoint is the epoch with the best validation accuracy; the test split is read only by "
                  "evaluate.</p>\n";
  for (const auto& t : tables) {
    h += "<h2>" + HtmlEscape(t.dataset) + "</h2>\n<table class=\"results\" data-dataset=\"" + HtmlEscape(t.dataset) +
         "\">\n<tr><th>model</th><th>arch</th><th>runs</th><th>test top-1</th><th>val top-1</th></tr>\n";
    for (const auto& r : t.rows)
      h += Msg("<tr data-model=\"", HtmlEscape(r.model), "\"><td>", HtmlEscape(Describe(r.model)), "</td><td>",
               HtmlEscape(r.arch), "</td><td class=\"num\">", r.test_top1.size(), "</td><td class=\"num test\">",
               HtmlEscape(MeanStd(r.test_top1)), "</td><td class=\"num val\">", HtmlEscape(MeanStd(r.val_top1)),
               "</td></tr>\n");
    h += "</table>\n";
    auto f = Findings(t);
    if (!f.empty()) {
      h += "<ul>\n";
      for (const auto& x : f) h += "<li>" + HtmlEscape(x) + "</li>\n";
      h += "</ul>\n";
    }
    auto ab = Ablations(t);
    if (!ab.empty()) {
      h += "<h3>Ablations: " + HtmlEscape(t.dataset) + "</h3>\n<p>" + HtmlEscape(kAblationIntro) +
           "</p>\n<table class=\"ablations\" data-dataset=\"" + HtmlEscape(t.dataset) +
           "\">\n<tr><th>model</th><th>variant</th><th>options</th><th>runs</th><th>test top-1</th><th>val top-1</th>"
           "<th>test vs base, paired by seed</th></tr>\n";
      for (const auto& a : ab)
        h += Msg("<tr data-model=\"", HtmlEscape(a.row->model), "\"><td>", HtmlEscape(Describe(a.base)), "</td><td>",
                 a.variant.empty() ? "base" : HtmlEscape(a.variant), "</td><td><code>",
                 a.variant.empty() ? "" : HtmlEscape(a.row->note), "</code></td><td class=\"num\">",
                 a.row->test_top1.size(), "</td><td class=\"num test\">", HtmlEscape(MeanStd(a.row->test_top1)),
                 "</td><td class=\"num val\">", HtmlEscape(MeanStd(a.row->val_top1)), "</td><td class=\"num paired\">",
                 a.variant.empty() ? "" : HtmlEscape(a.paired), "</td></tr>\n");
      h += "</table>\n";
    }
    auto cl = Compares(t, compares);
    if (!cl.empty()) {
      h += "<h3>Paired comparisons: " + HtmlEscape(t.dataset) + "</h3>\n<p>" + HtmlEscape(kCompareIntro) +
           "</p>\n<table class=\"compares\" data-dataset=\"" + HtmlEscape(t.dataset) +
           "\">\n<tr><th>model a</th><th>model b</th><th>test a - b per seed</th><th>test a - b</th><th>val a - b</th></tr>\n";
      for (const auto& c : cl)
        h += Msg("<tr data-a=\"", HtmlEscape(c.a->model), "\" data-b=\"", HtmlEscape(c.b->model), "\"><td>",
                 HtmlEscape(RowName(*c.a)), "</td><td>", HtmlEscape(RowName(*c.b)), "</td><td class=\"num\">",
                 HtmlEscape(c.test.diffs.empty() ? "no seed in common" : c.test.PerSeed()), "</td><td class=\"num\">",
                 HtmlEscape(c.test.Summary()), "</td><td class=\"num\">", HtmlEscape(c.val.Summary()), "</td></tr>\n");
      h += "</table>\n";
    }
    h += "<details><summary>Plots (first run of each model)</summary>\n";
    std::vector<const ReportRow*> plotted;
    for (const auto& r : t.rows) plotted.push_back(&r);
    for (const auto& r : t.variants) plotted.push_back(&r);
    for (const ReportRow* rp : plotted) {
      const ReportRow& r = *rp;
      h += "<h3>" + HtmlEscape(VariantOf(r.model).empty() ? Describe(r.model)
                                                          : Describe(BaseModelOf(r.model)) + ", variant " + VariantOf(r.model)) +
           "</h3>\n";
      if (!r.curves_png.empty() && !r.curves_png[0].empty() && PathExists(r.curves_png[0]))
        h += "<img alt=\"training curves\" src=\"" + HtmlEscape(rel(r.curves_png[0])) + "\">";
      if (!r.confusion_png.empty() && !r.confusion_png[0].empty() && PathExists(r.confusion_png[0]))
        h += "<img alt=\"confusion matrix\" src=\"" + HtmlEscape(rel(r.confusion_png[0])) + "\">";
      h += "\n";
    }
    h += "</details>\n";
  }
  h += "</body></html>\n";
  return h;
}

}  // namespace mlfd
