// The project's one error type. Every failure a user can cause (bad file, bad option, bad shape)
// is thrown as mlfd::Error with context and caught once in main (see util/app.h), which prints
// one line and returns the exit code. HDF5, OpenCV and LibTorch errors are translated into it.
#pragma once

#include <sstream>
#include <stdexcept>
#include <string>

namespace mlfd {

// Exit codes shared by every binary.
enum ExitCode : int { kExitOk = 0, kExitFailure = 1, kExitUsage = 2 };

class Error : public std::runtime_error {
 public:
  explicit Error(const std::string& what, int exit_code = kExitFailure)
      : std::runtime_error(what), exit_code_(exit_code) {}
  int exit_code() const { return exit_code_; }

 private:
  int exit_code_;
};

// A wrong command line or option value: exit code 2.
class UsageError : public Error {
 public:
  explicit UsageError(const std::string& what) : Error(what, kExitUsage) {}
};

// Builds a message from streamable parts: throw Error(Msg("file ", path, ": expected ", n)).
template <typename... Args>
std::string Msg(const Args&... args) {
  std::ostringstream os;
  (os << ... << args);
  return os.str();
}

// Checks a condition that depends on user input and throws Error with the message if it fails.
#define MLFD_CHECK(cond, ...)                                \
  do {                                                       \
    if (!(cond)) throw ::mlfd::Error(::mlfd::Msg(__VA_ARGS__)); \
  } while (0)

}  // namespace mlfd
