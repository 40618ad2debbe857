// Provenance written into every output file: the tool and its command line, resolved options,
// the sha256 of every input file, git revision, library versions and time.
#pragma once

#include <nlohmann/json.hpp>
#include <string>
#include <vector>

namespace mlfd {

struct Provenance {
  nlohmann::json json;
  // Adds an input file under `role` (e.g. "manifest"), with its sha256 and size.
  void AddInput(const std::string& role, const std::string& path);
  // Adds an already-computed fingerprint (used when a stage read the file already).
  void AddInputFingerprint(const std::string& role, const std::string& path, const std::string& sha256);
};

// Started by MakeProvenance (app/app.h), written by WriteProvenance (io/h5.h).

// "2026-11-23T19:37:21Z"
std::string UtcTimestamp();

}  // namespace mlfd
