// Provenance records.
#include "util/provenance.h"

#include <sys/stat.h>

#include <ctime>

#include "util/file_roles.h"
#include "util/sha256.h"

namespace mlfd {

std::string UtcTimestamp() {
  std::time_t t = std::time(nullptr);
  std::tm tm{};
  gmtime_r(&t, &tm);
  char buf[32];
  std::strftime(buf, sizeof(buf), "%Y-%m-%dT%H:%M:%SZ", &tm);
  return buf;
}

void Provenance::AddInput(const std::string& role, const std::string& path) {
  AddInputFingerprint(role, path, Sha256File(path));
}

void Provenance::AddInputFingerprint(const std::string& role, const std::string& path,
                                     const std::string& sha256) {
  DeclareInput(role, path);  // an input that is also an output of this command stops it here
  struct stat st;
  int64_t size = stat(path.c_str(), &st) == 0 ? static_cast<int64_t>(st.st_size) : -1;
  json["inputs"][role] = {{"path", path}, {"sha256", sha256}, {"bytes", size}};
}


}  // namespace mlfd
