// Internal: one reader per manifest source kind (data/sources.cc dispatches on the kind).
#pragma once

#include <string>
#include <vector>

#include "data/manifest.h"

namespace mlfd {

std::vector<RawSample> ReadFolderSource(const SourceContext& ctx);
std::vector<RawSample> ReadListSource(const SourceContext& ctx);
std::vector<RawSample> ReadIdxSource(const SourceContext& ctx);
std::vector<RawSample> ReadMnistJsonSource(const SourceContext& ctx);
std::vector<RawSample> ReadCifarBinarySource(const SourceContext& ctx);
std::vector<RawSample> ReadCub200Source(const SourceContext& ctx);
std::vector<RawSample> ReadFlowers102Source(const SourceContext& ctx);
// Videos (data/video_sources.cc).
std::vector<RawSample> ReadVideoFolderSource(const SourceContext& ctx);
std::vector<RawSample> ReadFrameFolderSource(const SourceContext& ctx);
std::vector<RawSample> ReadUcf101Source(const SourceContext& ctx);
std::vector<RawSample> ReadHmdb51Source(const SourceContext& ctx);

// Helpers shared by the readers.
class JsonView;
// A source's "split" key ("" when absent or "all").
std::string SplitOf(const JsonView& s);
// The names in `dir` (sorted, no hidden ones) of its folders (want_dirs) or of its other entries;
// a broken symbolic link is listed as a file, and warned about where folders are wanted.
std::vector<std::string> ListDir(const std::string& dir, bool want_dirs);
bool IsImageFile(const std::string& name, const std::vector<std::string>& extensions);
// "a dangling symbolic link" or "a symbolic link loop" when `path` is a link that leads nowhere,
// else "" (prepare_data names these instead of dropping them).
std::string BrokenLinkReason(const std::string& path);
std::vector<std::string> DefaultImageExtensions();
// Video file extensions a video_folder source reads by default (lower case, with the dot).
std::vector<std::string> DefaultVideoExtensions();
// Whole file into memory, transparently gunzipping .gz (throws Error naming the file).
std::string ReadFileMaybeGz(const std::string& path);
// Lines of a text file (trailing \r stripped).
std::vector<std::string> ReadLines(const std::string& path);
// Splits a line: delimiter " " means any run of whitespace.
std::vector<std::string> SplitFields(const std::string& line, const std::string& delimiter);

}  // namespace mlfd
