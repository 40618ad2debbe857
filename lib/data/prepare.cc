// prepare_data implementation: list samples, resolve classes and labels, decode in parallel
// blocks, assign splits, compute normalisation, write the store atomically.
#include "data/prepare.h"

#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <iostream>
#include <map>
#include <opencv2/imgcodecs.hpp>
#include <opencv2/imgproc.hpp>
#include <random>
#include <set>
#include <unordered_map>

#include "data/clip_store.h"
#include "data/image_store.h"
#include "data/source_readers.h"
#include "io/h5.h"
#include "util/error.h"
#include "util/file_roles.h"
#include "util/json_view.h"
#include "util/log.h"
#include "util/options.h"
#include "util/parallel.h"
#include "util/progress.h"
#include "util/provenance.h"
#include "util/sha256.h"

namespace mlfd {

namespace po = boost::program_options;

void PrepareOptions::Register(po::options_description& d, const std::string& prefix) {
  d.add_options()((prefix + "data-root").c_str(),
                  po::value<std::string>(&data_root)->default_value(data_root),
                  "directory that relative paths in the manifest resolve against")(
      (prefix + "skip-bad").c_str(),
      po::value<bool>(&skip_bad)->default_value(skip_bad)->implicit_value(true),
      "skip unreadable images (counted and listed in the store) instead of failing")(
      (prefix + "gzip").c_str(), po::value<int>(&gzip)->default_value(gzip),
      "gzip level for the stored images (0 = none, 1..9)")(
      (prefix + "block").c_str(), po::value<int64_t>(&block)->default_value(block),
      "images decoded per parallel block (bounds memory)")(
      (prefix + "max-train-per-class").c_str(),
      po::value<int64_t>(&max_train_per_class)->default_value(max_train_per_class),
      "keep at most this many training images per class, a seeded subset (0 = the manifest's "
      "setting); "
      "validation and test splits are unchanged")(
      (prefix + "check-pixel-duplicates").c_str(),
      po::value<bool>(&check_pixel_duplicates)
          ->default_value(check_pixel_duplicates)
          ->implicit_value(true),
      "also refuse images whose stored pixels equal an earlier image's (listed with both origins)")(
      (prefix + "frames").c_str(), po::value<int>(&frames)->default_value(frames),
      "video sources: frames stored per clip, sampled uniformly over each video (0 = 16 unless "
      "--frame-step is given)")((prefix + "frame-step").c_str(),
                                po::value<int>(&frame_step)->default_value(frame_step),
                                "video sources: store every k-th frame from the first instead, up "
                                "to --max-frames (0 = uniform)")(
      (prefix + "max-frames").c_str(), po::value<int>(&max_frames)->default_value(max_frames),
      "video sources with --frame-step: frames stored per clip")(
      (prefix + "short-video").c_str(),
      po::value<std::string>(&short_video)->default_value(short_video),
      "video sources: a video with too few frames is padded by repeating frames (pad) or listed as "
      "unreadable (refuse: fails the run unless --skip-bad)")(
      (prefix + "split-id").c_str(), po::value<int>(&split_id)->default_value(split_id),
      "ucf101 and hmdb51 sources: which of the three official splits (1..3; 0 = the manifest's "
      "split_id)");
}

void PrepareOptions::Check(const std::string& prefix) const {
  OptionChecker c(prefix);
  c.Require(gzip >= 0 && gzip <= 9, "gzip", "must be in 0..9");
  c.Require(block >= 1, "block", "must be >= 1");
  c.Require(max_train_per_class >= 0, "max-train-per-class", "must be >= 0 (0 = the manifest's setting)");
  c.Require(frames >= 0 && frames <= 4096, "frames",
            "must be in 0..4096 (0 = 16, or --max-frames with --frame-step)");
  c.Require(frame_step >= 0 && frame_step <= 100000, "frame-step",
            "must be in 0..100000 (0 = uniform sampling)");
  c.Require(max_frames >= 0 && max_frames <= 4096, "max-frames", "must be in 0..4096");
  c.Require(!(frame_step > 0 && frames > 0), "frames",
            "give --frames (uniform sampling) or --frame-step with --max-frames, not both");
  c.Require(!(frame_step > 0 && max_frames == 0), "max-frames",
            "is needed with --frame-step (frames per clip)");
  c.Require(!(frame_step == 0 && max_frames > 0), "max-frames",
            "applies to --frame-step only (uniform sampling takes --frames)");
  c.Require(short_video == "pad" || short_video == "refuse", "short-video",
            "must be pad or refuse");
  c.Require(split_id >= 0 && split_id <= 3, "split-id",
            "must be 1, 2 or 3 (0 = the manifest's split_id)");
  c.Throw();
}

ClipSampling PrepareOptions::Sampling() const {
  ClipSampling s;
  if (frame_step > 0) {
    s.mode = ClipSampling::Mode::kStep;
    s.step = frame_step;
    s.frames = max_frames;
  } else {
    s.frames = frames > 0 ? frames : 16;
  }
  s.pad = short_video != "refuse";
  return s;
}

cv::Mat ConvertImage(const cv::Mat& src, const ImageSpec& spec, bool is_bgr) {
  cv::Mat img;
  if (src.channels() == 4) {
    cv::cvtColor(src, img, is_bgr ? cv::COLOR_BGRA2BGR : cv::COLOR_RGBA2RGB);
  } else {
    img = src;
  }
  if (img.depth() != CV_8U) {  // 16-bit PNG/TIFF: scale to 8 bits
    cv::Mat tmp;
    img.convertTo(tmp, CV_8U, img.depth() == CV_16U ? 1.0 / 257.0 : 1.0);
    img = tmp;
  }
  // Channels: stored RGB (torchvision order) or grayscale.
  if (spec.channels == 1 && img.channels() == 3) {
    cv::cvtColor(img, img, is_bgr ? cv::COLOR_BGR2GRAY : cv::COLOR_RGB2GRAY);
  } else if (spec.channels == 3 && img.channels() == 1) {
    cv::cvtColor(img, img, cv::COLOR_GRAY2RGB);
  } else if (spec.channels == 3 && is_bgr) {
    cv::cvtColor(img, img, cv::COLOR_BGR2RGB);
  }
  if (spec.size > 0 && (img.rows != spec.size || img.cols != spec.size)) {
    if (spec.resize == "shorter_crop") {
      double scale = static_cast<double>(spec.size) / std::min(img.rows, img.cols);
      int nh = std::max(spec.size, static_cast<int>(std::lround(img.rows * scale)));
      int nw = std::max(spec.size, static_cast<int>(std::lround(img.cols * scale)));
      cv::Mat r;
      cv::resize(img, r, cv::Size(nw, nh), 0, 0, scale < 1 ? cv::INTER_AREA : cv::INTER_LINEAR);
      int y = (nh - spec.size) / 2, x = (nw - spec.size) / 2;
      img = r(cv::Rect(x, y, spec.size, spec.size)).clone();
    } else {
      bool shrink = img.rows > spec.size || img.cols > spec.size;
      cv::Mat r;
      cv::resize(img, r, cv::Size(spec.size, spec.size), 0, 0, shrink ? cv::INTER_AREA : cv::INTER_LINEAR);
      img = r;
    }
  }
  if (!img.isContinuous()) img = img.clone();
  return img;
}

cv::Mat LoadAndConvert(const std::string& file, const ImageSpec& spec) {
  cv::Mat raw;
  try {
    raw = cv::imread(file, cv::IMREAD_UNCHANGED);
  } catch (const cv::Exception&) {
    return cv::Mat();
  }
  if (raw.empty()) return raw;
  return ConvertImage(raw, spec, /*is_bgr=*/raw.channels() >= 3);
}

std::map<std::string, std::vector<int64_t>> AssignSplits(const std::vector<int64_t>& labels,
                                                         const std::vector<std::string>& tags,
                                                         const SplitSpec& spec, int num_classes,
                                                         const std::string& manifest_path) {
  std::map<std::string, std::vector<int64_t>> out{{"train", {}}, {"val", {}}, {"test", {}}};
  std::mt19937_64 rng(spec.seed);
  // Deterministic Fisher-Yates (std::shuffle's draws are implementation-defined).
  auto shuffle = [&](std::vector<int64_t>& v) {
    for (size_t i = v.size(); i > 1; --i) std::swap(v[i - 1], v[rng() % i]);
  };
  std::vector<std::vector<int64_t>> by_class(static_cast<size_t>(num_classes));
  if (spec.mode == "stratified") {
    for (size_t i = 0; i < labels.size(); ++i) by_class[static_cast<size_t>(labels[i])].push_back(static_cast<int64_t>(i));
    for (auto& idx : by_class) {
      shuffle(idx);
      auto n = static_cast<double>(idx.size());
      size_t n_test = static_cast<size_t>(std::lround(n * spec.test));
      size_t n_val = static_cast<size_t>(std::lround(n * spec.val));
      n_val = std::min(n_val, idx.size() - std::min(n_test, idx.size()));
      for (size_t k = 0; k < idx.size(); ++k)
        out[k < n_test ? "test" : k < n_test + n_val ? "val" : "train"].push_back(idx[k]);
    }
  } else {
    bool has_val = std::find(tags.begin(), tags.end(), "val") != tags.end();
    for (size_t i = 0; i < labels.size(); ++i) {
      const std::string& t = tags[i];
      if (t.empty())
        throw Error(Msg(manifest_path, ": split mode \"official\" but a source gives no split for ",
                        "some samples; set \"split\" on every source or use mode \"stratified\""));
      if (t == "train" && !has_val)
        by_class[static_cast<size_t>(labels[i])].push_back(static_cast<int64_t>(i));
      else
        out[t].push_back(static_cast<int64_t>(i));
    }
    if (!has_val) {
      for (auto& idx : by_class) {
        shuffle(idx);
        size_t n_val = static_cast<size_t>(std::lround(idx.size() * spec.val_fraction));
        for (size_t k = 0; k < idx.size(); ++k) out[k < n_val ? "val" : "train"].push_back(idx[k]);
      }
    }
  }
  if (spec.max_train_per_class > 0) {  // a seeded, class-balanced subset of train
    std::vector<int64_t> train = out["train"];
    std::sort(train.begin(), train.end());
    shuffle(train);
    std::vector<int64_t> kept, count(static_cast<size_t>(num_classes), 0);
    for (int64_t i : train)
      if (count[static_cast<size_t>(labels[static_cast<size_t>(i)])]++ < spec.max_train_per_class) kept.push_back(i);
    out["train"] = kept;
  }
  for (auto& [name, v] : out) std::sort(v.begin(), v.end());
  return out;
}

namespace {

// Why a listed image could not be read, when the file system says more than the decoder:
// " (a dangling symbolic link)", " (a symbolic link loop)", " (missing)", or "".
std::string WhyUnreadable(const std::string& path) {
  if (path.empty()) return "";
  struct stat st;
  if (stat(path.c_str(), &st) == 0) return "";
  const int err = errno;
  const std::string broken = BrokenLinkReason(path);
  if (!broken.empty()) return " (" + broken + ")";
  return err == ENOENT ? " (missing)" : Msg(" (", std::strerror(err), ")");
}

// Image decoders print their own diagnostics on stderr ("libpng error: Read Error", "Corrupt JPEG
// data: ..."), before and between our one-line messages, although the images they concern are
// listed by us anyway. While a block decodes, stderr goes to a temporary file; afterwards our own
// lines (progress, warnings) are passed on and the decoders' lines only counted.
class DecoderChatter {
 public:
  DecoderChatter() {
    std::fflush(stderr);
    file_ = std::tmpfile();
    saved_ = file_ ? dup(2) : -1;
    if (saved_ < 0 || dup2(fileno(file_), 2) < 0) Restore();
  }
  ~DecoderChatter() { Restore(); }
  int suppressed() const { return suppressed_; }
  void Restore() {
    if (saved_ >= 0) {
      std::cerr.flush();
      std::fflush(stderr);
      dup2(saved_, 2);
      close(saved_);
      saved_ = -1;
      std::rewind(file_);
      char line[4096];
      std::string out;
      while (std::fgets(line, sizeof(line), file_)) {
        std::string l = line;
        // FFmpeg's lines start "[<component> @ 0x...]", OpenCV's own "[ WARN:" or "[ERROR:".
        const bool ffmpeg = l.rfind("[", 0) == 0 && l.find(" @ 0x") != std::string::npos;
        if (l.rfind("libpng ", 0) == 0 || l.rfind("Corrupt JPEG data", 0) == 0 ||
            l.rfind("Premature end of JPEG file", 0) == 0 || l.rfind("libtiff", 0) == 0 || ffmpeg ||
            l.rfind("[ WARN:", 0) == 0 || l.rfind("[ERROR:", 0) == 0)
          ++suppressed_;
        else
          out += l;
      }
      if (!out.empty()) std::fwrite(out.data(), 1, out.size(), stderr);
    }
    if (file_) std::fclose(file_);
    file_ = nullptr;
  }

