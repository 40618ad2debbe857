// Shared by the libFuzzer harnesses (docs/fuzzing.md): the readers take paths, so each input is
// written to a fixed file in a per-process folder on tmpfs and the real reader is called on it.
// Every expected failure of a reader is mlfd::Error (UsageError included): the harnesses catch
// exactly that. Anything else -- a crash, a sanitizer report, any other exception escaping, an
// abort, a hang -- is a finding.
#pragma once

#include <sys/stat.h>
#include <unistd.h>

#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

namespace mlfd_fuzz {

// $MLFD_FUZZ_TMP (scripts/fuzz.sh sets it and removes it afterwards), else /dev/shm, else
// $TMPDIR, else /tmp; then "mlfd-fuzz-<pid>" inside it.
inline const std::string& Dir() {
  static const std::string dir = [] {
    std::string base;
    const char* env = std::getenv("MLFD_FUZZ_TMP");
    if (env && *env) {
      base = env;
      mkdir(base.c_str(), 0700);
    } else if (access("/dev/shm", W_OK) == 0) {
      base = "/dev/shm";
    } else {
      const char* t = std::getenv("TMPDIR");
      base = t && *t ? t : "/tmp";
    }
    std::string d = base + "/mlfd-fuzz-" + std::to_string(getpid());
    mkdir(d.c_str(), 0700);
    return d;
  }();
  return dir;
}

// Path of `name` inside Dir() (sub-folders in `name` are created).
inline std::string PathOf(const std::string& name) {
  std::string p = Dir() + "/" + name;
  for (size_t pos = Dir().size() + 1; (pos = p.find('/', pos)) != std::string::npos; ++pos)
    mkdir(p.substr(0, pos).c_str(), 0700);
  return p;
}

// Writes bytes to `name` inside Dir() and returns its path (aborts if the disk fails: that is not
// a finding about the reader, so it must not pass unnoticed either).
inline std::string WriteFile(const std::string& name, const void* data, size_t size) {
  std::string p = PathOf(name);
  FILE* f = std::fopen(p.c_str(), "wb");
  if (!f || (size && std::fwrite(data, 1, size, f) != size) || std::fclose(f) != 0) {
    std::perror(p.c_str());
    std::abort();
  }
  return p;
}
inline std::string WriteFile(const std::string& name, const std::string& s) {
  return WriteFile(name, s.data(), s.size());
}

// Splits `s` at NUL bytes into exactly `n` parts (missing parts are empty, the last part keeps
// any further NULs): how the text harnesses carry several files in one input.
inline std::vector<std::string> SplitNul(const std::string& s, size_t n) {
  std::vector<std::string> out;
  size_t start = 0;
  while (out.size() + 1 < n) {
    size_t pos = s.find('\0', start);
    if (pos == std::string::npos) break;
    out.push_back(s.substr(start, pos - start));
    start = pos + 1;
  }
  out.push_back(start <= s.size() ? s.substr(start) : "");
  while (out.size() < n) out.emplace_back();
  return out;
}

// Splits binary `s` into two parts: a 4-byte little-endian length of the first part, the first
// part, then the second part (a length past the end takes everything).
inline std::pair<std::string, std::string> SplitLen(const std::string& s) {
  if (s.size() < 4) return {s, ""};
  uint32_t n = uint32_t(uint8_t(s[0])) | uint32_t(uint8_t(s[1])) << 8 | uint32_t(uint8_t(s[2])) << 16 |
               uint32_t(uint8_t(s[3])) << 24;
  std::string rest = s.substr(4);
  if (n >= rest.size()) return {rest, ""};
  return {rest.substr(0, n), rest.substr(n)};
}

}  // namespace mlfd_fuzz
