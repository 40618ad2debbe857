// File-system helpers.
#include "util/fs.h"

#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <sstream>

#include "util/error.h"

namespace mlfd {

bool PathExists(const std::string& path) {
  struct stat st;
  return stat(path.c_str(), &st) == 0;
}

void WriteTextAtomic(const std::string& path, const std::string& text) {
  auto slash = path.rfind('/');
  std::string tmp = (slash == std::string::npos ? "" : path.substr(0, slash + 1)) + "." +
                    path.substr(slash == std::string::npos ? 0 : slash + 1) + ".tmp-" +
                    std::to_string(getpid());
  {
    std::ofstream out(tmp, std::ios::binary);
    if (!out) throw Error(Msg(path, ": cannot write (", std::strerror(errno), ")"));
    out << text;
    out.flush();
    if (!out) {
      std::remove(tmp.c_str());
      throw Error(Msg(path, ": write failed (disk full?)"));
    }
  }
  RenameFile(tmp, path);
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
