// Progress reporting for long loops: a line on stderr at most every few seconds with count,
// rate, and ETA, and a summary line at the end. Thread-safe: workers call Add() concurrently.
#pragma once

#include <atomic>
#include <chrono>
#include <cstdint>
#include <mutex>
#include <string>

namespace mlfd {

class Progress {
 public:
  // `what` names the work ("decoding images"); `unit` the items ("images").
  Progress(std::string what, int64_t total, std::string unit, double interval_seconds = 5.0);
  // Adds `n` finished items and prints a line if the interval has passed.
  void Add(int64_t n = 1);
  // Prints the summary line (once). The destructor prints nothing, so a loop left by an
  // exception shows no misleading 'done' line.
  void Finish();
  ~Progress();
  int64_t done() const { return done_; }
  double ElapsedSeconds() const;

 private:
  void Print(bool final_line);
  std::string what_, unit_;
  int64_t total_;
  double interval_;
  std::atomic<int64_t> done_{0};
  std::chrono::steady_clock::time_point start_, last_print_;
  std::mutex mutex_;
  bool finished_ = false;
};

// "1h02m03s" / "4m05s" / "7.2s".
std::string FormatDuration(double seconds);

}  // namespace mlfd
