// Logging to stderr with time, severity and verbosity control. Stdout stays free for
// machine-readable output. Usage: MLOG(INFO) << "read " << n << " images"; MVLOG(2) << "detail";
#pragma once

#include <sstream>
#include <string>

namespace mlfd {

enum class Severity { kDebug, kInfo, kWarning, kError };

// Verbosity: 0 = warnings and errors, 1 = info (default), 2+ = debug detail (MVLOG(n) prints
// if verbosity >= n).
void SetVerbosity(int level);
int Verbosity();
inline bool ShouldLog(Severity s) {
  int v = Verbosity();
  return s >= Severity::kWarning || (s == Severity::kInfo && v >= 1) || v >= 2;
}

class LogMessage {
 public:
  LogMessage(Severity severity, const char* file, int line);
  ~LogMessage();
  std::ostream& stream() { return os_; }

 private:
  Severity severity_;
  std::ostringstream os_;
};

// Text put before every line's message (e.g. "rank 1: " in a data-parallel run); empty by default.
void SetLinePrefix(const std::string& prefix);

// Prints a whole line to stderr at once (thread-safe), with a timestamp prefix.
void LogLine(Severity severity, const std::string& text);

// Writes `text` and a newline to stderr in one write, under the same lock as LogLine, without
// timestamp or prefix: a command's final error line, whole even while other threads still log.
void WriteLine(const std::string& text);

// Turns a log statement's stream into void, so that MLOG is one expression (no dangling else
// in an unbraced if): `&` binds less tightly than `<<`, more tightly than `?:`.
struct LogVoidify {
  void operator&(std::ostream&) {}
};

}  // namespace mlfd

// Named MLOG/MVLOG because LibTorch's c10 already defines LOG and VLOG.
#define MLFD_SEV_DEBUG ::mlfd::Severity::kDebug
#define MLFD_SEV_INFO ::mlfd::Severity::kInfo
#define MLFD_SEV_WARNING ::mlfd::Severity::kWarning
#define MLFD_SEV_ERROR ::mlfd::Severity::kError
#define MLOG(sev)                                   \
  !::mlfd::ShouldLog(MLFD_SEV_##sev) ? (void)0      \
                                     : ::mlfd::LogVoidify() & ::mlfd::LogMessage(MLFD_SEV_##sev, __FILE__, __LINE__).stream()
#define MVLOG(n)                         \
  ::mlfd::Verbosity() < (n) ? (void)0    \
                            : ::mlfd::LogVoidify() & ::mlfd::LogMessage(::mlfd::Severity::kDebug, __FILE__, __LINE__).stream()
