// Several outputs of one command written together: every file goes to a temporary beside it first
// (".<name>.tmp-<pid>-<n>"), and only when all of them are written are they renamed into place, so
// a failure (a full disk, a file-size limit) leaves none of them and the previous versions intact.
#pragma once

#include <string>
#include <vector>

namespace mlfd {

class StagedFiles {
 public:
  StagedFiles() = default;
  ~StagedFiles();  // removes the temporaries of a set that was not committed
  StagedFiles(const StagedFiles&) = delete;
  StagedFiles& operator=(const StagedFiles&) = delete;

  // Writes `bytes` to a temporary of `path` (synced to disk); throws Error with the system's
  // reason, removing that temporary, when the write fails.
  void Add(const std::string& path, const std::string& bytes);
  // Renames every temporary onto its path, in the order added.
  void Commit();

 private:
  struct Item {
    std::string path, tmp;
  };
  std::vector<Item> items_;
};

}  // namespace mlfd
