// Logging implementation: one mutex-protected write per line so threads never interleave.
#include "util/log.h"

#include <atomic>
#include <chrono>
#include <cstdio>
#include <ctime>
#include <mutex>

namespace mlfd {
namespace {
std::atomic<int> g_verbosity{1};
std::string g_line_prefix;  // guarded by g_log_mutex
std::mutex g_log_mutex;

const char* SeverityTag(Severity s) {
  switch (s) {
    case Severity::kDebug: return "D";
    case Severity::kInfo: return "I";
    case Severity::kWarning: return "W";
    case Severity::kError: return "E";
  }
  return "?";
}
}  // namespace

void SetVerbosity(int level) { g_verbosity = level; }
int Verbosity() { return g_verbosity; }

void SetLinePrefix(const std::string& prefix) {
  std::lock_guard<std::mutex> lock(g_log_mutex);
  g_line_prefix = prefix;
}

void LogLine(Severity severity, const std::string& text) {
  using namespace std::chrono;
  auto now = system_clock::now();
  std::time_t t = system_clock::to_time_t(now);
  int ms = static_cast<int>(duration_cast<milliseconds>(now.time_since_epoch()).count() % 1000);
  std::tm tm{};
  localtime_r(&t, &tm);
  char buf[32];
  std::strftime(buf, sizeof(buf), "%Y-%m-%d %H:%M:%S", &tm);
  std::lock_guard<std::mutex> lock(g_log_mutex);
  std::fprintf(stderr, "%s %s.%03d] %s%s\n", SeverityTag(severity), buf, ms, g_line_prefix.c_str(), text.c_str());
  std::fflush(stderr);
}

void WriteLine(const std::string& text) {
  const std::string line = text + "\n";
  std::lock_guard<std::mutex> lock(g_log_mutex);
  std::fflush(stderr);
  std::fwrite(line.data(), 1, line.size(), stderr);
  std::fflush(stderr);
}

LogMessage::LogMessage(Severity severity, const char* /*file*/, int /*line*/) : severity_(severity) {}
LogMessage::~LogMessage() { LogLine(severity_, os_.str()); }

}  // namespace mlfd
