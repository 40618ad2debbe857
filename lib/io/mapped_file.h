// A read-only memory mapping of a whole file, for gathering many small rows at memory speed: the
// feature cache's shuffled batches (io/feature_cache.h) read rows of 256 bytes to tens of KB, where
// one pread call per row costs more than the copy.
//
// A mapping of a file that shrinks while it is mapped faults (SIGBUS) when a page past the new end
// is touched. Gather catches that fault and throws the same one-line Error as a short read; every
// other SIGBUS keeps its previous disposition. The toolkit itself never changes a file in place
// (outputs are renamed over, and a mapping keeps the inode it mapped).
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>

namespace mlfd {

class MappedFile {
 public:
  // Maps `path` read-only. Error (one line) if it cannot be opened or mapped.
  explicit MappedFile(const std::string& path);
  ~MappedFile();
  MappedFile(const MappedFile&) = delete;
  MappedFile& operator=(const MappedFile&) = delete;

  const std::string& path() const { return path_; }
  uint64_t size() const { return size_; }

  // The rows of a dataset stored one row per chunk (h5::RowChunks): copies n rows of `row_bytes`
  // bytes, row k from file offset offsets[k], to out + k * row_bytes. With `fletcher32`, each
  // stored row is followed by its 4-byte checksum; a row is verified (h5::ChunkChecksumMatches) when
  // `verified[ids[k]]` is 0, which is then set, so a reader checks every row the first time it
  // reads it and copies it at memory speed afterwards. Returns -1, or the first k whose checksum
  // did not match (its row not copied). Error if a row lies past the end of the file, or the file
  // shrank under the mapping.
  int64_t Gather(const uint64_t* offsets, const int64_t* ids, size_t n, size_t row_bytes, bool fletcher32,
                 uint8_t* verified, char* out) const;

 private:
  std::string path_;
  const char* data_ = nullptr;
  uint64_t size_ = 0;
};

}  // namespace mlfd
