// Source readers for videos (action recognition): video files in class folders, pre-extracted
// frame folders in class folders, and the official split files of UCF101 and HMDB51. They list
// samples only; prepare_data decodes and samples the clips (data/clips.h). docs/formats.md lists
// the keys, docs/datasets.md the layouts.
#include <sys/stat.h>

#include <algorithm>
#include <map>

#include "data/source_readers.h"
#include "util/error.h"
#include "util/json_view.h"
#include "util/log.h"
#include "util/options.h"

namespace mlfd {

namespace {

bool IsDir(const std::string& path) {
  struct stat st;
  return stat(path.c_str(), &st) == 0 && S_ISDIR(st.st_mode);
}

bool IsFile(const std::string& path) {
  struct stat st;
  return stat(path.c_str(), &st) == 0 && S_ISREG(st.st_mode);
}

std::string RequireDir(const JsonView& s, const SourceContext& ctx, const std::string& key,
                       const std::string& fallback) {
  std::string dir = ctx.Resolve(s.Str(key, fallback));
  if (!IsDir(dir))
    s.Fail(key, "folder " + dir + " does not exist (is --data-root right? see docs/datasets.md)");
  return dir;
}

double FrameRateOf(const JsonView& s) {
  double r = s.Num("frame_rate", 0.0);
  if (!(r >= 0 && r < 1e6)) s.Fail("frame_rate", "must be >= 0 (frames per second; 0 = unknown)");
  return r;
}

// "video" (files) or "frames" (a folder per video: the file's path without its extension).
std::string LayoutOf(const JsonView& s) {
  std::string layout = s.Str("layout", "video");
  if (layout != "video" && layout != "frames") s.Fail("layout", "must be \"video\" or \"frames\"");
  return layout;
}

int SplitIdOf(const JsonView& s) {
  int id = s.Int32("split_id", 1);
  if (id < 1 || id > 3)
    s.Fail("split_id", "must be 1, 2 or 3 (the dataset's three official splits)");
  return id;
}

std::string WithoutExtension(const std::string& path) {
  auto slash = path.rfind('/');
  auto dot = path.rfind('.');
  return dot != std::string::npos && (slash == std::string::npos || dot > slash)
             ? path.substr(0, dot)
             : path;
}

RawSample Video(const std::string& path, const std::string& layout, const std::string& cls,
                const std::string& split, double frame_rate) {
  RawSample r;
  r.media = layout == "frames" ? "frames" : "video";
  r.file = layout == "frames" ? WithoutExtension(path) : path;
  r.frame_rate = frame_rate;
  r.label_name = cls;
  r.split = split;
  r.origin = r.file;
  return r;
}

}  // namespace

std::vector<std::string> DefaultVideoExtensions() {
  return {".avi", ".mp4",  ".mkv", ".webm", ".mov", ".m4v",
          ".mpg", ".mpeg", ".flv", ".wmv",  ".3gp", ".ogv"};
}

// <root>/<class>/<video file>; the class is the folder name.
std::vector<RawSample> ReadVideoFolderSource(const SourceContext& ctx) {
  JsonView s(ctx.source.spec, ctx.manifest.path, ctx.source.key_path);
  s.AllowOnly({"kind", "root", "split", "extensions"});
  const std::string root = RequireDir(s, ctx, "root", "");
  auto exts = s.Has("extensions") ? s.Strs("extensions") : DefaultVideoExtensions();
  for (auto& e : exts) std::transform(e.begin(), e.end(), e.begin(), ::tolower);
  const std::string split = SplitOf(s);
  std::vector<RawSample> out;
  for (const auto& cls : ListDir(root, true)) {
    size_t before = out.size();
    for (const auto& f : ListDir(root + "/" + cls, false))
      if (IsImageFile(f, exts))
        out.push_back(Video(root + "/" + cls + "/" + f, "video", cls, split, 0));
    if (out.size() == before)
      MLOG(WARNING) << root << "/" << cls << ": no video files (extensions " << JoinNames(exts)
                    << "), so class '" << cls << "' has no videos in " << ctx.source.key_path;
  }
  return out;
}

// <root>/<class>/<video>/<frame images>; the class is the outer folder's name.
std::vector<RawSample> ReadFrameFolderSource(const SourceContext& ctx) {
  JsonView s(ctx.source.spec, ctx.manifest.path, ctx.source.key_path);
  s.AllowOnly({"kind", "root", "split", "frame_rate"});
  const std::string root = RequireDir(s, ctx, "root", "");
  const double rate = FrameRateOf(s);
  const std::string split = SplitOf(s);
  std::vector<RawSample> out;
  for (const auto& cls : ListDir(root, true)) {
    size_t before = out.size();
    for (const auto& v : ListDir(root + "/" + cls, true))
      out.push_back(Video(root + "/" + cls + "/" + v, "frames", cls, split, rate));
    if (out.size() == before)
      MLOG(WARNING) << root << "/" << cls << ": no video folders, so class '" << cls
                    << "' has no videos in " << ctx.source.key_path;
  }
  return out;
}

// UCF101: <root>/<Class>/v_<Class>_gXX_cYY.avi and the lists of
// UCF101TrainTestSplits-RecognitionTask.zip: <lists>/classInd.txt ("<1..101> <Class>"),
// trainlist0<k>.txt ("<Class>/<video>.avi <1..101>") and testlist0<k>.txt ("<Class>/<video>.avi").
std::vector<RawSample> ReadUcf101Source(const SourceContext& ctx) {
  JsonView s(ctx.source.spec, ctx.manifest.path, ctx.source.key_path);
  s.AllowOnly({"kind", "root", "lists", "split_id", "split", "layout", "frame_rate"});
  const std::string root = RequireDir(s, ctx, "root", "UCF-101");
  const std::string lists = RequireDir(s, ctx, "lists", "ucfTrainTestlist");
  const int id = SplitIdOf(s);
  const std::string layout = LayoutOf(s);
  const double rate = FrameRateOf(s);
  const std::string want = s.Str("split", "all");
  if (want == "val")
    s.Fail("split",
           "UCF101 has only train and test lists (validation is carved from train by "
           "split.val_fraction)");

  const std::string class_path = lists + "/classInd.txt";
  if (!IsFile(class_path))
    throw Error(Msg(class_path, ": no such file (not UCF101's ucfTrainTestlist folder?)"));
  std::map<std::string, int64_t> class_index;  // name -> 1-based index
  auto class_lines = ReadLines(class_path);
  for (size_t i = 0; i < class_lines.size(); ++i) {
    auto f = SplitFields(class_lines[i], " ");
    if (f.empty()) continue;
    if (f.size() != 2 || f[0].find_first_not_of("0123456789") != std::string::npos ||
        f[0].size() > 9)
      throw Error(Msg(class_path, ":", i + 1, ": expected \"<index> <class>\", found '",
                      class_lines[i], "'"));
    class_index[f[1]] = std::stoll(f[0]);
  }

  std::vector<RawSample> out;
  for (const std::string tag : {"train", "test"}) {
    if (want != "all" && want != tag) continue;
    const std::string list = Msg(lists, "/", tag, "list0", id, ".txt");
    if (!IsFile(list))
      throw Error(Msg(list, ": no such file (UCF101's split ", id, " ", tag, " list)"));
    auto lines = ReadLines(list);
    for (size_t i = 0; i < lines.size(); ++i) {
      auto f = SplitFields(lines[i], " ");
      if (f.empty()) continue;
      const std::string where = Msg(list, ":", i + 1);
      auto slash = f[0].find('/');
      if (slash == std::string::npos || slash == 0 || f.size() > 2)
        throw Error(Msg(where, ": expected \"<Class>/<video>.avi\"",
                        tag == "train" ? " <class index>" : "", ", found '", lines[i], "'"));
      const std::string cls = f[0].substr(0, slash);
      auto it = class_index.find(cls);
      if (it == class_index.end())
        throw Error(Msg(where, ": class '", cls, "' is not in ", class_path));
      if (f.size() == 2 && f[1] != std::to_string(it->second))
        throw Error(Msg(where, ": class index ", f[1], " but ", class_path, " gives '", cls,
                        "' index ", it->second));
      out.push_back(Video(root + "/" + f[0], layout, cls, tag, rate));
    }
  }
  return out;
}

// HMDB51: <root>/<class>/<video>.avi and test_train_splits.rar's
// <lists>/<class>_test_split<k>.txt, a line per video of the class: "<video>.avi <mark>", mark 1 =
// train, 2 = test, 0 = not in split k.
std::vector<RawSample> ReadHmdb51Source(const SourceContext& ctx) {
  JsonView s(ctx.source.spec, ctx.manifest.path, ctx.source.key_path);
  s.AllowOnly({"kind", "root", "lists", "split_id", "split", "layout", "frame_rate"});
  const std::string root = RequireDir(s, ctx, "root", "hmdb51");
  const std::string lists = RequireDir(s, ctx, "lists", "testTrainMulti_7030_splits");
  const int id = SplitIdOf(s);
  const std::string layout = LayoutOf(s);
  const double rate = FrameRateOf(s);
  const std::string want = s.Str("split", "all");
  if (want == "val")
    s.Fail("split",
           "HMDB51 has only train and test marks (validation is carved from train by "
           "split.val_fraction)");

  const std::string suffix = Msg("_test_split", id, ".txt");
  std::vector<RawSample> out;
  int files = 0;
  for (const auto& name : ListDir(lists, false)) {
    if (name.size() <= suffix.size() ||
        name.compare(name.size() - suffix.size(), suffix.size(), suffix) != 0)
      continue;
    ++files;
    const std::string cls = name.substr(0, name.size() - suffix.size());
    const std::string path = lists + "/" + name;
    auto lines = ReadLines(path);
    for (size_t i = 0; i < lines.size(); ++i) {
      auto f = SplitFields(lines[i], " ");
      if (f.empty()) continue;
      if (f.size() != 2 || (f[1] != "0" && f[1] != "1" && f[1] != "2"))
        throw Error(Msg(path, ":", i + 1,
                        ": expected \"<video>.avi <0|1|2>\" (0 unused, 1 train, 2 test), found '",
                        lines[i], "'"));
      if (f[1] == "0") continue;
      const std::string tag = f[1] == "1" ? "train" : "test";
      if (want != "all" && want != tag) continue;
      out.push_back(Video(root + "/" + cls + "/" + f[0], layout, cls, tag, rate));
    }
  }
  if (files == 0)
    s.Fail("lists", Msg("folder ", lists, " has no <class>", suffix,
                        " files (HMDB51's test_train_splits; see ", "docs/datasets.md)"));
  return out;
}

}  // namespace mlfd
