// Option plumbing: the checker behind each Check(), config tokens, option values as JSON, comma lists.
#include "util/options.h"

#include "util/error.h"

namespace mlfd {

void OptionChecker::Require(bool ok, const std::string& name, const std::string& message) {
  if (!ok) problems_.push_back("--" + prefix_ + name + ": " + message);
}

void OptionChecker::Throw() const {
  if (problems_.empty()) return;
  std::string all = problems_.size() == 1 ? "invalid option " : "invalid options: ";
  for (size_t i = 0; i < problems_.size(); ++i) all += (i ? "; " : "") + problems_[i];
  throw UsageError(all);
}

std::vector<std::string> ConfigToTokens(const nlohmann::json& config, const std::string& source) {
  if (!config.is_object()) throw UsageError(Msg(source, ": config must be a JSON object"));
  std::vector<std::string> tokens;
  std::function<void(const nlohmann::json&, const std::string&)> walk =
      [&](const nlohmann::json& j, const std::string& prefix) {
        for (auto it = j.begin(); it != j.end(); ++it) {
          std::string key = prefix.empty() ? it.key() : prefix + "." + it.key();
          const auto& v = it.value();
          auto scalar = [&](const nlohmann::json& x) -> std::string {
            if (x.is_string()) return x.get<std::string>();
            if (x.is_boolean()) return x.get<bool>() ? "true" : "false";
            if (x.is_number()) return x.dump();
            throw UsageError(Msg(source, ": key '", key, "' has a value of unsupported type ",
                                 x.type_name()));
          };
          if (v.is_object()) {
            walk(v, key);
          } else if (v.is_array()) {
            for (const auto& e : v) tokens.push_back("--" + key + "=" + scalar(e));
          } else if (!v.is_null()) {
            tokens.push_back("--" + key + "=" + scalar(v));
          }
        }
      };
  walk(config, "");
  return tokens;
}

namespace {
// One option value as JSON. Every type an option struct registers must be listed here: an
// unknown type is a programming error (the tests run every binary, so it cannot ship).
template <typename T>
bool PutAs(const boost::any& a, nlohmann::json* out) {
  if (auto p = boost::any_cast<T>(&a)) {
    *out = *p;
    return true;
  }
  if (auto p = boost::any_cast<std::vector<T>>(&a)) {
    *out = *p;
    return true;
  }
  return false;
}
}  // namespace

nlohmann::json OptionValueJson(const std::string& key, const boost::any& a) {
  nlohmann::json v;
  if (PutAs<std::string>(a, &v) || PutAs<bool>(a, &v) || PutAs<int>(a, &v) || PutAs<unsigned>(a, &v) ||
      PutAs<long>(a, &v) || PutAs<unsigned long>(a, &v) || PutAs<long long>(a, &v) ||
      PutAs<unsigned long long>(a, &v) || PutAs<double>(a, &v) || PutAs<float>(a, &v))
    return v;
  throw Error(Msg("internal: option --", key, " has a type (", a.type().name(),
                  ") that provenance cannot record"));
}

std::vector<std::string> SplitOn(const std::string& s, char sep) {
  std::vector<std::string> out(1);
  for (char c : s) {
    if (c == sep) out.emplace_back();
    else out.back() += c;
  }
  return out;
}

std::string JoinNames(const std::vector<std::string>& names) {
  std::string s;
  for (const auto& x : names) s += (s.empty() ? "" : ", ") + x;
  return s;
}

std::vector<std::string> SplitCsv(const std::string& s) {
  std::vector<std::string> out;
  std::string cur;
  auto flush = [&] {
    size_t a = cur.find_first_not_of(" \t"), b = cur.find_last_not_of(" \t");
    if (a != std::string::npos) out.push_back(cur.substr(a, b - a + 1));
    cur.clear();
  };
  for (char ch : s) {
    if (ch == ',') flush();
    else cur += ch;
  }
  flush();
  return out;
}

}  // namespace mlfd
