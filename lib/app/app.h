// Command-line framework shared by every stage binary: typed options registered into
// Boost.ProgramOptions, a JSON config file that sets the same keys (the command line wins),
// --help / --version, the common options (--verbose, --threads), resolved options for provenance,
// and RunMain(), which catches the one error type and maps it to the exit code.
#pragma once

#include <boost/program_options.hpp>
#include <functional>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "util/options.h"
#include "util/provenance.h"

namespace mlfd {

// Describes one binary for its --help text.
struct AppInfo {
  std::string name;     // "prepare_data"
  std::string purpose;  // one paragraph
  std::string usage;    // "prepare_data [options] <manifest.json> <out.h5>"
  std::string example;  // a real invocation
};

class CommandLine {
 public:
  explicit CommandLine(AppInfo info);

  // Stage options are registered here, e.g. opts.Register(cli.options(), "").
  po::options_description& options() { return options_; }
  // Declares a positional argument (in order); `required` ones must be present.
  void AddPositional(const std::string& name, std::string* target, const std::string& help,
                     bool required = true);
  // Declares a final positional taking all remaining arguments (at least `min_count`).
  void AddPositionalList(const std::string& name, std::vector<std::string>* target,
                         const std::string& help, int min_count = 1);

  // Parses argv (and --config). Returns false when --help or --version was printed: the caller
  // returns 0. Throws UsageError on a bad command line. Sets verbosity and logs the command line.
  bool Parse(int argc, char** argv);

  // Every option's final value (defaults included), plus positionals: stored in outputs.
  nlohmann::json Resolved() const;
  // The command line as typed, one string.
  const std::string& command_line() const { return command_line_; }
  // Thread count after resolving 0 = all cores.
  int threads() const { return threads_; }
  const AppInfo& info() const { return info_; }

 private:
  AppInfo info_;
  po::options_description options_{"Options"};
  po::variables_map vm_;
  struct Positional {
    std::string name, help;
    std::string* target;
    bool required;
  };
  std::vector<Positional> positionals_;
  std::string list_name_, list_help_;
  std::vector<std::string>* list_target_ = nullptr;
  int list_min_ = 0;
  std::string command_line_;
  std::string config_path_;
  int verbosity_ = 1;
  int threads_ = 0;
};

// Runs `body`, translating every exception into one error line on stderr and an exit code:
// Error -> its code (1, or 2 for UsageError), anything else -> 1. Never lets an exception escape.
int RunMain(const std::string& app_name, const std::function<int()>& body);

// Human-readable versions of the project and the libraries it links (for --version and provenance).
nlohmann::json VersionInfo();

// Sets LibTorch's (and OpenCV's) CPU thread count; 0 means all cores. Returns the count used.
int SetThreadCount(int threads);

// Starts a provenance record for the running binary: tool, command line, every resolved option,
// library versions, time and host (inputs are added by the stage).
Provenance MakeProvenance(const CommandLine& cli);

}  // namespace mlfd
