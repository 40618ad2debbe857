// Small file-system helpers: existence checks and atomic text writes (temporary name in the same
// directory, renamed on success), so metrics and reports are never seen half-written.
#pragma once

#include <string>

namespace mlfd {

bool PathExists(const std::string& path);
// Writes `text` (any bytes) to a temporary in the same directory and renames it onto `path`; a
// failed write (e.g. a full disk) removes the temporary and throws Error with the system's reason.
void WriteTextAtomic(const std::string& path, const std::string& text);
std::string ReadTextFile(const std::string& path);  // throws Error naming the file
// Renames, translating failure into Error.
void RenameFile(const std::string& from, const std::string& to);
// Removes temporaries of `final_path` (".<name>.tmp-<pid>" and ".<name>.tmp-<pid>-<n>" in its
// directory) whose writing process no longer exists on this host, e.g. after a SIGKILL. A live
// pid's temporary is kept. Returns how many were removed (each is logged as a warning).
int RemoveOrphanTemps(const std::string& final_path);
// "runs/x/a.h5" -> "runs/x/a"
std::string StripExtension(const std::string& path);
// The folder of `path`: "runs/x/a.h5" -> "runs/x", "a.h5" -> ".", "/a.h5" -> "/".
std::string ParentDir(const std::string& path);
// The hidden file beside `path` that belongs to it: ("runs/x/a.h5", ".lock") -> "runs/x/.a.h5.lock",
// ("a.h5", ".tmp-") -> ".a.h5.tmp-". Temporaries, locks and their orphan search all use it.
std::string HiddenSibling(const std::string& path, const std::string& suffix);
// Throws Error naming `path` when its folder does not exist or is not writable (every output is
// checked before the work starts).
void CheckOutputDirectory(const std::string& path);

}  // namespace mlfd
