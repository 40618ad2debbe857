// Option plumbing every options struct uses: the checker behind each Check(), config files as
// tokens, option values as JSON (provenance), and the comma lists of option values. Light on
// purpose (Boost.ProgramOptions and nlohmann_json only): every floor of lib/ may use it.
#pragma once

#include <boost/program_options.hpp>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

namespace mlfd {

namespace po = boost::program_options;

// Collects the problems an options struct's Check() finds, then throws one UsageError that lists
// them all, so a user fixes every bad value in one go.
class OptionChecker {
 public:
  explicit OptionChecker(std::string prefix = "") : prefix_(std::move(prefix)) {}
  // Records "--<prefix><name>: <message>" when `ok` is false.
  void Require(bool ok, const std::string& name, const std::string& message);
  // Throws UsageError listing every recorded problem; does nothing if there are none.
  void Throw() const;
  bool ok() const { return problems_.empty(); }

 private:
  std::string prefix_;
  std::vector<std::string> problems_;
};

// Converts a JSON config object into "--key=value" tokens (nested objects join keys with '.';
// arrays give one token per element). Exposed for tests.
std::vector<std::string> ConfigToTokens(const nlohmann::json& config, const std::string& source);

// One option's value as JSON (every integer width, float, bool, string and vectors of them);
// throws Error for a type it does not know. Exposed for tests.
nlohmann::json OptionValueJson(const std::string& key, const boost::any& value);

// "a,b,,c" -> {"a", "b", "c"} (spaces around items trimmed, empty items dropped).
std::vector<std::string> SplitCsv(const std::string& s);
// "a:b::c" split on ':' -> {"a", "b", "", "c"} (every field kept, nothing trimmed; "" -> {""}).
std::vector<std::string> SplitOn(const std::string& s, char sep);
// {"a", "b"} -> "a, b" (for messages that list valid names).
std::string JoinNames(const std::vector<std::string>& names);

}  // namespace mlfd
