// JsonView implementation.
#include "util/json_view.h"

#include <cmath>
#include <fstream>
#include <set>

#include "util/error.h"

namespace mlfd {

std::string JsonView::KeyPath(const std::string& key) const {
  if (key.empty()) return path_.empty() ? "(top level)" : path_;
  if (!key.empty() && key[0] == '[') return path_ + key;
  return path_.empty() ? key : path_ + "." + key;
}

void JsonView::Fail(const std::string& key, const std::string& message) const {
  throw Error(Msg(file_, ": ", KeyPath(key), ": ", message));
}

bool JsonView::Has(const std::string& key) const {
  return j_->is_object() && j_->contains(key) && !(*j_)[key].is_null();
}

const nlohmann::json& JsonView::Get(const std::string& key) const {
  if (!j_->is_object()) Fail("", "expected an object");
  if (!Has(key)) Fail(key, "missing required key");
  return (*j_)[key];
}

std::string JsonView::Str(const std::string& key) const {
  const auto& v = Get(key);
  if (!v.is_string()) Fail(key, Msg("expected a string, found ", v.type_name()));
  return v.get<std::string>();
}
std::string JsonView::Str(const std::string& key, const std::string& def) const {
  return Has(key) ? Str(key) : def;
}

double JsonView::Num(const std::string& key) const {
  const auto& v = Get(key);
  if (!v.is_number()) Fail(key, Msg("expected a number, found ", v.type_name()));
  return v.get<double>();
}
double JsonView::Num(const std::string& key, double def) const { return Has(key) ? Num(key) : def; }

int64_t JsonView::Int(const std::string& key) const {
  const auto& v = Get(key);
  // (A float beyond 64 bits, e.g. 1e300, is not an integer we can hold.)
  if (!v.is_number() || std::floor(v.get<double>()) != v.get<double>() ||
      (v.is_number_float() && !(std::fabs(v.get<double>()) < 9223372036854775808.0)) ||
      (v.is_number_unsigned() && v.get<uint64_t>() > uint64_t{INT64_MAX}))
    Fail(key, Msg("expected an integer, found ", v.dump()));
  return v.get<int64_t>();
}
int64_t JsonView::Int(const std::string& key, int64_t def) const { return Has(key) ? Int(key) : def; }

int JsonView::Int32(const std::string& key) const {
  const int64_t v = Int(key);
  if (v < INT32_MIN || v > INT32_MAX) Fail(key, Msg("the integer ", v, " is out of range (32 bits)"));
  return static_cast<int>(v);
}
int JsonView::Int32(const std::string& key, int def) const { return Has(key) ? Int32(key) : def; }

bool JsonView::Bool(const std::string& key, bool def) const {
  if (!Has(key)) return def;
  const auto& v = Get(key);
  if (!v.is_boolean()) Fail(key, Msg("expected true or false, found ", v.dump()));
  return v.get<bool>();
}

std::vector<std::string> JsonView::Strs(const std::string& key) const {
  const auto& v = Get(key);
  if (!v.is_array()) Fail(key, Msg("expected an array of strings, found ", v.type_name()));
  std::vector<std::string> out;
  for (size_t i = 0; i < v.size(); ++i) {
    if (!v[i].is_string()) Fail(Msg(key, "[", i, "]"), "expected a string");
    out.push_back(v[i].get<std::string>());
  }
  return out;
}

std::vector<double> JsonView::Nums(const std::string& key) const {
  const auto& v = Get(key);
  if (!v.is_array()) Fail(key, Msg("expected an array of numbers, found ", v.type_name()));
  std::vector<double> out;
  for (size_t i = 0; i < v.size(); ++i) {
    if (!v[i].is_number()) Fail(Msg(key, "[", i, "]"), "expected a number");
    out.push_back(v[i].get<double>());
  }
  return out;
}

JsonView JsonView::Child(const std::string& key) const {
  const auto& v = Get(key);
  if (!v.is_object()) Fail(key, Msg("expected an object, found ", v.type_name()));
  return JsonView(v, file_, KeyPath(key));
}

std::vector<JsonView> JsonView::Array(const std::string& key) const {
  const auto& v = Get(key);
  if (!v.is_array()) Fail(key, Msg("expected an array, found ", v.type_name()));
  std::vector<JsonView> out;
  for (size_t i = 0; i < v.size(); ++i) out.emplace_back(v[i], file_, Msg(KeyPath(key), "[", i, "]"));
  return out;
}

void JsonView::AllowOnly(const std::vector<std::string>& keys) const {
  if (!j_->is_object()) Fail("", Msg("expected an object, found ", j_->type_name()));
  for (auto it = j_->begin(); it != j_->end(); ++it) {
    bool known = false;
    for (auto& k : keys) known = known || k == it.key();
    if (!known) {
      std::string list;
      for (auto& k : keys) list += (list.empty() ? "" : ", ") + k;
      Fail(it.key(), "unknown key (known: " + list + ")");
    }
  }
}

nlohmann::json ParseJsonOnce(std::istream& in, const std::string& source) {
  // nlohmann keeps the last of two equal keys silently; the parser's callback sees every key.
  std::vector<std::set<std::string>> open;  // keys of the objects being parsed, innermost last
  std::string duplicate;
  auto check = [&](int /*depth*/, nlohmann::json::parse_event_t event, nlohmann::json& parsed) {
    using E = nlohmann::json::parse_event_t;
    if (event == E::object_start) {
      open.emplace_back();
    } else if (event == E::object_end) {
      if (!open.empty()) open.pop_back();
    } else if (event == E::key && !open.empty() && !open.back().insert(parsed.get<std::string>()).second &&
               duplicate.empty()) {
      duplicate = parsed.get<std::string>();
    }
    return true;
  };
  nlohmann::json j;
  try {
    j = nlohmann::json::parse(in, check);
  } catch (const nlohmann::json::exception& e) {  // parse_error, or out_of_range for 1e999
    throw Error(Msg(source, ": malformed JSON: ", e.what()));
  }
  if (!duplicate.empty())
    throw Error(Msg(source, ": key \"", duplicate, "\" is given twice in one object (JSON would keep only the last)"));
  return j;
}

nlohmann::json ReadJsonFile(const std::string& path) {
  std::ifstream in(path);
  if (!in) throw Error(Msg(path, ": cannot open"));
  return ParseJsonOnce(in, path);
}

}  // namespace mlfd
