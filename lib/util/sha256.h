// SHA-256 of byte strings and files: the fingerprint that ties every output to its inputs
// (a stage refuses a cache or checkpoint whose recorded fingerprint does not match).
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>

namespace mlfd {

class Sha256 {
 public:
  Sha256();
  void Update(const void* data, size_t n);
  std::string HexDigest();  // finalises; call once

 private:
  void Block(const uint8_t* p);
  uint32_t h_[8];
  uint8_t buf_[64];
  size_t buf_len_ = 0;
  uint64_t total_ = 0;
};

std::string Sha256Hex(const std::string& bytes);
// Hex digest of a file's contents; throws Error naming the file if it cannot be read.
std::string Sha256File(const std::string& path);

}  // namespace mlfd
