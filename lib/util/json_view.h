// Typed, validating access to a JSON document (manifests, configs, checkpoint attributes): every
// error names the file and the JSON key path ("manifest.json: sources[1].labels: expected a
// string"), and AllowOnly() rejects misspelt keys instead of silently ignoring them.
#pragma once

#include <cstdint>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

namespace mlfd {

class JsonView {
 public:
  JsonView(const nlohmann::json& j, std::string file, std::string path = "")
      : j_(&j), file_(std::move(file)), path_(std::move(path)) {}

  const nlohmann::json& json() const { return *j_; }
  const std::string& path() const { return path_; }
  const std::string& file() const { return file_; }
  bool Has(const std::string& key) const;

  std::string Str(const std::string& key) const;
  std::string Str(const std::string& key, const std::string& def) const;
  double Num(const std::string& key) const;
  double Num(const std::string& key, double def) const;
  int64_t Int(const std::string& key) const;
  int64_t Int(const std::string& key, int64_t def) const;
  // Int() for values held as int (sizes, counts, columns): Fail when it does not fit in 32 bits,
  // instead of a silent truncation.
  int Int32(const std::string& key) const;
  int Int32(const std::string& key, int def) const;
  bool Bool(const std::string& key, bool def) const;
  std::vector<std::string> Strs(const std::string& key) const;
  std::vector<double> Nums(const std::string& key) const;

  JsonView Child(const std::string& key) const;  // must exist and be an object
  std::vector<JsonView> Array(const std::string& key) const;  // must exist and be an array
  void AllowOnly(const std::vector<std::string>& keys) const;

  // "file: path.key: message"
  [[noreturn]] void Fail(const std::string& key, const std::string& message) const;
  std::string KeyPath(const std::string& key) const;

 private:
  const nlohmann::json& Get(const std::string& key) const;
  const nlohmann::json* j_;
  std::string file_, path_;
};

// Parses JSON from `in`, refusing a key given twice in one object (JSON parsers keep the last one
// silently); Error messages start with `source`.
nlohmann::json ParseJsonOnce(std::istream& in, const std::string& source);
// Parses a JSON file (ParseJsonOnce); a malformed file gives an Error with the parser's position.
nlohmann::json ReadJsonFile(const std::string& path);

}  // namespace mlfd
