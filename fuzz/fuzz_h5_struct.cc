// libFuzzer target: the same HDF5 readers as fuzz_h5 (h5_readers.h), on well-formed files with
// fuzzed contents. Byte mutations of a real file mostly end in libhdf5's own checks (checksums)
// or crash libhdf5 itself before our readers see a value; here the input is a JSON description
// of a file, which is written with our own writer (io/h5.cc, the 1.8 format the tools write) and
// then opened as image store, checkpoint and feature cache, so every attribute, shape, dtype and
// value the readers check can be wrong in any way:
//   {"attrs":    {"/": {"format": "mlfd.image_store", "format_version": 1, "mean": [0.5],
//                       "json:levels": ["layer4", "logits"], ...}, "train_state": {...}},
//    "datasets": {"labels": {"dtype": "int64", "shape": [6], "data": [0, 1], "chunk_rows": 0,
//                            "gzip": 0}, ...},
//    "strings":  {"class_names": ["a", "b"]},
//    "groups":   ["splits"]}
// Attribute values: a string, integer, float or list of numbers is stored as such; a key
// "json:<name>" (or any other JSON value) is stored as JSON text, as the tools store JSON. A
// dataset's data is repeated to fill its shape (zeros without data); at most 2^20 elements a
// dataset and 2^22 in all (a harness bound, docs/fuzzing.md). Seeds: fuzz/make_corpus.py
// describes the files the tools write.
#include <torch/torch.h>

#include <cstdint>
#include <cstring>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "fuzz_util.h"
#include "h5_readers.h"
#include "io/h5.h"
#include "util/error.h"
#include "util/log.h"

