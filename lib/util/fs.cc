// File-system helpers.
#include "util/fs.h"

#include <dirent.h>
#include <fcntl.h>
#include <signal.h>
#include <sys/stat.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <sstream>
#include <vector>

#include "util/error.h"
#include "util/log.h"
#include "util/staged_files.h"

namespace mlfd {

bool PathExists(const std::string& path) {
  struct stat st;
  return stat(path.c_str(), &st) == 0;
}

std::string ParentDir(const std::string& path) {
  auto slash = path.rfind('/');
  return slash == std::string::npos ? "." : (slash == 0 ? "/" : path.substr(0, slash));
}

std::string HiddenSibling(const std::string& path, const std::string& suffix) {
  auto slash = path.rfind('/');
  return (slash == std::string::npos ? "" : path.substr(0, slash + 1)) + "." +
         path.substr(slash == std::string::npos ? 0 : slash + 1) + suffix;
}

void CheckOutputDirectory(const std::string& path) {
  const std::string dir = ParentDir(path);
  struct stat st;
  if (stat(dir.c_str(), &st) != 0 || !S_ISDIR(st.st_mode))
    throw Error(Msg(path, ": output directory ", dir, " does not exist"));
  if (access(dir.c_str(), W_OK) != 0) throw Error(Msg(path, ": output directory ", dir, " is not writable"));
}

int RemoveOrphanTemps(const std::string& final_path) {
  const std::string dir = ParentDir(final_path);
  std::string prefix = HiddenSibling(final_path, ".tmp-");
  prefix = prefix.substr(prefix.rfind('/') == std::string::npos ? 0 : prefix.rfind('/') + 1);
  DIR* d = opendir(dir.c_str());
  if (!d) return 0;
  std::vector<std::string> orphans;
  while (dirent* e = readdir(d)) {
    std::string name = e->d_name;
    if (name.compare(0, prefix.size(), prefix) != 0) continue;
    std::string rest = name.substr(prefix.size());  // "<pid>" or "<pid>-<n>"
    size_t digits = rest.find_first_not_of("0123456789");
    std::string pid_text = rest.substr(0, digits);
    if (pid_text.empty() || pid_text.size() > 9) continue;
    if (digits != std::string::npos &&
        (rest[digits] != '-' || rest.size() == digits + 1 ||
         rest.find_first_not_of("0123456789", digits + 1) != std::string::npos))
      continue;
    pid_t pid = static_cast<pid_t>(std::stol(pid_text));
    if (pid == getpid() || kill(pid, 0) == 0 || errno != ESRCH) continue;  // alive (or not ours to judge)
    orphans.push_back(dir + "/" + name);
  }
  closedir(d);
  int removed = 0;
  for (const auto& p : orphans)
    if (std::remove(p.c_str()) == 0) {
      MLOG(WARNING) << "removed " << p << ", left behind by a process that no longer runs";
      ++removed;
    }
  return removed;
}

void WriteTextAtomic(const std::string& path, const std::string& text) {
  StagedFiles one;
  one.Add(path, text);
  one.Commit();
}

void StagedFiles::Add(const std::string& path, const std::string& bytes) {
  RemoveOrphanTemps(path);
  static std::atomic<int> counter{0};
  std::string tmp = HiddenSibling(path, Msg(".tmp-", getpid(), "-", counter++));
  int fd = open(tmp.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0644);
  if (fd < 0) throw Error(Msg(path, ": cannot write (", std::strerror(errno), ")"));
  auto fail = [&](int err) {
    close(fd);
    std::remove(tmp.c_str());
    throw Error(Msg(path, ": write failed (", std::strerror(err), ")"));
  };
  const char* p = bytes.data();
  size_t left = bytes.size();
  while (left > 0) {
    ssize_t n = write(fd, p, left);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) fail(n < 0 ? errno : ENOSPC);
    p += n;
    left -= static_cast<size_t>(n);
  }
  if (fdatasync(fd) != 0 && errno != EINVAL && errno != EROFS) fail(errno);
  if (close(fd) != 0) {
    int err = errno;
    std::remove(tmp.c_str());
    throw Error(Msg(path, ": write failed (", std::strerror(err), ")"));
  }
  items_.push_back({path, tmp});
}

void StagedFiles::Commit() {
  for (auto& item : items_) {
    RenameFile(item.tmp, item.path);
    item.tmp.clear();
  }
}

StagedFiles::~StagedFiles() {
  for (const auto& item : items_)
    if (!item.tmp.empty()) std::remove(item.tmp.c_str());
}

std::string ReadTextFile(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) throw Error(Msg(path, ": cannot open"));
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

void RenameFile(const std::string& from, const std::string& to) {
  if (std::rename(from.c_str(), to.c_str()) != 0)
    throw Error(Msg(to, ": cannot move ", from, " into place (", std::strerror(errno), ")"));
}

std::string StripExtension(const std::string& path) {
  auto slash = path.rfind('/');
  auto dot = path.rfind('.');
  if (dot == std::string::npos || (slash != std::string::npos && dot < slash)) return path;
  return path.substr(0, dot);
}

}  // namespace mlfd
