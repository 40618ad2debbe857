// The Python scripts (tools/*.py, bench/*.py): the interpreter they name, and what they do under a
// python3 without torch or h5py (one line on stderr naming the module, exit 1, no traceback).
#include <catch2/catch.hpp>
#include <sys/stat.h>

#include <algorithm>
#include <filesystem>
#include <string>
#include <vector>

#include "test_util.h"
#include "util/error.h"

using mlfd::Msg;
using mlfd_test::RunShell;
using mlfd_test::TempDir;
namespace fs = std::filesystem;

namespace {

// Every *.py in tools/ and bench/, sorted (so a failure names the same file every time).
std::vector<std::string> PythonScripts() {
  std::vector<std::string> out;
  for (const char* dir : {"tools", "bench"})
    for (const auto& e : fs::directory_iterator(std::string(MLFD_SOURCE_DIR) + "/" + dir))
      if (e.is_regular_file() && e.path().extension() == ".py") out.push_back(e.path().string());
  std::sort(out.begin(), out.end());
  return out;
}

std::string FirstLine(const std::string& path) {
  std::string text = mlfd_test::ReadText(path);
  return text.substr(0, text.find('\n'));
}

// Lines of `text`, without their newlines.
std::vector<std::string> Lines(const std::string& text) {
  std::vector<std::string> lines;
  size_t start = 0;
  while (start < text.size()) {
    size_t nl = text.find('\n', start);
    lines.push_back(text.substr(start, nl == std::string::npos ? std::string::npos : nl - start));
    if (nl == std::string::npos) break;
    start = nl + 1;
  }
  return lines;
}

}  // namespace

TEST_CASE("Python tools: every script names the Debian interpreter and is executable", "[unit][tools]") {
  auto scripts = PythonScripts();
  REQUIRE(scripts.size() >= 4);  // torch_to_h5, h5_to_torch, mlfd_torch, mlfd_deps (+ bench)
  for (const auto& s : scripts) {
    INFO(s);
    CHECK(FirstLine(s) == "#!/usr/bin/python3");
    struct stat st;
    REQUIRE(stat(s.c_str(), &st) == 0);
    CHECK((st.st_mode & S_IXUSR) != 0);
  }
}

TEST_CASE("Python tools: without torch or h5py one line naming the module and exit 1", "[stage][tools]") {
  const std::string python = mlfd_test::SystemPython();
  TempDir tmp;
  const std::vector<std::string> scripts = PythonScripts();
  for (const std::string module : {"torch", "h5py"}) {
    // A directory that shadows `module` with one whose import fails, first on sys.path.
    std::string fake = tmp / ("no_" + module);
    fs::create_directories(fake);
    mlfd_test::WriteText(fake + "/" + module + ".py", "raise ImportError(\"x\")\n");
    for (const auto& s : scripts) {
      std::string name = fs::path(s).filename().string();
      INFO(name << " without " << module);
      if (name == "mlfd_deps.py") {
        // The checker itself lists every module: the fake one as missing, and exits 1.
        auto r = RunShell(Msg("PYTHONPATH=", fake, " ", python, " ", s));
        INFO(r.out << r.err);
        CHECK(r.exit_code == 1);
        CHECK(r.out.find(module + ": missing: needs the Python module '" + module + "'") != std::string::npos);
        CHECK(r.out.find("numpy: ") != std::string::npos);
        CHECK(r.out.find("Traceback") == std::string::npos);
        CHECK(r.err.find("Traceback") == std::string::npos);
        continue;
      }
      auto r = RunShell(Msg("PYTHONPATH=", fake, " ", python, " ", s, " --help"));
      INFO("stdout: " << r.out << "\nstderr: " << r.err);
      CHECK(r.exit_code == 1);
      CHECK(r.out.empty());
      CHECK(r.err.find("Traceback") == std::string::npos);
      auto lines = Lines(r.err);
      REQUIRE(lines.size() == 1);
      CHECK(lines[0] == Msg(name, ": error: needs the Python module '", module, "' (Debian package python3-", module,
                            "; scripts/install_deps.sh installs it) - run with /usr/bin/python3"));
    }
  }
}

TEST_CASE("Python tools: with the Debian interpreter --help works through the shebang", "[stage][tools]") {
  for (const auto& s : PythonScripts()) {
    INFO(s);
    auto r = RunShell(s + " --help");  // run directly: the kernel reads the shebang
    INFO(r.err);
    CHECK(r.exit_code == 0);
    CHECK(r.out.size() > 20);  // the help text
    CHECK(r.err.find("Traceback") == std::string::npos);
  }
  auto deps = RunShell(Msg(MLFD_SOURCE_DIR, "/tools/mlfd_deps.py"));
  INFO(deps.out << deps.err);
  CHECK(deps.exit_code == 0);
  CHECK(deps.out.find("python: /usr/bin/python3") != std::string::npos);
}
