// Command-line framework of the stage binaries: option parsing, config files, help/version, error-to-exit-code mapping.
#include "app/app.h"

#include <H5public.h>
#include <malloc.h>
#include <signal.h>
#include <torch/torch.h>
#include <torch/version.h>

#include <boost/version.hpp>
#include <algorithm>
#include <cctype>
#include <cmath>
#include <cstdlib>
#include <fstream>
#include <iostream>
#include <opencv2/core.hpp>
#include <opencv2/core/utils/logger.hpp>
#include <sstream>
#include <thread>
#include <unistd.h>

#include "build_info.h"
#include "util/error.h"
#include "util/file_roles.h"
#include "util/json_view.h"
#include "util/log.h"
#include "util/parallel.h"

namespace mlfd {

CommandLine::CommandLine(AppInfo info) : info_(std::move(info)) {}

void CommandLine::AddPositional(const std::string& name, std::string* target,
                                const std::string& help, bool required) {
  positionals_.push_back({name, help, target, required});
}

void CommandLine::AddPositionalList(const std::string& name, std::vector<std::string>* target,
                                    const std::string& help, int min_count) {
  list_name_ = name;
  list_help_ = help;
  list_target_ = target;
  list_min_ = min_count;
}

// No abbreviations: --epoch must not silently mean --epochs.
constexpr int kParserStyle = po::command_line_style::default_style & ~po::command_line_style::allow_guessing;

namespace {

// Values Boost converts without complaint but which mean something else: a negative number given
// to an unsigned option wraps around (--seed -1 became 2^64-1), and nan or inf pass as floating
// point numbers (--w-kd nan then meant "the method's default"). `given` are the options as
// written (command line or --config), `where` prefixes the message.
void CheckNumbers(const po::variables_map& vm, const std::vector<po::option>& given, const std::string& where) {
  for (const auto& o : given) {
    auto it = vm.find(o.string_key);
    if (it == vm.end() || it->second.empty()) continue;
    const std::type_info& t = it->second.value().type();
    const bool is_unsigned = t == typeid(uint64_t) || t == typeid(uint32_t) || t == typeid(uint16_t) ||
                             t == typeid(unsigned long long) || t == typeid(unsigned long);
    if (!is_unsigned) continue;
    for (const auto& v : o.value)
      if (v.find('-') != std::string::npos)
        throw UsageError(Msg(where, "--", o.string_key, ": must be a number >= 0 (got '", v, "')"));
  }
  for (const auto& [key, value] : vm) {
    if (value.empty()) continue;
    const boost::any& a = value.value();
    double d = 0;
    if (a.type() == typeid(double)) d = boost::any_cast<double>(a);
    else if (a.type() == typeid(float)) d = boost::any_cast<float>(a);
    else continue;
    if (!std::isfinite(d)) throw UsageError(Msg(where, "--", key, ": must be a finite number (got ", d, ")"));
  }
}

}  // namespace

bool CommandLine::Parse(int argc, char** argv) {
  for (int i = 0; i < argc; ++i) command_line_ += (i ? " " : "") + std::string(argv[i]);

  po::options_description common("Common options");
  common.add_options()("help,h", "print this help and exit")(
      "version", "print versions of the tool and its libraries and exit")(
      "config", po::value<std::string>(&config_path_),
      "JSON file setting any of these options by long name (the command line wins)")(
      "verbose,v", po::value<int>(&verbosity_)->default_value(1),
      "0 = warnings only, 1 = progress (default), 2 = debug")(
      "threads", po::value<int>(&threads_)->default_value(0), "CPU threads (0 = every core this process may use: its CPU affinity, e.g. srun -c)");

  po::options_description hidden;
  po::positional_options_description pos;
  for (auto& p : positionals_) {
    hidden.add_options()(p.name.c_str(), po::value<std::string>(p.target), p.help.c_str());
    pos.add(p.name.c_str(), 1);
  }
  if (list_target_) {
    hidden.add_options()(list_name_.c_str(), po::value<std::vector<std::string>>(list_target_),
                         list_help_.c_str());
    pos.add(list_name_.c_str(), -1);
  }
  po::options_description all;
  all.add(options_).add(common).add(hidden);

  // A flag (a bool option with an implicit value) written bare takes the next token as its value
  // in Boost.ProgramOptions: `--resume store.h5` would read "store.h5" as the flag's value and
  // fail. A bare flag followed by anything but a bool literal is given its value explicitly, so
  // the next token stays an argument; `--resume 0` keeps working.
  std::vector<std::string> args(argv + 1, argv + argc);
  auto is_bool_literal = [](std::string t) {
    std::transform(t.begin(), t.end(), t.begin(), [](unsigned char c) { return static_cast<char>(std::tolower(c)); });
    return t == "1" || t == "0" || t == "true" || t == "false" || t == "yes" || t == "no" || t == "on" || t == "off";
  };
  for (size_t i = 0; i < args.size(); ++i) {
    const std::string& t = args[i];
    if (t == "--") break;
    if (t.size() < 3 || t.compare(0, 2, "--") != 0 || t.find('=') != std::string::npos) continue;
    const po::option_description* d = all.find_nothrow(t.substr(2), false);
    if (d == nullptr || dynamic_cast<const po::typed_value<bool>*>(d->semantic().get()) == nullptr ||
        d->semantic()->min_tokens() != 0)
      continue;
    if (i + 1 == args.size() || !is_bool_literal(args[i + 1])) args[i] = t + "=true";
  }
  po::parsed_options given(&all);
  try {
    given = po::command_line_parser(args).options(all).positional(pos).style(kParserStyle).run();
    po::store(given, vm_);
  } catch (const po::error& e) {
    throw UsageError(e.what());
  }

  if (vm_.count("help")) {
    std::ostringstream os;
    os << info_.name << ": " << info_.purpose << "\n\nUsage: " << info_.usage << "\n";
    if (!positionals_.empty() || list_target_) {
      os << "\nArguments:\n";
      for (auto& p : positionals_) os << "  <" << p.name << ">  " << p.help << "\n";
      if (list_target_) os << "  <" << list_name_ << "...>  " << list_help_ << "\n";
    }
    os << "\nExample:\n  " << info_.example << "\n\n" << options_ << "\n" << common;
    std::cout << os.str();
    return false;
  }
  if (vm_.count("version")) {
    nlohmann::json v = VersionInfo();
    std::cout << info_.name << " (mlfd) " << v["mlfd"].get<std::string>() << ", git "
              << v["git_revision"].get<std::string>() << "\n";
    for (auto& [k, val] : v.items())
      if (k != "mlfd" && k != "git_revision") std::cout << "  " << k << " " << val.get<std::string>() << "\n";
    return false;
  }

  if (vm_.count("config")) {
    const std::string path = vm_["config"].as<std::string>();
    std::ifstream in(path);
    if (!in) throw UsageError(Msg("--config: cannot open ", path));
    nlohmann::json cfg;
    try {
      cfg = ParseJsonOnce(in, "--config " + path);  // a key given twice is refused
    } catch (const Error& e) {
      throw UsageError(e.what());
    }
    std::vector<std::string> tokens = ConfigToTokens(cfg, path);
    try {
      po::parsed_options from_config = po::command_line_parser(tokens).options(all).style(kParserStyle).run();
      po::store(from_config, vm_);
      CheckNumbers(vm_, from_config.options, Msg("--config ", path, ": "));
    } catch (const po::error& e) {
      throw UsageError(Msg("--config ", path, ": ", e.what()));
    }
  }
  try {
    po::notify(vm_);
  } catch (const po::error& e) {
    throw UsageError(e.what());
  }
  for (auto& p : positionals_)
    if (p.required && !vm_.count(p.name))
      throw UsageError(Msg("missing argument <", p.name, ">; usage: ", info_.usage));
  if (list_target_ && static_cast<int>(list_target_->size()) < list_min_)
    throw UsageError(Msg("expected at least ", list_min_, " <", list_name_, "> argument(s); usage: ",
                         info_.usage));
  if (threads_ < 0) throw UsageError("--threads: must be >= 0");
  CheckNumbers(vm_, given.options, "");

  SetVerbosity(verbosity_);
  threads_ = BoundByCores("--threads", threads_);
  // OpenCV's own warnings (e.g. on an unreadable image) would break our one-line errors.
  cv::utils::logging::setLogLevel(cv::utils::logging::LOG_LEVEL_ERROR);
  threads_ = SetThreadCount(threads_);
  MLOG(INFO) << "command line: " << command_line_;
  return true;
}

nlohmann::json CommandLine::Resolved() const {
  nlohmann::json out = nlohmann::json::object();
  for (const auto& [key, value] : vm_) {
    if (key == "help" || key == "version") continue;
    out[key] = OptionValueJson(key, value.value());
  }
  out["threads"] = threads_;
  return out;
}

nlohmann::json VersionInfo() {
  unsigned maj = 0, min = 0, rel = 0;
  H5get_libversion(&maj, &min, &rel);
  return {{"mlfd", MLFD_VERSION},
          {"git_revision", MLFD_GIT_REVISION},
          {"build_type", MLFD_BUILD_TYPE},
          {"libtorch", TORCH_VERSION},
          {"opencv", CV_VERSION},
          {"hdf5", Msg(maj, ".", min, ".", rel)},
          {"boost", Msg(BOOST_VERSION / 100000, ".", BOOST_VERSION / 100 % 1000, ".",
                        BOOST_VERSION % 100)},
          {"nlohmann_json", Msg(NLOHMANN_JSON_VERSION_MAJOR, ".", NLOHMANN_JSON_VERSION_MINOR, ".",
                                NLOHMANN_JSON_VERSION_PATCH)}};
}

int SetThreadCount(int threads) {
  int n = threads > 0 ? threads : CoreCount();
  torch::set_num_threads(n);
  cv::setNumThreads(n);
  return n;
}

namespace {
// First line of a LibTorch message, without its C++ backtrace.
std::string FirstLine(const std::string& s) {
  auto pos = s.find('\n');
  return pos == std::string::npos ? s : s.substr(0, pos);
}
}  // namespace

namespace {

// What the stages' allocator runs with, recorded in provenance.
std::string& AllocatorSetting() {
  static std::string setting = "glibc defaults";
  return setting;
}

// glibc's allocator serves blocks above its mmap threshold (128 KiB at start, adjusted upwards as
// blocks are freed, at most 32 MiB) with fresh mappings and returns freed heap tops to the kernel,
// so every batch's activation tensors (megabytes each) are faulted in page by page again: on the
// 2-core reference machine a third of evaluate's time was page faults. Every block is served from
// the heap (no mmap at all: activations of 112 px images, ~100 MB each, are past the largest
// threshold) and the heap is never trimmed below 1 GiB: evaluate ran 3x and a training epoch 2x
// faster at 28 px, 1.46x at 112 px (docs/performance.md). A user's own malloc settings (MALLOC_*_
// environment variables or GLIBC_TUNABLES) are left alone.
void TuneAllocator() {
  const char* tunables = std::getenv("GLIBC_TUNABLES");
  if (std::getenv("MALLOC_MMAP_THRESHOLD_") || std::getenv("MALLOC_TRIM_THRESHOLD_") || std::getenv("MALLOC_MMAP_MAX_") ||
      (tunables && std::string(tunables).find("glibc.malloc.") != std::string::npos)) {
    AllocatorSetting() = "glibc, the user's environment settings";
    return;
  }
  if (mallopt(M_MMAP_THRESHOLD, 32 * 1024 * 1024) == 1 && mallopt(M_TRIM_THRESHOLD, 1 << 30) == 1 &&
      mallopt(M_MMAP_MAX, 0) == 1)
    AllocatorSetting() = "glibc, heap only (no mmap), trim threshold 1 GiB";
}

}  // namespace

int RunMain(const std::string& app_name, const std::function<int()>& body) {
  auto fail = [&](const std::string& what, int code) {
    // One write: a line that other threads' output (loaders, a process group's own threads)
    // cannot split.
    std::cout.flush();
    WriteLine(Msg(app_name, ": ", code == kExitUsage ? "usage error: " : "error: ", what,
                  code == kExitUsage ? " (see --help)" : ""));
    return code;
  };
  // Past a file-size limit (ulimit -f) a write fails with EFBIG like a full disk, and ends in the
  // same one-line error with the temporaries removed, instead of SIGXFSZ killing the process.
  signal(SIGXFSZ, SIG_IGN);
  TuneAllocator();
  FileRoleTracking file_roles;  // what the command reads and writes: an output never replaces an input
  try {
    return body();
  } catch (const Error& e) {
    return fail(e.what(), e.exit_code());
  } catch (const po::error& e) {
    return fail(e.what(), kExitUsage);
  } catch (const c10::Error& e) {
    return fail("LibTorch: " + FirstLine(e.what_without_backtrace()), kExitFailure);
  } catch (const cv::Exception& e) {
    return fail("OpenCV: " + FirstLine(e.what()), kExitFailure);
  } catch (const nlohmann::json::exception& e) {
    return fail(Msg("JSON: ", e.what()), kExitFailure);
  } catch (const std::bad_alloc&) {
    return fail("out of memory", kExitFailure);
  } catch (const std::exception& e) {
    return fail(e.what(), kExitFailure);
  } catch (...) {
    return fail("unknown failure", kExitFailure);
  }
}

Provenance MakeProvenance(const CommandLine& cli) {
  Provenance p;
  char host[256] = {0};
  gethostname(host, sizeof(host) - 1);
  p.json = {{"tool", cli.info().name},
            {"command_line", cli.command_line()},
            {"options", cli.Resolved()},
            {"versions", VersionInfo()},
            {"created_utc", UtcTimestamp()},
            {"host", host},
            {"allocator", AllocatorSetting()},
            {"inputs", nlohmann::json::object()}};
  return p;
}

}  // namespace mlfd
