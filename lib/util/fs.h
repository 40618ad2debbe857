// Small file-system helpers: existence checks and atomic text writes (temporary name in the same
// directory, renamed on success), so metrics and reports are never seen half-written.
#pragma once

#include <string>

namespace mlfd {

bool PathExists(const std::string& path);
void WriteTextAtomic(const std::string& path, const std::string& text);
std::string ReadTextFile(const std::string& path);  // throws Error naming the file
// Renames, translating failure into Error.
void RenameFile(const std::string& from, const std::string& to);
// "runs/x/a.h5" -> "runs/x/a"
std::string StripExtension(const std::string& path);

}  // namespace mlfd
