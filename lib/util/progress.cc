// Progress lines: count/total, percentage, rate and ETA.
#include "util/progress.h"

#include <cstdio>

#include "util/log.h"

namespace mlfd {

std::string FormatDuration(double s) {
  char buf[64];
  if (s < 60) {
    std::snprintf(buf, sizeof(buf), "%.1fs", s);
  } else if (s < 3600) {
    std::snprintf(buf, sizeof(buf), "%dm%02ds", static_cast<int>(s) / 60, static_cast<int>(s) % 60);
  } else {
    int si = static_cast<int>(s);
    std::snprintf(buf, sizeof(buf), "%dh%02dm%02ds", si / 3600, (si / 60) % 60, si % 60);
  }
  return buf;
}

Progress::Progress(std::string what, int64_t total, std::string unit, double interval_seconds)
    : what_(std::move(what)), unit_(std::move(unit)), total_(total), interval_(interval_seconds) {
  start_ = last_print_ = std::chrono::steady_clock::now();
}

double Progress::ElapsedSeconds() const {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - start_).count();
}

void Progress::Add(int64_t n) {
  done_ += n;
  auto now = std::chrono::steady_clock::now();
  std::unique_lock<std::mutex> lock(mutex_, std::try_to_lock);
  if (!lock.owns_lock() || finished_) return;
  if (std::chrono::duration<double>(now - last_print_).count() >= interval_ &&
      ShouldLog(Severity::kInfo)) {
    last_print_ = now;
    Print(false);
  }
}

void Progress::Print(bool final_line) {
  double el = ElapsedSeconds();
  int64_t d = done_;
  double rate = el > 0 ? d / el : 0.0;
  char buf[256];
  if (final_line) {
    std::snprintf(buf, sizeof(buf), "%s: done, %lld %s in %s (%.1f %s/s)", what_.c_str(),
                  static_cast<long long>(d), unit_.c_str(), FormatDuration(el).c_str(), rate,
                  unit_.c_str());
  } else if (total_ > 0) {
    double eta = rate > 0 ? (total_ - d) / rate : 0.0;
    std::snprintf(buf, sizeof(buf), "%s: %lld/%lld %s (%.1f%%), %.1f %s/s, ETA %s", what_.c_str(),
                  static_cast<long long>(d), static_cast<long long>(total_), unit_.c_str(),
                  100.0 * d / total_, rate, unit_.c_str(), FormatDuration(eta).c_str());
  } else {
    std::snprintf(buf, sizeof(buf), "%s: %lld %s, %.1f %s/s", what_.c_str(),
                  static_cast<long long>(d), unit_.c_str(), rate, unit_.c_str());
  }
  LogLine(Severity::kInfo, buf);
}

void Progress::Finish() {
  std::lock_guard<std::mutex> lock(mutex_);
  if (finished_) return;
  finished_ = true;
  if (ShouldLog(Severity::kInfo)) Print(true);
}

Progress::~Progress() {
  // A loop left by an exception must not print a misleading "done" line.
  std::lock_guard<std::mutex> lock(mutex_);
  finished_ = true;
}

}  // namespace mlfd
