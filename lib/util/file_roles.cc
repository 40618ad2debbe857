// The files one command reads and writes (file_roles.h).
#include "util/file_roles.h"

#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cctype>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <mutex>
#include <nlohmann/json.hpp>
#include <sstream>
#include <vector>

#include "util/error.h"
#include "util/fs.h"

namespace mlfd {

const char* const kPngSoftwareMark = "mlfd";

namespace {

namespace fs = std::filesystem;

struct Role {
  std::string what, path, real;
  bool exists = false;
  dev_t dev = 0;
  ino_t ino = 0;
};

std::mutex g_mu;
int g_tracking = 0;  // live FileRoleTracking objects
std::vector<Role> g_inputs, g_outputs;

Role Describe(const std::string& what, const std::string& path) {
  Role r{what, path, path};
  std::error_code ec;
  fs::path real = fs::weakly_canonical(fs::absolute(path, ec), ec);
  if (!ec) r.real = real.string();
  struct stat st;
  if (stat(path.c_str(), &st) == 0) {
    r.exists = true;
    r.dev = st.st_dev;
    r.ino = st.st_ino;
  }
  return r;
}

bool Same(const Role& a, const Role& b) {
  return a.real == b.real || (a.exists && b.exists && a.dev == b.dev && a.ino == b.ino);
}

std::string Named(const Role& r) {
  return r.what.empty() ? r.path : Msg(r.what, " ", r.path);
}

std::string Head(const std::string& path, size_t n) {
  std::ifstream in(path, std::ios::binary);
  std::string s(n, '\0');
  in.read(&s[0], static_cast<std::streamsize>(n));
  s.resize(static_cast<size_t>(in.gcount()));
  return s;
}

bool StartsWith(const std::string& s, const char* prefix, size_t n) { return s.size() >= n && std::memcmp(s.data(), prefix, n) == 0; }

// What an existing file holds, in words, for the message; `kind` when it is of that kind.
std::string KindName(OutputKind k) {
  switch (k) {
    case OutputKind::kJson: return "JSON";
    case OutputKind::kJsonLines: return "JSON-lines";
    case OutputKind::kPng: return "PNG";
    case OutputKind::kMarkdown: return "Markdown";
    case OutputKind::kHtml: return "HTML";
  }
  return "?";
}

bool ParsesAsJson(const std::string& text) {
  return !nlohmann::json::parse(text, nullptr, false).is_discarded();
}

bool IsJsonLines(const std::string& text) {
  std::istringstream in(text);
  std::string line;
  bool any = false;
  while (std::getline(in, line)) {
    if (line.find_first_not_of(" \t\r") == std::string::npos) continue;
    if (!ParsesAsJson(line)) return false;
    any = true;
  }
  return any;
}

std::string Lower(std::string s) {
  std::transform(s.begin(), s.end(), s.begin(), [](unsigned char c) { return static_cast<char>(std::tolower(c)); });
  return s;
}

// Describes what `text` is when it is not of kind `k` (empty when it is).
std::string Mismatch(const std::string& text, OutputKind k, bool ours_only) {
  static const char kHdf5[] = "\211HDF\r\n\032\n";
  static const char kPng[] = "\211PNG\r\n\032\n";
  const bool hdf5 = StartsWith(text, kHdf5, 8), png = StartsWith(text, kPng, 8);
  const bool binary = hdf5 || png || text.find('\0') != std::string::npos;
  std::string what = hdf5 ? "an HDF5 file" : png ? "a PNG image" : binary ? "a binary file" : "a text file";
  switch (k) {
    case OutputKind::kPng: {
      if (!png) return what;
      if (!ours_only) return "";
      const std::string mark = std::string("tEXtSoftware") + '\0' + kPngSoftwareMark;
      return text.find(mark) == std::string::npos ? "a PNG image not written by this toolkit" : "";
    }
    case OutputKind::kJson:
      if (!binary && ParsesAsJson(text)) return "";
      return binary ? what : "a text file that is not JSON";
    case OutputKind::kJsonLines:
      if (!binary && IsJsonLines(text)) return "";
      return binary ? what : "a text file that is not JSON lines";
    case OutputKind::kHtml: {
      if (binary) return what;
      std::string head = Lower(text.substr(0, 512));
      size_t at = head.find_first_not_of(" \t\r\n\xef\xbb\xbf");
      if (at != std::string::npos && (head.compare(at, 14, "<!doctype html") == 0 || head.compare(at, 5, "<html") == 0))
        return "";
      return "a text file that is not HTML";
    }
    case OutputKind::kMarkdown: {
      if (binary) return what;
      size_t at = text.find_first_not_of(" \t\r\n");
      if (at != std::string::npos && (text[at] == '{' || text[at] == '[') && ParsesAsJson(text)) return "a JSON file";
      if (at != std::string::npos && text[at] == '<') return "an HTML or XML file";
      return "";
    }
  }
  return "";
}

UsageError OutputIsInput(const Role& output, const Role& input) {
  return UsageError(Msg("output ", Named(output), " is the same file as the input ", Named(input),
                        "; an output must never replace an input: choose another output path"));
}

}  // namespace

void DeclareInput(const std::string& what, const std::string& path) {
  Role r = Describe(what, path);
  std::lock_guard<std::mutex> guard(g_mu);
  if (g_tracking == 0) return;
  for (const auto& o : g_outputs)
    if (Same(o, r)) throw OutputIsInput(o, r);
  // An app declares its inputs before the outputs are checked, and the provenance records them
  // again: kept once, with the first (most specific) role.
  for (const auto& i : g_inputs)
    if (i.path == r.path) return;
  g_inputs.push_back(std::move(r));
}

void DeclareOutput(const std::string& what, const std::string& path) {
  Role r = Describe(what, path);
  std::lock_guard<std::mutex> guard(g_mu);
  if (g_tracking == 0) return;
  for (const auto& i : g_inputs)
    if (Same(i, r)) throw OutputIsInput(r, i);
  // Between outputs only the real path counts: every output is written to a temporary and renamed,
  // which replaces a hard link and never writes through it (a training run's <out>.best.h5 and
  // <out>.last.h5 may be links of one file).
  for (const auto& o : g_outputs) {
    // The same output declared again (a stage checks a checkpoint's path before its work and again
    // when it writes it; the HDF5 layer declares without a role).
    if (o.path == r.path && (o.what == r.what || o.what.empty() || r.what.empty())) return;
    if (o.real == r.real)
      throw UsageError(Msg("outputs ", Named(o), " and ", Named(r), " are the same file; give each output its own path"));
  }
  g_outputs.push_back(std::move(r));
}

void CheckTextOutput(const std::string& what, const std::string& path, OutputKind kind, bool ours_only) {
  if (path.empty()) throw UsageError(Msg(what, ": output path is empty"));
  CheckOutputDirectory(path);
  DeclareOutput(what, path);
  struct stat st;
  if (stat(path.c_str(), &st) != 0) return;
  if (!S_ISREG(st.st_mode)) throw Error(Msg(path, ": exists and is not a regular file"));
  if (st.st_size == 0) return;  // nothing to lose
  // Reading all of a large file is not needed to tell a binary file: the head decides those.
  std::string text = st.st_size <= (64 << 20) ? Head(path, static_cast<size_t>(st.st_size)) : Head(path, 1 << 16);
  std::string found = Mismatch(text, kind, ours_only);
  if (!found.empty())
    throw Error(Msg(path, ": exists and is ", found, ", not a ", KindName(kind), " output",
                    ours_only && found.find("toolkit") != std::string::npos ? " of this toolkit" : "",
                    "; refusing to overwrite it (delete or move it if it is an old output)"));
}

FileRoleTracking::FileRoleTracking() {
  std::lock_guard<std::mutex> guard(g_mu);
  if (g_tracking++ == 0) g_inputs.clear(), g_outputs.clear();
}

FileRoleTracking::~FileRoleTracking() {
  std::lock_guard<std::mutex> guard(g_mu);
  if (--g_tracking == 0) g_inputs.clear(), g_outputs.clear();
}

}  // namespace mlfd
