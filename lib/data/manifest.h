// Dataset manifests (data_manifests/*.json, documented in docs/formats.md): what a dataset is made
// of, how its classes and splits are defined, and how images are stored. Parsing validates every
// key and reports problems with the JSON key path.
#pragma once

#include <cstdint>
#include <nlohmann/json.hpp>
#include <opencv2/core.hpp>
#include <string>
#include <vector>

namespace mlfd {

struct SourceSpec {
  std::string kind;        // folder | list | idx | mnist_json | cifar_binary | cub200 | flowers102
                           // (images); video_folder | frame_folder | ucf101 | hmdb51 (videos)
  nlohmann::json spec;     // the source's JSON object
  std::string key_path;    // "sources[0]" for messages
};

struct SplitSpec {
  std::string mode = "official";  // official: sources say train/test; stratified: by fractions
  double train = 0.8, val = 0.1, test = 0.1;  // stratified fractions (sum to 1)
  double val_fraction = 0.1;  // official mode: validation carved from train when no source gives one
  int64_t max_train_per_class = 0;  // keep at most this many training images per class (0 = all);
                                    // the rest stay in the store but in no split
  uint64_t seed = 0;
};

struct ImageSpec {
  int size = 0;       // stored square resolution; 0 = keep the source size (all must agree)
  int channels = 3;   // 1 (grayscale) or 3 (RGB)
  std::string resize = "exact";  // exact: squash to size x size; shorter_crop: shorter side, centre crop
};

struct NormSpec {
  bool compute = true;  // computed on the train split, per channel, in [0,1] units
  std::vector<double> mean, std;
};

struct ClassSpec {
  std::string from = "list";  // list | folders | labels | file
  std::vector<std::string> names;  // for "list"
  std::string file;                // for "file": one class per line
  int column = 0;                  // for "file": whitespace-separated column holding the name
  std::vector<std::string> exclude;  // classes dropped with their samples (e.g. BACKGROUND_Google)
};

struct Manifest {
  std::string path;  // the manifest file
  std::string name;
  std::string description;
  ClassSpec classes;
  std::vector<SourceSpec> sources;
  SplitSpec split;
  ImageSpec image;
  NormSpec normalize;
};

// Reads and validates a manifest; errors name the file and key path.
Manifest LoadManifest(const std::string& path);

// One sample as a source lists it, before decoding.
struct RawSample {
  std::string file;       // image file to decode (a video: its file or frame folder); empty when
                          // `pixels` holds the image
  std::string media;      // "" = an image; "video" = a video file; "frames" = a folder of frames
  double frame_rate = 0;  // frame folders: the rate the manifest gives (0 = unknown)
  cv::Mat pixels;         // already-decoded 8-bit image (idx, JSON digits, CIFAR)
  int64_t label = -1;     // class index, or -1 when `label_name` names the class
  std::string label_name;
  std::string split;      // train | val | test, or empty when the split mode assigns it
  std::string origin;     // where it came from, for messages and the store's /sources
};

struct SourceContext {
  const Manifest& manifest;
  const SourceSpec& source;
  std::string data_root;  // relative paths in the manifest resolve against it
  // Resolves a manifest path against the data root.
  std::string Resolve(const std::string& p) const;
};

// Lists the samples of one source (decoding in-memory formats right away).
std::vector<RawSample> ReadSource(const SourceContext& ctx);

// Class names for a manifest whose classes come from folders or labels (needs the samples).
std::vector<std::string> ResolveClassNames(const Manifest& m, const std::string& data_root,
                                           const std::vector<RawSample>& samples);

// Names of the source kinds, for messages.
std::vector<std::string> SourceKinds();
// Whether a source kind lists videos (a manifest's sources are all videos or all images).
bool IsVideoSourceKind(const std::string& kind);

}  // namespace mlfd
