// libFuzzer target: the MATLAB level-5 MAT-file reader (io/mat5.cc; Flowers-102's imagelabels.mat
// and setid.mat). The input is the whole file. ReadAll lists every variable; ReadNumeric looks
// one up by name, as the Flowers-102 reader does.
#include <cstdint>
#include <string>

#include "fuzz_util.h"
#include "io/mat5.h"
#include "util/error.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string path = mlfd_fuzz::WriteFile("in.mat", data, size);
  try {
    auto vars = mlfd::mat5::ReadAll(path);
    for (const auto& v : vars) {
      // What the reader promises for a numeric variable: as many values as its dimensions hold.
      if (!v.numeric) continue;
      int64_t count = 1;
      for (int64_t d : v.dims) count *= d;
      if (static_cast<int64_t>(v.data.size()) != count) __builtin_trap();
    }
  } catch (const mlfd::Error&) {
  }
  try {
    std::vector<int64_t> dims;
    mlfd::mat5::ReadNumeric(path, "labels", &dims);
  } catch (const mlfd::Error&) {
  }
  return 0;
}
