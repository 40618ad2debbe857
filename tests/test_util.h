// Helpers shared by the tests: temporary directories, running stage binaries, reading files.
#pragma once

#include <cstdint>
#include <string>

namespace mlfd_test {

// A fresh directory under $TMPDIR, removed with its contents on destruction.
class TempDir {
 public:
  TempDir();
  ~TempDir();
  const std::string& path() const { return path_; }
  std::string operator/(const std::string& name) const { return path_ + "/" + name; }

 private:
  std::string path_;
};

struct RunResult {
  int exit_code;
  std::string out;  // stdout
  std::string err;  // stderr
};
// Runs a built stage binary (from MLFD_BIN_DIR) with a shell-quoted argument string.
RunResult RunTool(const std::string& tool, const std::string& args);
// Runs a shell command, capturing stdout and stderr.
RunResult RunShell(const std::string& cmd);
// Writes `code` to a file in `dir` and runs it with the system Python (h5py, numpy) and `args`.
RunResult RunPython(const std::string& dir, const std::string& code, const std::string& args);
bool FileExists(const std::string& path);
std::string ReadText(const std::string& path);
void WriteText(const std::string& path, const std::string& text);
// The Debian python3 (with h5py/numpy/torch), not whatever python3 is first on PATH.
std::string SystemPython();

// The checkout's root and the folder of the stage binaries ($MLFD_BIN_DIR when set). The two
// paths are compiled into test_util.cc alone, so no other test object depends on where the
// checkout is and a second clone's build hits the compiler cache for them (docs/build.md).
const std::string& SourceDir();
const std::string& BuildBinDir();

// A tiny, learnable image store written by prepare_data: class c images are dark noise with a
// bright c-th vertical band. Splits 60/20/20 (stratified). Returns the store path.
std::string MakeStore(const TempDir& tmp, const std::string& name, int classes, int per_class, int size,
                      int channels, uint64_t seed);

// Moving sprites (2 motions, left and right, on a 24 x 24 canvas, 1 channel) from a tiny image
// store "src" (written beside it, tmp/src.h5), as the clip store tmp/clips.h5 ("sprites") of
// `frames` frames; `per_class` is make_moving_sprites --clips-per-class (train,val,test). Returns
// its path.
std::string MakeSpriteClips(const TempDir& tmp, int frames, const std::string& per_class);

}  // namespace mlfd_test

#define MLFD_SOURCE_DIR (::mlfd_test::SourceDir())
#define MLFD_BIN_DIR (::mlfd_test::BuildBinDir())
