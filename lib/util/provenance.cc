// Provenance records.
#include "util/provenance.h"

#include <sys/stat.h>
#include <unistd.h>

#include <ctime>

#include "io/h5.h"
#include "util/app.h"
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
  struct stat st;
  int64_t size = stat(path.c_str(), &st) == 0 ? static_cast<int64_t>(st.st_size) : -1;
  json["inputs"][role] = {{"path", path}, {"sha256", sha256}, {"bytes", size}};
}

Provenance MakeProvenance(const CommandLine& cli) {
  Provenance p;
  char host[256] = {0};
  gethostname(host, sizeof(host) - 1);
  p.json = {{"tool", cli.info().name},
            {"command_line", cli.command_line()},
            {"options", cli.Resolved()},
            {"versions", VersionInfo()},
            {"created_utc", UtcTimestamp()},
            {"host", host},
            {"inputs", nlohmann::json::object()}};
  return p;
}

void WriteProvenance(h5::File& f, const Provenance& p) { f.SetJsonAttr("/", "provenance", p.json); }

}  // namespace mlfd
