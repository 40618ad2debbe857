// Source readers for the layouts of the paper's datasets that the generic readers cannot
// describe: CIFAR's binary version (label bytes + planar 32x32 RGB records), CUB-200-2011 (id
// tables: images.txt, image_class_labels.txt, train_test_split.txt) and Oxford Flowers-102 (jpg/
// plus MATLAB files imagelabels.mat and setid.mat). The other paper datasets use the folder and
// list readers (data/sources.cc); docs/datasets.md shows the layout each reader expects.
#include <sys/stat.h>

#include <cmath>
#include <cstdio>
#include <map>
#include <utility>

#include "data/source_readers.h"
#include "io/mat5.h"
#include "util/error.h"
#include "util/json_view.h"

namespace mlfd {

namespace {

constexpr int kCifarSide = 32;
constexpr size_t kCifarPixels = kCifarSide * kCifarSide;  // per colour plane

bool IsDir(const std::string& path) {
  struct stat st;
  return stat(path.c_str(), &st) == 0 && S_ISDIR(st.st_mode);
}

bool IsFile(const std::string& path) {
  struct stat st;
  return stat(path.c_str(), &st) == 0 && S_ISREG(st.st_mode);
}

// A whole decimal integer (no sign, no trailing text); false otherwise.
bool ParseId(const std::string& s, int64_t* out) {
  if (s.empty() || s.size() > 18) return false;
  int64_t v = 0;
  for (char c : s) {
    if (c < '0' || c > '9') return false;
    v = v * 10 + (c - '0');
  }
  *out = v;
  return true;
}

// One row of a CUB id table ("<id> <value>").
struct IdRow {
  int64_t id;
  std::string value;
  size_t line;  // 1-based
};

// Reads "<id> <value>" lines in file order, rejecting malformed lines and duplicate ids.
std::vector<IdRow> ReadIdTable(const std::string& path) {
  std::vector<IdRow> rows;
  std::map<int64_t, size_t> seen;
  auto lines = ReadLines(path);
  for (size_t i = 0; i < lines.size(); ++i) {
    auto f = SplitFields(lines[i], " ");
    if (f.empty()) continue;
    IdRow r{0, "", i + 1};
    if (f.size() != 2 || !ParseId(f[0], &r.id))
      throw Error(
          Msg(path, ":", i + 1, ": expected \"<image id> <value>\", found '", lines[i], "'"));
    auto [it, inserted] = seen.emplace(r.id, i + 1);
    if (!inserted)
      throw Error(Msg(path, ":", i + 1, ": image id ", r.id, " repeats line ", it->second));
    r.value = f[1];
    rows.push_back(std::move(r));
  }
  return rows;
}

// Looks up the row of every image id of images.txt in another id table; both a missing and an
// unknown id are errors (the tables of one release always match).
std::map<int64_t, IdRow> MatchIds(const std::vector<IdRow>& images, const std::string& images_path,
                                  const std::vector<IdRow>& table, const std::string& path) {
  std::map<int64_t, IdRow> by_id;
  for (const auto& r : table) by_id.emplace(r.id, r);
  std::map<int64_t, size_t> image_ids;
  for (const auto& r : images) image_ids.emplace(r.id, r.line);
  for (const auto& r : table)
    if (!image_ids.count(r.id))
      throw Error(Msg(path, ":", r.line, ": image id ", r.id, " is not in ", images_path));
  for (const auto& r : images)
    if (!by_id.count(r.id))
      throw Error(Msg(path, ": no entry for image id ", r.id, " (listed at ", images_path, ":",
                      r.line, ")"));
  return by_id;
}

}  // namespace

// CIFAR-10/100 binary version: each record is `label_bytes` label bytes then a 32x32 image as
// three 1024-byte planes (R, G, B). CIFAR-100 records carry <coarse, fine>, so the class is
// label byte 1 (label_index); CIFAR-10 has one label byte.
std::vector<RawSample> ReadCifarBinarySource(const SourceContext& ctx) {
  JsonView s(ctx.source.spec, ctx.manifest.path, ctx.source.key_path);
  s.AllowOnly({"kind", "files", "split", "label_bytes", "label_index"});
  auto files = s.Strs("files");
  if (files.empty()) s.Fail("files", "needs at least one .bin file");
  const int64_t label_bytes = s.Int("label_bytes", 1);
  if (label_bytes < 1 || label_bytes > 8)
    s.Fail("label_bytes", "must be in 1..8 (1 for CIFAR-10, 2 for CIFAR-100)");
  const int64_t label_index = s.Int("label_index", label_bytes - 1);
  if (label_index < 0 || label_index >= label_bytes)
    s.Fail("label_index", Msg("must be in 0..", label_bytes - 1, " (a byte of the label)"));
  std::string split = s.Str("split", "");
  if (split == "all") split.clear();
  const size_t lb = static_cast<size_t>(label_bytes);
  const size_t record = lb + 3 * kCifarPixels;

  std::vector<RawSample> out;
  for (const auto& f : files) {
    std::string path = ctx.Resolve(f);
    if (!IsFile(path))
      s.Fail("files",
             "file " + path + " does not exist (is --data-root right? see docs/datasets.md)");
    std::string data = ReadFileMaybeGz(path);
    if (data.empty() || data.size() % record != 0)
      throw Error(Msg(path, ": ", data.size(), " bytes is not a whole number of ", record,
                      "-byte CIFAR records (", label_bytes, " label byte(s) + 3072 pixel bytes); ",
                      "truncated file, or wrong label_bytes?"));
    const size_t n = data.size() / record;
    const auto* bytes = reinterpret_cast<const uint8_t*>(data.data());
    for (size_t i = 0; i < n; ++i) {
      const uint8_t* rec = bytes + i * record;
      const uint8_t* planes = rec + lb;
      RawSample r;
      r.pixels = cv::Mat(kCifarSide, kCifarSide, CV_8UC3);
      uint8_t* px = r.pixels.data;  // interleave the planes; in-memory pixels are RGB
      for (size_t p = 0; p < kCifarPixels; ++p) {
        px[3 * p] = planes[p];
        px[3 * p + 1] = planes[kCifarPixels + p];
        px[3 * p + 2] = planes[2 * kCifarPixels + p];
      }
      r.label = rec[label_index];
      r.split = split;
      r.origin = Msg(path, "#", i);
      out.push_back(std::move(r));
    }
  }
  return out;
}

// CUB-200-2011: <root>/images.txt ("<id> <relpath>"), image_class_labels.txt ("<id> <1..200>"),
// train_test_split.txt ("<id> <1 = train | 0 = test>"), images under <root>/images/.
std::vector<RawSample> ReadCub200Source(const SourceContext& ctx) {
  JsonView s(ctx.source.spec, ctx.manifest.path, ctx.source.key_path);
  s.AllowOnly({"kind", "root", "split"});
  const std::string root = ctx.Resolve(s.Str("root", "CUB_200_2011"));
  const std::string want = s.Str("split", "all");
  if (want == "val")
    s.Fail("split",
           "CUB-200-2011 has only train and test (validation is carved from train by "
           "split.val_fraction)");
  if (!IsDir(root))
    s.Fail("root",
           "folder " + root + " does not exist (is --data-root right? see docs/datasets.md)");
  const std::string images_path = root + "/images.txt";
  const std::string labels_path = root + "/image_class_labels.txt";
  const std::string split_path = root + "/train_test_split.txt";
  for (const auto& p : {images_path, labels_path, split_path})
    if (!IsFile(p)) throw Error(Msg(p, ": no such file (not a CUB-200-2011 folder?)"));

  auto images = ReadIdTable(images_path);
  auto labels = MatchIds(images, images_path, ReadIdTable(labels_path), labels_path);
  auto splits = MatchIds(images, images_path, ReadIdTable(split_path), split_path);

  std::vector<RawSample> out;
  for (const auto& img : images) {
    const IdRow& lab = labels.at(img.id);
    const IdRow& sp = splits.at(img.id);
    int64_t cls = 0;
    if (!ParseId(lab.value, &cls) || cls < 1)
      throw Error(Msg(labels_path, ":", lab.line, ": class '", lab.value,
                      "' is not a class number (1-based)"));
    if (sp.value != "0" && sp.value != "1")
      throw Error(Msg(split_path, ":", sp.line, ": expected 1 (train) or 0 (test), found '",
                      sp.value, "'"));
    std::string tag = sp.value == "1" ? "train" : "test";
    if (want != "all" && want != tag) continue;
    RawSample r;
    r.file = root + "/images/" + img.value;
    r.label = cls - 1;
    r.split = tag;
    r.origin = Msg(images_path, ":", img.line);
    out.push_back(std::move(r));
  }
  return out;
}

// Oxford Flowers-102: <root>/jpg/image_%05d.jpg for ids 1..8189, <root>/imagelabels.mat
// (`labels`: class 1..102 of each id) and <root>/setid.mat (`trnid`, `valid`, `tstid`: the ids of
// the official train, validation and test sets).
std::vector<RawSample> ReadFlowers102Source(const SourceContext& ctx) {
  JsonView s(ctx.source.spec, ctx.manifest.path, ctx.source.key_path);
  s.AllowOnly({"kind", "root", "split"});
  const std::string root = ctx.Resolve(s.Str("root", "flowers102"));
  const std::string want = s.Str("split", "all");
  if (!IsDir(root))
    s.Fail("root",
           "folder " + root + " does not exist (is --data-root right? see docs/datasets.md)");
  if (!IsDir(root + "/jpg"))
    s.Fail("root", "folder " + root + "/jpg does not exist (extract 102flowers.tgz into " + root +
                       "; see docs/datasets.md)");
  const std::string labels_path = root + "/imagelabels.mat";
  const std::string setid_path = root + "/setid.mat";

  const std::vector<double> labels = mat5::ReadNumeric(labels_path, "labels");
  for (size_t i = 0; i < labels.size(); ++i)
    if (!(labels[i] >= 1 && labels[i] <= INT32_MAX && labels[i] == std::floor(labels[i])))
      throw Error(Msg(labels_path, ": labels(", i + 1, ") = ", labels[i],
                      " is not a class number (1-based)"));

  const std::pair<const char*, const char*> sets[] = {
      {"trnid", "train"}, {"valid", "val"}, {"tstid", "test"}};
  std::map<int64_t, std::string> taken;  // id -> set that listed it, to catch overlaps
  std::vector<RawSample> out;
  for (const auto& [var, tag] : sets) {
    if (want != "all" && want != tag) continue;
    const std::vector<double> ids = mat5::ReadNumeric(setid_path, var);
    for (size_t k = 0; k < ids.size(); ++k) {
      double v = ids[k];
      if (!(v >= 1 && v <= static_cast<double>(labels.size()) && v == std::floor(v)))
        throw Error(Msg(setid_path, ": ", var, "(", k + 1, ") = ", v, " is not an image id 1..",
                        labels.size(), " (", labels_path, " has ", labels.size(), " labels)"));
      const auto id = static_cast<int64_t>(v);
      auto [it, inserted] = taken.emplace(id, var);
      if (!inserted)
        throw Error(Msg(setid_path, ": image id ", id, " is in both ", it->second, " and ", var));
      char name[32];
      std::snprintf(name, sizeof(name), "/jpg/image_%05lld.jpg", static_cast<long long>(id));
      RawSample r;
      r.file = root + name;
      r.label = static_cast<int64_t>(labels[static_cast<size_t>(id - 1)]) - 1;
      r.split = tag;
      r.origin = r.file;
      out.push_back(std::move(r));
    }
  }
  return out;
}

}  // namespace mlfd
