// Manifest parsing and validation.
#include "data/manifest.h"

#include <cmath>

#include "util/error.h"
#include "util/json_view.h"

namespace mlfd {

std::vector<std::string> SourceKinds() {
  return {"folder",     "list",         "idx",          "mnist_json", "cifar_binary", "cub200",
          "flowers102", "video_folder", "frame_folder", "ucf101",     "hmdb51"};
}

bool IsVideoSourceKind(const std::string& kind) {
  return kind == "video_folder" || kind == "frame_folder" || kind == "ucf101" || kind == "hmdb51";
}

Manifest LoadManifest(const std::string& path) {
  nlohmann::json j = ReadJsonFile(path);
  JsonView v(j, path);
  v.AllowOnly({"name", "description", "classes", "exclude_classes", "sources", "split", "image",
               "normalize"});
  Manifest m;
  m.path = path;
  m.name = v.Str("name");
  if (m.name.empty() || m.name.find_first_of("/ \t") != std::string::npos)
    v.Fail("name", "must be a non-empty name without spaces or slashes");
  m.description = v.Str("description", "");

  // classes: a list of names, or "folders" / "labels", or {"file": ..., "column": k}
  if (!v.Has("classes")) v.Fail("classes", "missing required key (a list of names, \"folders\", "
                                           "\"labels\" or {\"file\": ...})");
  const auto& c = j["classes"];
  if (c.is_array()) {
    m.classes.from = "list";
    m.classes.names = v.Strs("classes");
    if (m.classes.names.empty()) v.Fail("classes", "empty class list");
    std::vector<std::string> sorted = m.classes.names;
    std::sort(sorted.begin(), sorted.end());
    for (size_t i = 1; i < sorted.size(); ++i)
      if (sorted[i] == sorted[i - 1]) v.Fail("classes", "duplicate class name '" + sorted[i] + "'");
  } else if (c.is_string()) {
    m.classes.from = c.get<std::string>();
    if (m.classes.from != "folders" && m.classes.from != "labels")
      v.Fail("classes", "expected a list of names, \"folders\", \"labels\" or {\"file\": ...}");
  } else if (c.is_object()) {
    JsonView cv = v.Child("classes");
    cv.AllowOnly({"file", "column"});
    m.classes.from = "file";
    m.classes.file = cv.Str("file");
    m.classes.column = cv.Int32("column", 0);
    if (m.classes.column < 0) cv.Fail("column", "must be >= 0");
  } else {
    v.Fail("classes", "expected a list of names, \"folders\", \"labels\" or {\"file\": ...}");
  }
  if (v.Has("exclude_classes")) m.classes.exclude = v.Strs("exclude_classes");

  auto sources = v.Array("sources");
  if (sources.empty()) v.Fail("sources", "at least one source is required");
  for (auto& s : sources) {
    std::string kind = s.Str("kind");
    auto kinds = SourceKinds();
    if (std::find(kinds.begin(), kinds.end(), kind) == kinds.end()) {
      std::string list;
      for (auto& k : kinds) list += (list.empty() ? "" : ", ") + k;
      s.Fail("kind", "unknown source kind '" + kind + "' (known: " + list + ")");
    }
    if (s.Has("split")) {
      std::string sp = s.Str("split");
      if (sp != "train" && sp != "val" && sp != "test" && sp != "all")
        s.Fail("split", "must be train, val, test or all");
    }
    if (!m.sources.empty() && IsVideoSourceKind(kind) != IsVideoSourceKind(m.sources[0].kind))
      s.Fail("kind", "'" + kind + "' cannot be mixed with " + m.sources[0].key_path + "'s '" +
                         m.sources[0].kind + "': a store holds images or video clips, not both");
    m.sources.push_back({kind, s.json(), s.path()});
  }

  if (v.Has("split")) {
    JsonView sv = v.Child("split");
    sv.AllowOnly({"mode", "fractions", "val_fraction", "seed", "max_train_per_class"});
    m.split.max_train_per_class = sv.Int("max_train_per_class", 0);
    if (m.split.max_train_per_class < 0) sv.Fail("max_train_per_class", "must be >= 0");
    m.split.mode = sv.Str("mode", "official");
    if (m.split.mode != "official" && m.split.mode != "stratified")
      sv.Fail("mode", "must be \"official\" or \"stratified\"");
    m.split.seed = static_cast<uint64_t>(sv.Int("seed", 0));
    m.split.val_fraction = sv.Num("val_fraction", 0.1);
    if (!(m.split.val_fraction >= 0 && m.split.val_fraction < 1))
      sv.Fail("val_fraction", "must be in [0, 1)");
    if (sv.Has("fractions")) {
      JsonView fv = sv.Child("fractions");
      fv.AllowOnly({"train", "val", "test"});
      m.split.train = fv.Num("train");
      m.split.val = fv.Num("val", 0.0);
      m.split.test = fv.Num("test");
      for (const char* k : {"train", "val", "test"})
        if (fv.Has(k) && (fv.Num(k) < 0 || fv.Num(k) > 1)) fv.Fail(k, "must be in [0, 1]");
      if (std::fabs(m.split.train + m.split.val + m.split.test - 1.0) > 1e-6)
        fv.Fail("", "train + val + test must sum to 1");
    } else if (m.split.mode == "stratified") {
      sv.Fail("fractions", "stratified mode needs {\"train\": .., \"val\": .., \"test\": ..}");
    }
  }

  if (!v.Has("image")) v.Fail("image", "missing required key ({\"size\": S, \"channels\": 1|3})");
  JsonView iv = v.Child("image");
  iv.AllowOnly({"size", "channels", "resize"});
  m.image.size = iv.Int32("size", 0);
  if (m.image.size < 0 || m.image.size > 4096) iv.Fail("size", "must be in 0..4096 (0 = keep)");
  m.image.channels = iv.Int32("channels");
  if (m.image.channels != 1 && m.image.channels != 3) iv.Fail("channels", "must be 1 or 3");
  m.image.resize = iv.Str("resize", "exact");
  if (m.image.resize != "exact" && m.image.resize != "shorter_crop")
    iv.Fail("resize", "must be \"exact\" or \"shorter_crop\"");

  if (v.Has("normalize")) {
    const auto& n = j["normalize"];
    if (n.is_string()) {
      if (n.get<std::string>() != "compute") v.Fail("normalize", "must be \"compute\" or {mean, std}");
    } else {
      JsonView nv = v.Child("normalize");
      nv.AllowOnly({"mean", "std"});
      m.normalize.compute = false;
      m.normalize.mean = nv.Nums("mean");
      m.normalize.std = nv.Nums("std");
      if (static_cast<int>(m.normalize.mean.size()) != m.image.channels)
        nv.Fail("mean", Msg("needs ", m.image.channels, " values (one per channel)"));
      if (static_cast<int>(m.normalize.std.size()) != m.image.channels)
        nv.Fail("std", Msg("needs ", m.image.channels, " values (one per channel)"));
      for (double s : m.normalize.std)
        if (!(s > 0)) nv.Fail("std", "values must be > 0");
    }
  }
  return m;
}

}  // namespace mlfd