namespace {

using nlohmann::json;
namespace h5 = mlfd::h5;

constexpr int64_t kMaxElements = 1 << 20, kMaxTotal = 1 << 22;

bool ParseDType(const std::string& s, h5::DType* t) {
  static const std::pair<const char*, h5::DType> names[] = {
      {"uint8", h5::DType::kUInt8},     {"int64", h5::DType::kInt64},
      {"float16", h5::DType::kFloat16}, {"float32", h5::DType::kFloat32},
      {"float64", h5::DType::kFloat64}};
  for (const auto& [n, d] : names)
    if (s == n) {
      *t = d;
      return true;
    }
  return false;
}

// Element i of the data (cycled), converted to the dtype; `out` points at its bytes.
void Put(h5::DType t, double v, uint8_t* out) {
  // Out-of-range values are clamped first: the harness must not do what it looks for.
  auto clamp = [](double x, double lo, double hi) { return x != x ? 0.0 : x < lo ? lo : x > hi ? hi : x; };
  switch (t) {
    case h5::DType::kUInt8: {
      uint8_t x = static_cast<uint8_t>(clamp(v, 0, 255));
      std::memcpy(out, &x, 1);
      break;
    }
    case h5::DType::kInt64: {
      int64_t x = static_cast<int64_t>(clamp(v, -9.2e18, 9.2e18));
      std::memcpy(out, &x, 8);
      break;
    }
    case h5::DType::kFloat16: {
      c10::Half x(static_cast<float>(clamp(v, -65504, 65504)));
      std::memcpy(out, &x.x, 2);
      break;
    }
    case h5::DType::kFloat32: {
      float x = static_cast<float>(clamp(v, -3.4e38, 3.4e38));
      std::memcpy(out, &x, 4);
      break;
    }
    case h5::DType::kFloat64:
      std::memcpy(out, &v, 8);
      break;
  }
}

void SetAttr(h5::File& f, const std::string& object, std::string key, const json& v) {
  bool as_json = key.rfind("json:", 0) == 0;
  if (as_json) key = key.substr(5);
  bool numbers = v.is_array() && !v.empty();
  for (const auto& x : v.is_array() ? v : json::array()) numbers = numbers && x.is_number();
  if (as_json || !(v.is_string() || v.is_boolean() || v.is_number() || numbers)) {
    f.SetJsonAttr(object, key, v);
  } else if (v.is_string()) {
    f.SetAttr(object, key, v.get<std::string>());
  } else if (v.is_boolean() || v.is_number_integer()) {
    f.SetAttr(object, key, v.is_boolean() ? int64_t{v.get<bool>()} : v.get<int64_t>());
  } else if (v.is_number()) {
    f.SetAttr(object, key, v.get<double>());
  } else {
    f.SetAttr(object, key, v.get<std::vector<double>>());
  }
}

// Writes the described file; false when the description is not one the harness builds.
bool Build(const json& d, const std::string& path) {
  if (!d.is_object()) return false;
  h5::File f = h5::File::Create(path);
  int64_t total = 0;
  if (d.contains("groups") && d["groups"].is_array())
    for (const auto& g : d["groups"])
      if (g.is_string() && !f.Exists(g.get<std::string>())) {
        hid_t lcpl = H5Pcreate(H5P_LINK_CREATE);
        H5Pset_create_intermediate_group(lcpl, 1);
        hid_t id = H5Gcreate2(f.id(), g.get<std::string>().c_str(), lcpl, H5P_DEFAULT, H5P_DEFAULT);
        H5Pclose(lcpl);
        if (id < 0) return false;
        H5Gclose(id);
      }
  if (d.contains("strings") && d["strings"].is_object())
    for (const auto& [name, v] : d["strings"].items()) {
      std::vector<std::string> s;
      for (const auto& x : v.is_array() ? v : json::array()) s.push_back(x.is_string() ? x.get<std::string>() : x.dump());
      f.WriteStrings(name, s);
    }
  if (d.contains("datasets") && d["datasets"].is_object())
    for (const auto& [name, spec] : d["datasets"].items()) {
      if (!spec.is_object() || !spec.contains("shape") || !spec["shape"].is_array()) return false;
      h5::DType t;
      if (!spec.contains("dtype") || !spec["dtype"].is_string() || !ParseDType(spec["dtype"], &t)) return false;
      h5::Shape shape;
      int64_t n = 1;
      for (const auto& x : spec["shape"]) {
        if (!x.is_number_integer() || x.get<int64_t>() < 0 || x.get<int64_t>() > kMaxElements) return false;
        shape.push_back(x.get<int64_t>());
        n *= shape.back();
        if (n > kMaxElements) return false;
      }
      total += n;
      if (total > kMaxTotal) return false;
      h5::DatasetOptions o;
      if (spec.contains("chunk_rows") && spec["chunk_rows"].is_number_integer())
        o.chunk_rows = std::min<int64_t>(std::max<int64_t>(spec["chunk_rows"].get<int64_t>(), 0), 1 << 16);
      if (spec.contains("gzip") && spec["gzip"].is_number_integer())
        o.gzip = static_cast<int>(std::min<int64_t>(std::max<int64_t>(spec["gzip"].get<int64_t>(), 0), 9));
      std::vector<double> values;
      if (spec.contains("data") && spec["data"].is_array())
        for (const auto& x : spec["data"]) values.push_back(x.is_number() ? x.get<double>() : 0.0);
      const size_t es = h5::DTypeSize(t);
      std::vector<uint8_t> buf(static_cast<size_t>(n) * es);
      for (int64_t i = 0; i < n; ++i)
        Put(t, values.empty() ? 0.0 : values[static_cast<size_t>(i) % values.size()], &buf[i * es]);
      f.Write(name, t, shape, buf.data(), o);
    }
  if (d.contains("attrs") && d["attrs"].is_object())
    for (const auto& [object, attrs] : d["attrs"].items()) {
      if (!attrs.is_object()) continue;
      for (const auto& [key, v] : attrs.items()) SetAttr(f, object, key, v);
    }
  f.Close();
  return true;
}

}  // namespace

extern "C" int LLVMFuzzerInitialize(int*, char***) {
  mlfd::SetVerbosity(0);
  torch::set_num_threads(1);
  return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  json d;
  try {
    d = json::parse(data, data + size);
  } catch (const json::exception&) {
    return 0;
  }
  const std::string path = mlfd_fuzz::PathOf("struct.h5");
  try {
    if (!Build(d, path)) return 0;
  } catch (const mlfd::Error&) {
    return 0;  // our writer refused the description (e.g. an attribute on a missing object)
  }
  mlfd_fuzz::ReadAllKinds(path);
  return 0;
}
