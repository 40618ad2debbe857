// A minimal parallel-for over an index range on a fixed number of threads (dynamic scheduling).
// The first exception thrown by a worker is rethrown in the caller after all threads stop.
#pragma once

#include <sched.h>

#include <atomic>
#include <cstdint>
#include <exception>
#include <functional>
#include <mutex>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include "util/log.h"

namespace mlfd {

// The cores this process may run on (at least 1): its CPU affinity mask, which a job step
// (srun -c, taskset, a container's cpuset) narrows, else the machine's cores.
inline int CoreCount() {
  cpu_set_t set;
  CPU_ZERO(&set);
  if (sched_getaffinity(0, sizeof(set), &set) == 0 && CPU_COUNT(&set) > 0) return CPU_COUNT(&set);
  return static_cast<int>(std::max(1u, std::thread::hardware_concurrency()));
}

// A thread count an option asked for (--threads, --workers), bounded by the cores: more threads
// than the cores this process may use only add switching (--threads 10000 once started 1,400 threads and stalled). Warns
// once per option and process when it bounds.
inline int BoundByCores(const std::string& option, int requested) {
  const int cores = CoreCount();
  if (requested <= cores) return requested;
  static std::mutex mu;
  static std::set<std::string> warned;
  std::lock_guard<std::mutex> lock(mu);
  if (warned.insert(option).second)
    MLOG(WARNING) << option << " " << requested << " is more than the " << cores << " cores this process may use; using " << cores;
  return cores;
}

inline void ParallelFor(int64_t n, int threads, const std::function<void(int64_t)>& fn) {
  if (n <= 0) return;
  int t = std::max(1, std::min<int>(threads, static_cast<int>(std::min<int64_t>(n, 1 << 20))));
  std::atomic<int64_t> next{0};
  std::exception_ptr error;
  std::mutex error_mutex;
  auto worker = [&] {
    while (true) {
      int64_t i = next++;
      if (i >= n) return;
      try {
        fn(i);
      } catch (...) {
        std::lock_guard<std::mutex> lock(error_mutex);
        if (!error) error = std::current_exception();
        next = n;  // stop handing out work
      }
    }
  };
  if (t == 1) {
    worker();
  } else {
    std::vector<std::thread> pool;
    for (int k = 0; k < t; ++k) pool.emplace_back(worker);
    for (auto& th : pool) th.join();
  }
  if (error) std::rethrow_exception(error);
}

}  // namespace mlfd
