// Test helpers.
#include "test_util.h"

#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <stdexcept>
#include <random>
#include <opencv2/core.hpp>
#include <opencv2/imgcodecs.hpp>

#include "util/error.h"

namespace mlfd_test {

TempDir::TempDir() {
  const char* base = std::getenv("TMPDIR");
  std::string tmpl = std::string(base && *base ? base : "/tmp") + "/mlfd_test_XXXXXX";
  std::vector<char> buf(tmpl.begin(), tmpl.end());
  buf.push_back('\0');
  if (!mkdtemp(buf.data())) throw std::runtime_error("mkdtemp failed");
  path_ = buf.data();
}

TempDir::~TempDir() {
  std::error_code ec;
  std::filesystem::remove_all(path_, ec);
}

bool FileExists(const std::string& path) {
  struct stat st;
  return stat(path.c_str(), &st) == 0;
}

std::string ReadText(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

void WriteText(const std::string& path, const std::string& text) {
  std::ofstream out(path, std::ios::binary);
  out << text;
}

const std::string& SourceDir() {
  static const std::string dir = MLFD_TEST_SOURCE_DIR;
  return dir;
}

const std::string& BuildBinDir() {
  static const std::string dir = [] {
    const char* bin = std::getenv("MLFD_BIN_DIR");
    return std::string(bin && *bin ? bin : MLFD_TEST_BIN_DIR);
  }();
  return dir;
}

RunResult RunTool(const std::string& tool, const std::string& args) {
  return RunShell(BuildBinDir() + "/" + tool + " " + args);
}

RunResult RunPython(const std::string& dir, const std::string& code, const std::string& args) {
  WriteText(dir + "/check.py", code);
  return RunShell(SystemPython() + " " + dir + "/check.py " + args);
}

RunResult RunShell(const std::string& command) {
  TempDir tmp;
  std::string cmd = "(" + command + ") >" + tmp / "out" + " 2>" + tmp / "err" + " </dev/null";
  int status = std::system(cmd.c_str());
  RunResult r;
  r.exit_code = WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
  r.out = ReadText(tmp / "out");
  r.err = ReadText(tmp / "err");
  return r;
}

std::string SystemPython() { return FileExists("/usr/bin/python3") ? "/usr/bin/python3" : "python3"; }

// A tiny, learnable store: class c images are dark noise with a bright c-th quadrant/stripe.
std::string MakeStore(const TempDir& tmp, const std::string& name, int classes, int per_class, int size,
                      int channels, uint64_t seed) {
  namespace fs = std::filesystem;
  std::string root = tmp / (name + "_imgs");
  std::mt19937 rng(static_cast<unsigned>(seed));
  for (int c = 0; c < classes; ++c) {
    fs::create_directories(mlfd::Msg(root, "/c", c));
    for (int k = 0; k < per_class; ++k) {
      cv::Mat img(size, size, channels == 1 ? CV_8UC1 : CV_8UC3);
      cv::randu(img, 0, 60);
      int band = size / classes;
      img(cv::Rect(c * band, 0, band, size)) += cv::Scalar(150, 150, 150);
      cv::imwrite(mlfd::Msg(root, "/c", c, "/", k, ".png"), img);
    }
  }
  std::string manifest = tmp / (name + ".json");
  WriteText(manifest, mlfd::Msg(R"({"name": ")", name, R"(", "classes": "folders", "sources": [{"kind": "folder", "root": ")",
                                     root, R"("}], "split": {"mode": "stratified", "fractions": {"train": 0.6, "val": 0.2, "test": 0.2}, "seed": 1},)",
                                     R"("image": {"size": )", size, R"(, "channels": )", channels, "}}"));
  std::string store = tmp / (name + ".h5");
  auto r = RunTool("prepare_data", "-v 0 " + manifest + " " + store);
  if (r.exit_code != 0) throw std::runtime_error("prepare_data failed: " + r.err);
  return store;
}

std::string MakeSpriteClips(const TempDir& tmp, int frames, const std::string& per_class) {
  using mlfd::Msg;
  std::string src = MakeStore(tmp, "src", 3, 10, 12, 1, 3);
  auto r = RunTool("make_moving_sprites", "-v 0 --motions left,right --frames " +
                                              std::to_string(frames) +
                                              " --canvas 24 --clips-per-class " + per_class +
                                              " --seed 2 " + src + " " + (tmp / "sprites"));
  if (r.exit_code != 0) throw std::runtime_error("make_moving_sprites failed: " + r.err);
  std::string sources;
  for (const char* split : {"train", "val", "test"})
    sources += Msg(sources.empty() ? "" : ", ", R"({"kind": "frame_folder", "root": ")",
                   tmp / "sprites/", split, R"(", "split": ")", split, R"("})");
  WriteText(tmp / "clips.json",
            Msg(R"({"name": "sprites", "classes": "folders", "sources": [)", sources,
                R"(], "split": {"mode": "official"}, "image": {"size": 24, "channels": 1}})"));
  std::string store = tmp / "clips.h5";
  r = RunTool("prepare_data",
              "-v 0 --frames " + std::to_string(frames) + " " + (tmp / "clips.json") + " " + store);
  if (r.exit_code != 0) throw std::runtime_error("prepare_data failed: " + r.err);
  return store;
}

}  // namespace mlfd_test
