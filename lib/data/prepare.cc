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
#include <iostream>
#include <filesystem>
#include <map>
#include <opencv2/imgcodecs.hpp>
#include <opencv2/imgproc.hpp>
#include <random>
#include <set>
#include <unordered_map>

#include "data/image_store.h"
#include "data/source_readers.h"
#include "io/h5.h"
#include "util/file_roles.h"
#include "util/options.h"
#include "util/error.h"
#include "util/json_view.h"
#include "util/log.h"
#include "util/parallel.h"
#include "util/progress.h"
#include "util/provenance.h"
#include "util/sha256.h"

namespace mlfd {

namespace po = boost::program_options;

void PrepareOptions::Register(po::options_description& d, const std::string& prefix) {
  d.add_options()((prefix + "data-root").c_str(), po::value<std::string>(&data_root)->default_value(data_root),
                  "directory that relative paths in the manifest resolve against")(
      (prefix + "skip-bad").c_str(), po::value<bool>(&skip_bad)->default_value(skip_bad)->implicit_value(true),
      "skip unreadable images (counted and listed in the store) instead of failing")(
      (prefix + "gzip").c_str(), po::value<int>(&gzip)->default_value(gzip),
      "gzip level for the stored images (0 = none, 1..9)")(
      (prefix + "block").c_str(), po::value<int64_t>(&block)->default_value(block),
      "images decoded per parallel block (bounds memory)")(
      (prefix + "max-train-per-class").c_str(), po::value<int64_t>(&max_train_per_class)->default_value(max_train_per_class),
      "keep at most this many training images per class, a seeded subset (0 = the manifest's setting); "
      "validation and test splits are unchanged")(
      (prefix + "check-pixel-duplicates").c_str(),
      po::value<bool>(&check_pixel_duplicates)->default_value(check_pixel_duplicates)->implicit_value(true),
      "also refuse images whose stored pixels equal an earlier image's (listed with both origins)");
}

void PrepareOptions::Check(const std::string& prefix) const {
  OptionChecker c(prefix);
  c.Require(gzip >= 0 && gzip <= 9, "gzip", "must be in 0..9");
  c.Require(block >= 1, "block", "must be >= 1");
  c.Require(max_train_per_class >= 0, "max-train-per-class", "must be >= 0 (0 = the manifest's setting)");
  c.Throw();
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
        if (l.rfind("libpng ", 0) == 0 || l.rfind("Corrupt JPEG data", 0) == 0 ||
            l.rfind("Premature end of JPEG file", 0) == 0 || l.rfind("libtiff", 0) == 0)
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
  DeclareInput("manifest", manifest_path);
  h5::CheckOutputPath(out_path, kImageStoreFormat);
  Manifest m = LoadManifest(manifest_path);
  provenance.AddInput("manifest", manifest_path);

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
        throw Error(Msg(m.path, ": duplicate image path ", s.file, " (listed at ", it->second, " and ",
                        s.origin, ", both ", key, ")"));
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

  // 3. Decode in parallel blocks, writing the images that decode to the store.
  const int64_t n_all = static_cast<int64_t>(samples.size());
  h5::AtomicFile atomic(out_path);
  h5::File f = h5::File::Create(atomic);
  int H = m.image.size, W = m.image.size, C = m.image.channels;
  bool created = false;
  int64_t written = 0;
  std::vector<int64_t> kept_labels;
  std::vector<std::string> kept_tags, kept_origins, bad;
  std::unordered_map<std::string, std::string> pixel_hashes;  // --check-pixel-duplicates
  std::vector<std::string> pixel_dups;
  std::vector<double> sums;  // per kept sample: C sums then C sums of squares (pixel/255)
  Progress progress("decoding " + m.name, n_all, "images");
  int64_t decoder_lines = 0;  // the image decoders' own stderr lines, counted, not shown
  for (int64_t b0 = 0; b0 < n_all; b0 += opts.block) {
    int64_t bn = std::min(opts.block, n_all - b0);
    std::vector<cv::Mat> imgs(static_cast<size_t>(bn));
    {
      DecoderChatter chatter;
      ParallelFor(bn, threads, [&](int64_t k) {
        RawSample& s = samples[static_cast<size_t>(b0 + k)];
        imgs[static_cast<size_t>(k)] = s.file.empty() ? ConvertImage(s.pixels, m.image, /*is_bgr=*/false)
                                                      : LoadAndConvert(s.file, m.image);
        s.pixels.release();
        progress.Add();
      });
      chatter.Restore();
      decoder_lines += chatter.suppressed();
    }
    std::vector<uint8_t> block_pixels;  // the block's good images, written with one call
    int64_t block_good = 0;
    for (int64_t k = 0; k < bn; ++k) {
      const RawSample& s = samples[static_cast<size_t>(b0 + k)];
      cv::Mat& img = imgs[static_cast<size_t>(k)];
      if (img.empty()) {
        bad.push_back(s.file);
        continue;
      }
      if (!created) {
        if (H == 0) {
          H = img.rows;
          W = img.cols;
        }
        h5::DatasetOptions o;
        o.gzip = opts.gzip;
        o.extendable = true;
        o.chunk_rows = std::max<int64_t>(1, (256 << 10) / (static_cast<int64_t>(H) * W * C));
        f.CreateDataset("images", h5::DType::kUInt8, {n_all, H, W, C}, o);
        created = true;
      }
      if (img.rows != H || img.cols != W)
        throw Error(Msg(s.origin, ": image is ", img.cols, "x", img.rows, " but earlier ones are ", W,
                        "x", H, "; set image.size in ", m.path, " to resize them all"));
      block_pixels.insert(block_pixels.end(), img.data, img.data + img.total() * img.elemSize());
      ++block_good;
      if (opts.check_pixel_duplicates) {
        Sha256 h;
        h.Update(img.data, img.total() * img.elemSize());
        auto [it, fresh] = pixel_hashes.emplace(h.HexDigest(), s.origin);
        if (!fresh) pixel_dups.push_back(Msg(s.origin, " = ", it->second));
      }
      double acc[6] = {0, 0, 0, 0, 0, 0};
      const uint8_t* p = img.data;
      const int64_t px = static_cast<int64_t>(H) * W;
      for (int64_t q = 0; q < px; ++q)
        for (int c = 0; c < C; ++c) {
          double v = p[q * C + c] / 255.0;
          acc[c] += v;
          acc[3 + c] += v * v;
        }
      for (int c = 0; c < C; ++c) sums.push_back(acc[c]);
      for (int c = 0; c < C; ++c) sums.push_back(acc[3 + c]);
      kept_labels.push_back(s.label);
      kept_tags.push_back(s.split);
      kept_origins.push_back(s.origin);
    }
    if (block_good > 0) f.WriteRows("images", written, block_good, block_pixels.data());
    written += block_good;
  }
  progress.Finish();
  if (decoder_lines > 0)
    MVLOG(2) << m.name << ": " << decoder_lines << " diagnostic line(s) of the image decoders not shown";

  if (!bad.empty()) {
    std::string list;
    for (size_t i = 0; i < bad.size() && i < 20; ++i) list += "\n  " + bad[i] + WhyUnreadable(bad[i]);
    if (!opts.skip_bad)
      throw Error(Msg(m.name, ": ", bad.size(), " image(s) could not be read (use --skip-bad to skip ",
                      "them):", list, bad.size() > 20 ? Msg("\n  ... and ", bad.size() - 20, " more") : ""));
    MLOG(WARNING) << m.name << ": skipped " << bad.size() << " unreadable image(s):" << list;
  }
  if (written == 0) throw Error(Msg(m.path, ": no readable images"));
  if (!pixel_dups.empty()) {
    std::string list;
    for (size_t i = 0; i < pixel_dups.size() && i < 20; ++i) list += "\n  " + pixel_dups[i];
    throw Error(Msg(m.path, ": ", pixel_dups.size(), " image(s) have exactly the pixels of an earlier one "
                    "(stored at the manifest's size; --check-pixel-duplicates):", list,
                    pixel_dups.size() > 20 ? Msg("\n  ... and ", pixel_dups.size() - 20, " more") : ""));
  }
  f.Resize("images", written);

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
        lines.push_back(Msg("'", classes[static_cast<size_t>(c)], "' (", total[static_cast<size_t>(c)],
                            " image(s)) has none in ", JoinNames(missing)));
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
    double n = static_cast<double>(splits["train"].size()) * H * W;
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
  f.SetAttr("/", "format", kImageStoreFormat);
  f.SetAttr("/", "format_version", static_cast<int64_t>(kImageStoreVersion));
  f.SetAttr("/", "name", m.name);
  f.SetAttr("/", "height", static_cast<int64_t>(H));
  f.SetAttr("/", "width", static_cast<int64_t>(W));
  f.SetAttr("/", "channels", static_cast<int64_t>(C));
  f.SetAttr("/", "layout", "NHWC");
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
  for (const auto& [name, idx] : splits) sum.split_sizes[name] = static_cast<int64_t>(idx.size());
  sum.mean = mean;
  sum.std = stdv;
  return sum;
}

}  // namespace mlfd
