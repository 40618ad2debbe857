// The read-only file mapping and its SIGBUS guard.
#include "io/mapped_file.h"

#include <fcntl.h>
#include <setjmp.h>
#include <signal.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <mutex>

#include "io/h5.h"
#include "util/error.h"

namespace mlfd {
namespace {

// The jump target of the Gather running on this thread, or null outside one.
thread_local sigjmp_buf* t_guard = nullptr;
struct sigaction g_previous;
std::once_flag g_install;

void OnSigbus(int sig, siginfo_t* info, void* context) {
  if (t_guard != nullptr) siglongjmp(*t_guard, 1);
  // Not a fault of a guarded read: what was installed before.
  if ((g_previous.sa_flags & SA_SIGINFO) != 0 && g_previous.sa_sigaction != nullptr) {
    g_previous.sa_sigaction(sig, info, context);
    return;
  }
  if ((g_previous.sa_flags & SA_SIGINFO) == 0 && g_previous.sa_handler != SIG_DFL && g_previous.sa_handler != SIG_IGN) {
    g_previous.sa_handler(sig);
    return;
  }
  // The default: restored, and the faulting access, repeated on return, ends the process as it would have.
  signal(SIGBUS, SIG_DFL);
}

void InstallGuard() {
  struct sigaction action;
  std::memset(&action, 0, sizeof(action));
  action.sa_sigaction = OnSigbus;
  action.sa_flags = SA_SIGINFO | SA_NODEFER;
  sigemptyset(&action.sa_mask);
  if (sigaction(SIGBUS, &action, &g_previous) != 0) throw Error(Msg("cannot install the SIGBUS handler: ", std::strerror(errno)));
}

}  // namespace

MappedFile::MappedFile(const std::string& path) : path_(path) {
  const int fd = open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) throw Error(Msg(path, ": cannot open for reading (", std::strerror(errno), ")"));
  struct stat st;
  if (fstat(fd, &st) != 0) {
    const int e = errno;
    close(fd);
    throw Error(Msg(path, ": cannot read its size (", std::strerror(e), ")"));
  }
  size_ = static_cast<uint64_t>(st.st_size);
  if (size_ > 0) {
    void* p = mmap(nullptr, size_, PROT_READ, MAP_SHARED, fd, 0);
    const int e = errno;
    close(fd);
    if (p == MAP_FAILED) throw Error(Msg(path, ": cannot map into memory (", std::strerror(e), ")"));
    data_ = static_cast<const char*>(p);
  } else {
    close(fd);
  }
  std::call_once(g_install, InstallGuard);
}

MappedFile::~MappedFile() {
  if (data_ != nullptr) munmap(const_cast<char*>(data_), size_);
}

int64_t MappedFile::Gather(const uint64_t* offsets, const int64_t* ids, size_t n, size_t row_bytes, bool fletcher32,
                           uint8_t* verified, char* out) const {
  const uint64_t stored = row_bytes + (fletcher32 ? 4 : 0);
  for (size_t k = 0; k < n; ++k)
    if (offsets[k] > size_ || stored > size_ - offsets[k])
      throw Error(Msg(path_, ": read failed (the file ends early at ", size_, " bytes, before a row at byte ", offsets[k],
                      ": truncated?)"));
  // Nothing with a destructor lives between the jump target and the jump. The handler runs with
  // SIGBUS unblocked (SA_NODEFER), so the jump need not restore the signal mask (a system call).
  sigjmp_buf target;
  if (sigsetjmp(target, 0) != 0) {
    t_guard = nullptr;
    throw Error(Msg(path_, ": read failed (the file shrank while it was read: truncated by another program?)"));
  }
  t_guard = &target;
  int64_t bad = -1;
  for (size_t k = 0; k < n; ++k) {
    const char* row = data_ + offsets[k];
    if (fletcher32 && verified[ids[k]] == 0) {
      if (!h5::ChunkChecksumMatches(row, row_bytes)) {
        bad = static_cast<int64_t>(k);
        break;
      }
      verified[ids[k]] = 1;
    }
    std::memcpy(out + k * row_bytes, row, row_bytes);
  }
  t_guard = nullptr;
  return bad;
}

}  // namespace mlfd