 private:
  std::FILE* file_ = nullptr;
  int saved_ = -1;
  int suppressed_ = 0;
};

// Resolves label names to indices, drops excluded classes, and checks every label.
void ResolveLabels(std::vector<RawSample>& samples, const std::vector<std::string>& classes,
                   const std::vector<std::string>& exclude) {
  std::unordered_map<std::string, int64_t> index;
  for (size_t i = 0; i < classes.size(); ++i) index[classes[i]] = static_cast<int64_t>(i);
  std::set<std::string> excluded(exclude.begin(), exclude.end());
  std::vector<RawSample> kept;
  kept.reserve(samples.size());
  for (auto& s : samples) {
    if (s.label < 0) {
      if (excluded.count(s.label_name)) continue;
      auto it = index.find(s.label_name);
      if (it == index.end())
        throw Error(Msg(s.origin, ": label '", s.label_name, "' is not in the manifest's class list (",
                        classes.size(), " classes)"));
      s.label = it->second;
    } else {
      if (s.label >= static_cast<int64_t>(classes.size()))
        throw Error(Msg(s.origin, ": label ", s.label, " is out of range (", classes.size(),
                        " classes: 0..", classes.size() - 1, ")"));
      if (excluded.count(classes[static_cast<size_t>(s.label)])) continue;
    }
    kept.push_back(std::move(s));
  }
  samples.swap(kept);
}

}  // namespace

PrepareSummary PrepareData(const std::string& manifest_path, const std::string& out_path,
                           const PrepareOptions& opts, Provenance provenance, int threads) {
  opts.Check();  // (the app checks them already; a library caller may not have)
  DeclareInput("manifest", manifest_path);
  DeclareOutput("", out_path);  // before the manifest is read: an output onto it is refused as such
  Manifest m = LoadManifest(manifest_path);
  const bool video = IsVideoSourceKind(m.sources[0].kind);  // all sources are alike (LoadManifest)
  h5::CheckOutputPath(out_path, video ? kClipStoreFormat : kImageStoreFormat);
  provenance.AddInput("manifest", manifest_path);
  const char* unit = video ? "video" : "image";
  if (!video &&
      (opts.frames > 0 || opts.frame_step > 0 || opts.max_frames > 0 || opts.short_video != "pad"))
    throw UsageError(
        Msg("--frames, --frame-step, --max-frames and --short-video apply to video sources; ",
            m.path, " lists images"));
  int split_id = 0;  // the official split of ucf101 / hmdb51 sources (0: none)
  for (auto& src : m.sources) {
    if (src.kind != "ucf101" && src.kind != "hmdb51") continue;
    if (opts.split_id > 0) src.spec["split_id"] = opts.split_id;
    split_id = src.spec.contains("split_id") && src.spec["split_id"].is_number_integer()
                   ? src.spec["split_id"].get<int>()
                   : 1;
  }
  if (opts.split_id > 0 && split_id == 0)
    throw UsageError(Msg("--split-id applies to ucf101 and hmdb51 sources; ", m.path, " has none"));

  // 1. List samples.
  std::vector<RawSample> samples;
  for (const auto& src : m.sources) {
    SourceContext ctx{m, src, opts.data_root};
    auto part = ReadSource(ctx);
    MLOG(INFO) << m.name << ": " << src.key_path << " (" << src.kind << "): " << part.size() << " samples";
    if (part.empty())
      throw Error(Msg(m.path, ": ", src.key_path, ": source has no samples (wrong path or layout?)"));
    for (auto& s : part) samples.push_back(std::move(s));
  }

  // 2. Classes and labels.
  std::vector<std::string> classes = ResolveClassNames(m, opts.data_root, samples);
  for (const auto& e : m.classes.exclude)
    if (m.classes.from != "folders" && m.classes.from != "labels" &&
        std::find(classes.begin(), classes.end(), e) == classes.end())
      throw Error(Msg(m.path, ": exclude_classes: '", e, "' is not a class"));
  ResolveLabels(samples, classes, m.classes.exclude);
  if (!m.classes.exclude.empty()) {  // drop excluded classes and re-index the labels
    std::vector<int64_t> remap(classes.size(), -1);
    std::vector<std::string> kept;
    for (size_t i = 0; i < classes.size(); ++i) {
      if (std::find(m.classes.exclude.begin(), m.classes.exclude.end(), classes[i]) !=
          m.classes.exclude.end())
        continue;
      remap[i] = static_cast<int64_t>(kept.size());
      kept.push_back(classes[i]);
    }
    for (auto& s : samples) s.label = remap[static_cast<size_t>(s.label)];
    classes.swap(kept);
  }
  {
    // Duplicates by the file they name, however spelled ("./a/x.png", "a/../a/x.png", a symlink):
    // one image listed twice would land in two splits and leak test images into training.
    std::unordered_map<std::string, std::string> first;
    std::map<std::pair<dev_t, ino_t>, std::string> by_inode;
    for (const auto& s : samples) {
      if (s.file.empty()) continue;
      std::error_code ec;
      std::string key = std::filesystem::weakly_canonical(s.file, ec).string();
      if (ec) key = std::filesystem::path(s.file).lexically_normal().string();
      auto [it, inserted] = first.emplace(key, s.origin);
      if (!inserted)
        throw Error(Msg(m.path, ": duplicate ", unit, " path ", s.file, " (listed at ", it->second,
                        " and ", s.origin, ", both ", key, ")"));
      // Two names of one file (hard links) are the same image too.
      struct stat st;
      if (stat(s.file.c_str(), &st) == 0 && st.st_nlink > 1) {
        auto [jt, fresh] = by_inode.emplace(std::make_pair(st.st_dev, st.st_ino), s.origin);
        if (!fresh)
          throw Error(Msg(m.path, ": duplicate image: ", s.origin, " is a hard link to ", jt->second,
                          " (one file, device ", st.st_dev, " inode ", st.st_ino, ")"));
      }
    }
  }
  const int num_classes = static_cast<int>(classes.size());
  // Classes must all be present: checked before the costly decoding, and again after skipping.
  auto check_classes = [&](const std::vector<int64_t>& labels) {
    std::vector<int64_t> per_class(static_cast<size_t>(num_classes), 0);
    for (auto l : labels) per_class[static_cast<size_t>(l)]++;
    for (int c = 0; c < num_classes; ++c)
      if (per_class[static_cast<size_t>(c)] == 0)
        throw Error(Msg(m.path, ": class '", classes[static_cast<size_t>(c)], "' (index ", c,
                        ") has no samples"));
  };
  {
    std::vector<int64_t> labels;
    for (const auto& s : samples) labels.push_back(s.label);
    check_classes(labels);
  }

  // 3. Decode in parallel blocks, writing the images (clips) that decode to the store.
  const int64_t n_all = static_cast<int64_t>(samples.size());
  h5::AtomicFile atomic(out_path);
  h5::File f = h5::File::Create(atomic);
  const ClipSampling sampling = opts.Sampling();
  const int T = video ? sampling.frames : 1;  // frames per sample
  const char* data_name = video ? "clips" : "images";
  int H = m.image.size, W = m.image.size, C = m.image.channels;
  bool created = false;
  int64_t written = 0, padded = 0;
  std::vector<int64_t> kept_labels;
  std::vector<std::string> kept_tags, kept_origins, bad, bad_why;
  std::vector<double> frame_rates;                            // clips: per kept video
  std::vector<int64_t> source_frames, frame_indices;          // clips: per kept video; T per video
  std::unordered_map<std::string, std::string> pixel_hashes;  // --check-pixel-duplicates
  std::vector<std::string> pixel_dups;
  std::vector<double> sums;  // per kept sample: C sums then C sums of squares (pixel/255)
  Progress progress("decoding " + m.name, n_all, video ? "videos" : "images");
  int64_t decoder_lines = 0;  // the decoders' own stderr lines, counted, not shown
  // --block bounds the frames in memory: a block of videos holds block / T clips.
  const int64_t block = video ? std::max<int64_t>(1, opts.block / T) : opts.block;
  for (int64_t b0 = 0; b0 < n_all; b0 += block) {
    int64_t bn = std::min(block, n_all - b0);
    std::vector<DecodedClip> clips(static_cast<size_t>(bn));  // an image is a clip of one frame
    {
      DecoderChatter chatter;
      ParallelFor(bn, threads, [&](int64_t k) {
        RawSample& s = samples[static_cast<size_t>(b0 + k)];
        DecodedClip& c = clips[static_cast<size_t>(k)];
        if (s.media == "video") {
          c = DecodeVideoClip(s.file, m.image, sampling);
        } else if (s.media == "frames") {
          c = DecodeFrameFolderClip(s.file, m.image, sampling, s.frame_rate);
        } else {
          cv::Mat img = s.file.empty() ? ConvertImage(s.pixels, m.image, /*is_bgr=*/false)
                                       : LoadAndConvert(s.file, m.image);
          if (img.empty())
            c.error = "cannot be decoded";
          else
            c.frames.push_back(img);
        }
        s.pixels.release();
        progress.Add();
      });
      chatter.Restore();
      decoder_lines += chatter.suppressed();
    }
    std::vector<uint8_t> block_pixels;  // the block's good samples, written with one call
    int64_t block_good = 0;
    for (int64_t k = 0; k < bn; ++k) {
      const RawSample& s = samples[static_cast<size_t>(b0 + k)];
      DecodedClip& clip = clips[static_cast<size_t>(k)];
      if (!clip.error.empty()) {
        bad.push_back(s.file);
        const std::string why = WhyUnreadable(s.file);  // the file system's reason comes first
        bad_why.push_back(!why.empty() || !video ? why : " (" + clip.error + ")");
        continue;
      }
      const cv::Mat& first = clip.frames[0];
      if (!created) {
        if (H == 0) {
          H = first.rows;
          W = first.cols;
        }
        h5::DatasetOptions o;
        o.gzip = opts.gzip;
        o.extendable = true;
        // Images: about 256 KiB a chunk. Clips: one clip a chunk, so a clip is one contiguous read.
        o.chunk_rows =
            video ? 1 : std::max<int64_t>(1, (256 << 10) / (static_cast<int64_t>(H) * W * C));
        h5::Shape shape = video ? h5::Shape{n_all, T, H, W, C} : h5::Shape{n_all, H, W, C};
        f.CreateDataset(data_name, h5::DType::kUInt8, shape, o);
        created = true;
      }
      if (first.rows != H || first.cols != W)
        throw Error(Msg(s.origin, ": ", video ? "frames are " : "image is ", first.cols, "x",
                        first.rows, " but earlier ones are ", W, "x", H, "; set image.size in ",
                        m.path, " to resize them all"));
      Sha256 h;
      double acc[6] = {0, 0, 0, 0, 0, 0};
      for (const cv::Mat& img : clip.frames) {
        block_pixels.insert(block_pixels.end(), img.data, img.data + img.total() * img.elemSize());
        if (opts.check_pixel_duplicates) h.Update(img.data, img.total() * img.elemSize());
        const uint8_t* p = img.data;
        const int64_t px = static_cast<int64_t>(H) * W;
        for (int64_t q = 0; q < px; ++q)
          for (int c = 0; c < C; ++c) {
            double v = p[q * C + c] / 255.0;
            acc[c] += v;
            acc[3 + c] += v * v;
          }
      }
      ++block_good;
      if (opts.check_pixel_duplicates) {
        auto [it, fresh] = pixel_hashes.emplace(h.HexDigest(), s.origin);
        if (!fresh) pixel_dups.push_back(Msg(s.origin, " = ", it->second));
      }
      for (int c = 0; c < C; ++c) sums.push_back(acc[c]);
      for (int c = 0; c < C; ++c) sums.push_back(acc[3 + c]);
      kept_labels.push_back(s.label);
      kept_tags.push_back(s.split);
      kept_origins.push_back(s.origin);
      if (video) {
        frame_rates.push_back(clip.frame_rate);
        source_frames.push_back(clip.num_source_frames);
        frame_indices.insert(frame_indices.end(), clip.indices.begin(), clip.indices.end());
        padded += clip.padded ? 1 : 0;
      }
    }
    if (block_good > 0) f.WriteRows(data_name, written, block_good, block_pixels.data());
    written += block_good;
  }
  progress.Finish();
  if (decoder_lines > 0)
    MVLOG(2) << m.name << ": " << decoder_lines << " diagnostic line(s) of the decoders not shown";

  if (!bad.empty()) {
    std::string list;
    for (size_t i = 0; i < bad.size() && i < 20; ++i) list += "\n  " + bad[i] + bad_why[i];
    if (!opts.skip_bad)
      throw Error(Msg(m.name, ": ", bad.size(), " ", unit,
                      "(s) could not be read (use --skip-bad to skip ", "them):", list,
                      bad.size() > 20 ? Msg("\n  ... and ", bad.size() - 20, " more") : ""));
    MLOG(WARNING) << m.name << ": skipped " << bad.size() << " unreadable " << unit
                  << "(s):" << list
                  << (bad.size() > 20 ? Msg("\n  ... and ", bad.size() - 20, " more") : "");
  }
  if (written == 0) throw Error(Msg(m.path, ": no readable ", unit, "s"));
  if (!pixel_dups.empty()) {
    std::string list;
    for (size_t i = 0; i < pixel_dups.size() && i < 20; ++i) list += "\n  " + pixel_dups[i];
    throw Error(Msg(
        m.path, ": ", pixel_dups.size(), " ", unit,
        "(s) have exactly the pixels of an earlier one "
        "(stored at the manifest's size; --check-pixel-duplicates):",
        list, pixel_dups.size() > 20 ? Msg("\n  ... and ", pixel_dups.size() - 20, " more") : ""));
  }
  if (padded > 0)
    MLOG(INFO) << m.name << ": " << padded << " short video(s) (fewer than "
               << sampling.FramesNeeded()
               << " frames) padded by repeating frames (--short-video pad)";
  f.Resize(data_name, written);

  // 4. Classes must all be present; splits.
  check_classes(kept_labels);
  SplitSpec split_spec = m.split;
  if (opts.max_train_per_class > 0) split_spec.max_train_per_class = opts.max_train_per_class;
  auto splits = AssignSplits(kept_labels, kept_tags, split_spec, num_classes, m.path);
  for (const auto& [name, idx] : splits) {
    bool wanted = name != "val" || (m.split.mode == "stratified" ? m.split.val > 0 : m.split.val_fraction > 0);
    if (idx.empty() && wanted)
      throw Error(Msg(m.path, ": split '", name, "' is empty (check the sources' split tags and the ",
                      "split fractions)"));
  }

  {  // a class too small to reach every split is worth a word: its val/test accuracy is undefined
    std::map<std::string, std::vector<int64_t>> per_split;  // split -> images per class
    for (const auto& [name, idx] : splits) {
      if (idx.empty()) continue;
      auto& cnt = per_split[name];
      cnt.assign(static_cast<size_t>(num_classes), 0);
      for (int64_t i : idx) cnt[static_cast<size_t>(kept_labels[static_cast<size_t>(i)])]++;
    }
    std::vector<int64_t> total(static_cast<size_t>(num_classes), 0);
    for (int64_t l : kept_labels) total[static_cast<size_t>(l)]++;
    std::vector<std::string> lines;
    for (int c = 0; c < num_classes; ++c) {
      std::vector<std::string> missing;
      for (const auto& [name, cnt] : per_split)
        if (cnt[static_cast<size_t>(c)] == 0) missing.push_back(name);
      if (!missing.empty())
        lines.push_back(Msg("'", classes[static_cast<size_t>(c)], "' (",
                            total[static_cast<size_t>(c)], " ", unit, "(s)) has none in ",
                            JoinNames(missing)));
    }
    if (!lines.empty()) {
      std::string list;
      for (size_t i = 0; i < lines.size() && i < 20; ++i) list += "\n  " + lines[i];
      MLOG(WARNING) << m.name << ": " << lines.size() << " class(es) are missing from a split:" << list
                    << (lines.size() > 20 ? Msg("\n  ... and ", lines.size() - 20, " more") : "");
    }
  }

  // 5. Normalisation: per channel over the train split.
  std::vector<double> mean = m.normalize.mean, stdv = m.normalize.std;
  if (m.normalize.compute) {
    std::vector<double> s(static_cast<size_t>(2 * C), 0.0);
    for (int64_t i : splits["train"])
      for (int k = 0; k < 2 * C; ++k) s[static_cast<size_t>(k)] += sums[static_cast<size_t>(i * 2 * C + k)];
    double n = static_cast<double>(splits["train"].size()) * T * H * W;
    mean.assign(static_cast<size_t>(C), 0.0);
    stdv.assign(static_cast<size_t>(C), 0.0);
    for (int c = 0; c < C; ++c) {
      mean[static_cast<size_t>(c)] = s[static_cast<size_t>(c)] / n;
      double var = s[static_cast<size_t>(C + c)] / n - mean[static_cast<size_t>(c)] * mean[static_cast<size_t>(c)];
      stdv[static_cast<size_t>(c)] = std::sqrt(std::max(var, 1e-12));
    }
  }

  // 6. Everything else, then the attributes, then commit.
  f.Write("labels", h5::DType::kInt64, {written}, kept_labels.data());
  f.WriteStrings("class_names", classes);
  f.WriteStrings("sources", kept_origins);
  f.WriteStrings("skipped", bad);
  for (const auto& [name, idx] : splits)
    f.Write("splits/" + name, h5::DType::kInt64, {static_cast<int64_t>(idx.size())}, idx.data());
  if (video) {
    f.Write("frame_rate", h5::DType::kFloat64, {written}, frame_rates.data());
    f.Write("num_source_frames", h5::DType::kInt64, {written}, source_frames.data());
    h5::DatasetOptions o;
    o.chunk_rows = std::max<int64_t>(1, 4096 / T);
    f.Write("frame_indices", h5::DType::kInt64, {written, T}, frame_indices.data(), o);
  }
  f.SetAttr("/", "format", video ? kClipStoreFormat : kImageStoreFormat);
  f.SetAttr("/", "format_version",
            static_cast<int64_t>(video ? kClipStoreVersion : kImageStoreVersion));
  f.SetAttr("/", "name", m.name);
  if (video) {
    f.SetAttr("/", "frames", static_cast<int64_t>(T));
    f.SetJsonAttr("/", "sampling", sampling.ToJson());
    f.SetAttr("/", "num_padded", padded);
    if (split_id > 0) f.SetAttr("/", "split_id", static_cast<int64_t>(split_id));
  }
  f.SetAttr("/", "height", static_cast<int64_t>(H));
  f.SetAttr("/", "width", static_cast<int64_t>(W));
  f.SetAttr("/", "channels", static_cast<int64_t>(C));
  f.SetAttr("/", "layout", video ? "NTHWC" : "NHWC");
  f.SetAttr("/", "color", C == 3 ? "RGB" : "gray");
  f.SetAttr("/", "resize", m.image.size > 0 ? m.image.resize : "none");
  f.SetAttr("/", "mean", mean);
  f.SetAttr("/", "std", stdv);
  f.SetAttr("/", "normalization", m.normalize.compute ? "computed on train" : "given in manifest");
  f.SetAttr("/", "num_classes", static_cast<int64_t>(num_classes));
  f.SetAttr("/", "num_skipped", static_cast<int64_t>(bad.size()));
  f.SetJsonAttr("/", "manifest", ReadJsonFile(manifest_path));
  WriteProvenance(f, provenance);
  f.Close();
  atomic.Commit();

  PrepareSummary sum;
  sum.num_samples = written;
  sum.num_skipped = static_cast<int64_t>(bad.size());
  sum.num_classes = num_classes;
  sum.height = H;
  sum.width = W;
  sum.channels = C;
  sum.frames = video ? T : 0;
  sum.num_padded = padded;
  for (const auto& [name, idx] : splits) sum.split_sizes[name] = static_cast<int64_t>(idx.size());
  sum.mean = mean;
  sum.std = stdv;
  return sum;
}

}  // namespace mlfd
