// The files one command reads and the files it writes, so that no output ever replaces an input,
// a file an input refers to (the teachers of a T*), or another output of the same command
// (docs/reliability.md). Two paths name the same file when they resolve to the same real path or,
// for files that exist, to the same device and inode (hard links).
#pragma once

#include <string>

namespace mlfd {

// Records that this command reads `path`; `what` names it in messages ("the store", "--teacher").
// Throws UsageError naming both paths when it is a file this command writes.
void DeclareInput(const std::string& what, const std::string& path);

// Records that this command writes `path`. Throws UsageError naming both paths when it is a file
// this command reads, or writes under another role or path (between outputs by real path only:
// outputs are renamed into place, which never writes through a hard link). Declaring one output again under the
// same role (or without one) is a no-op.
void DeclareOutput(const std::string& what, const std::string& path);

// What a non-HDF5 output holds; a file already at its path must hold the same kind to be replaced.
enum class OutputKind { kJson, kJsonLines, kPng, kMarkdown, kHtml };

// Checks a non-HDF5 output before the work starts: its folder exists and is writable, it is
// declared (DeclareOutput), and a non-empty file already there is of `kind` (a JSON output never
// replaces a checkpoint, a PNG output never a store). With `ours_only`, an existing PNG must also
// carry this toolkit's mark (for files the user did not name, e.g. the loss plot beside
// --curves-png). Throws Error or UsageError.
void CheckTextOutput(const std::string& what, const std::string& path, OutputKind kind, bool ours_only = false);

// The text of the PNG mark (a tEXt chunk "Software" = this value) that ours_only looks for.
extern const char* const kPngSoftwareMark;

// Declarations are kept while one of these lives (RunMain holds one for the whole command);
// without one they are ignored, so library calls in one process (tests) do not see each other's
// files. Starts and ends with nothing declared.
class FileRoleTracking {
 public:
  FileRoleTracking();
  ~FileRoleTracking();
  FileRoleTracking(const FileRoleTracking&) = delete;
  FileRoleTracking& operator=(const FileRoleTracking&) = delete;
};

}  // namespace mlfd
