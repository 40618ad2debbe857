// The moving-sprites dataset (data/moving_sprites.h).
#include "data/moving_sprites.h"

#include <unistd.h>

#include <algorithm>
#include <cmath>
#include <filesystem>
#include <nlohmann/json.hpp>
#include <opencv2/imgcodecs.hpp>
#include <opencv2/imgproc.hpp>
#include <random>

#include "data/image_store.h"
#include "util/error.h"
#include "util/file_roles.h"
#include "util/fs.h"
#include "util/log.h"
#include "util/options.h"
#include "util/progress.h"

namespace mlfd {

namespace fs = std::filesystem;
namespace po = boost::program_options;

namespace {

constexpr double kPi = 3.14159265358979323846;
constexpr const char* kMarker = "moving_sprites.json";
const char* const kSplits[] = {"train", "val", "test"};

struct Translation {
  const char* name;
  double dx, dy;
};
const Translation kTranslations[] = {{"right", 1, 0},  {"left", -1, 0},        {"down", 0, 1},
                                     {"up", 0, -1},    {"down_right", 1, 1},   {"up_left", -1, -1}};

double Uniform(std::mt19937_64& rng, double lo, double hi) {
  return std::uniform_real_distribution<double>(lo, hi)(rng);
}

// 64-bit mix of a few numbers: independent streams per (seed, split, class, clip).
uint64_t Mix(uint64_t a, uint64_t b) {
  uint64_t z = a * 0x9E3779B97F4A7C15ULL + b + 0x632BE59BD9B4E019ULL;
  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ULL;
  z = (z ^ (z >> 27)) * 0x94D049BB133111EBULL;
  return z ^ (z >> 31);
}

}  // namespace

std::vector<std::string> MotionNames() {
  std::vector<std::string> names;
  for (const auto& t : kTranslations) names.emplace_back(t.name);
  for (const char* n : {"clockwise", "counterclockwise", "zoom_in", "zoom_out"}) names.emplace_back(n);
  return names;
}

void SpriteOptions::Register(po::options_description& d) {
  d.add_options()(
      "motions",
      po::value<std::string>()->default_value(JoinNames(motions))->notifier([this](const std::string& s) {
        motions = SplitCsv(s);
      }),
      ("the classes, comma-separated, in index order (valid: " + JoinNames(MotionNames()) + ")").c_str())(
      "frames", po::value(&frames)->default_value(frames), "frames per clip")(
      "canvas", po::value(&canvas)->default_value(canvas), "square canvas side in pixels")(
      "sprite-scale", po::value(&sprite_scale)->default_value(sprite_scale),
      "sprite size on the canvas relative to the stored image (zoom: its middle size)")(
      "clips-per-class",
      po::value<std::string>()->default_value("100,50,50")->notifier([this](const std::string& s) {
        auto v = SplitCsv(s);
        if (v.size() != 3) throw UsageError(Msg("--clips-per-class: '", s, "': give train,val,test counts"));
        for (size_t k = 0; k < 3; ++k) {
          try {
            size_t used = 0;
            per_class[kSplits[k]] = std::stoi(v[k], &used);
            if (used != v[k].size()) throw std::invalid_argument(v[k]);
          } catch (const std::exception&) {
            throw UsageError(Msg("--clips-per-class: '", v[k], "' is not a whole number"));
          }
        }
      }),
      "clips per class in train, val and test, comma-separated")(
      "seed", po::value(&seed)->default_value(seed), "seed of the sprites and their paths");
}

void SpriteOptions::Check() const {
  OptionChecker c;
  const auto valid = MotionNames();
  c.Require(!motions.empty(), "motions", "give at least one motion");
  for (const auto& m : motions)
    c.Require(std::find(valid.begin(), valid.end(), m) != valid.end(), "motions",
              Msg("unknown motion '", m, "' (valid: ", JoinNames(valid), ")"));
  for (size_t i = 0; i < motions.size(); ++i)
    for (size_t j = i + 1; j < motions.size(); ++j)
      c.Require(motions[i] != motions[j], "motions", Msg("'", motions[i], "' is given twice"));
  c.Require(frames >= 2 && frames <= 1024, "frames", "must be in 2..1024");
  c.Require(canvas >= 8 && canvas <= 4096, "canvas", "must be in 8..4096");
  c.Require(sprite_scale > 0 && sprite_scale <= 8 && std::isfinite(sprite_scale), "sprite-scale", "must be in (0, 8]");
  for (const auto& [split, n] : per_class) c.Require(n >= 0, "clips-per-class", "counts must be >= 0");
  c.Throw();
}

std::vector<cv::Mat> RenderClip(const cv::Mat& sprite, const std::string& motion, const SpriteOptions& o,
                                uint64_t rng_seed) {
  std::mt19937_64 rng(rng_seed);
  const double side = o.canvas, t_last = o.frames - 1;
  const double sw = sprite.cols * o.sprite_scale, sh = sprite.rows * o.sprite_scale;
  // Per frame: the sprite's centre and scale (relative to o.sprite_scale).
  std::vector<double> cx(o.frames), cy(o.frames), sc(o.frames, 1.0);
  auto centre_range = [&](double half, double reach) {  // where a centre may be so the sprite stays in
    double lo = half + reach, hi = side - half - reach;
    return lo <= hi ? std::pair{lo, hi} : std::pair{side / 2, side / 2};
  };
  const Translation* tr = nullptr;
  for (const auto& t : kTranslations)
    if (motion == t.name) tr = &t;
  if (tr) {
    const double norm = std::hypot(tr->dx, tr->dy), ux = tr->dx / norm, uy = tr->dy / norm;
    // Travel: 35-60 % of the free room along the direction, at least one pixel a frame.
    const double room_x = side - sw, room_y = side - sh;
    const double room = std::min(ux != 0 ? room_x / std::abs(ux) : 1e9, uy != 0 ? room_y / std::abs(uy) : 1e9);
    const double travel = std::max(Uniform(rng, 0.35, 0.6) * std::max(room, 0.0), std::min(t_last, std::max(room, 0.0)));
    const double tx = ux * travel, ty = uy * travel;
    auto start = [&](double half, double d) {
      double lo = half - std::min(0.0, d), hi = side - half - std::max(0.0, d);
      return lo <= hi ? Uniform(rng, lo, hi) : side / 2 - d / 2;
    };
    const double x0 = start(sw / 2, tx), y0 = start(sh / 2, ty);
    for (int t = 0; t < o.frames; ++t) cx[t] = x0 + tx * t / t_last, cy[t] = y0 + ty * t / t_last;
  } else if (motion == "clockwise" || motion == "counterclockwise") {
    const double half = std::max(sw, sh) / 2;
    const double r = Uniform(rng, 0.15, 0.25) * side;
    auto [lo, hi] = centre_range(half, r);
    const double ox = Uniform(rng, lo, hi), oy = Uniform(rng, lo, hi);
    const double theta0 = Uniform(rng, 0, 2 * kPi);
    // 60-90 % of a turn over the clip; screen y points down, so increasing theta is clockwise.
    const double sweep = Uniform(rng, 0.6, 0.9) * 2 * kPi * (motion == "clockwise" ? 1 : -1);
    for (int t = 0; t < o.frames; ++t) {
      const double a = theta0 + sweep * t / t_last;
      cx[t] = ox + r * std::cos(a), cy[t] = oy + r * std::sin(a);
    }
  } else if (motion == "zoom_in" || motion == "zoom_out") {
    const double small = Uniform(rng, 0.5, 0.7), large = Uniform(rng, 1.3, 1.6);
    auto [lo, hi] = centre_range(std::max(sw, sh) * large / 2, 0);
    const double ox = Uniform(rng, lo, hi), oy = Uniform(rng, lo, hi);
    for (int t = 0; t < o.frames; ++t) {
      const double f = t / t_last;
      cx[t] = ox, cy[t] = oy;
      sc[t] = motion == "zoom_in" ? small + (large - small) * f : large - (large - small) * f;
    }
  } else {
    throw Error(Msg("moving sprites: unknown motion '", motion, "' (valid: ", JoinNames(MotionNames()), ")"));
  }
  std::vector<cv::Mat> clip;
  clip.reserve(static_cast<size_t>(o.frames));
  for (int t = 0; t < o.frames; ++t) {
    const double s = o.sprite_scale * sc[t];
    // Maps the sprite's pixel centres onto the canvas: its middle, (cols - 1) / 2 and (rows - 1) / 2
    // in pixel-centre coordinates, lands on (cx, cy) at every scale.
    cv::Mat m = (cv::Mat_<double>(2, 3) << s, 0, cx[t] - s * (sprite.cols - 1) / 2.0, 0, s,
                 cy[t] - s * (sprite.rows - 1) / 2.0);
    cv::Mat frame;
    cv::warpAffine(sprite, frame, m, cv::Size(o.canvas, o.canvas), cv::INTER_LINEAR, cv::BORDER_CONSTANT,
                   cv::Scalar::all(0));
    clip.push_back(frame);
  }
  return clip;
}

SpriteSummary MakeMovingSprites(const std::string& store_path, const std::string& out, const SpriteOptions& opts,
                                const std::string& provenance_json) {
  opts.Check();
  DeclareInput("the store", store_path);
  DeclareOutput("the output folder", out);
  if (PathExists(out) && !PathExists(out + "/" + kMarker))
    throw Error(Msg(out, " exists and is not a moving-sprites dataset (no ", kMarker,
                    "); give a new folder, it is never replaced"));
  CheckOutputDirectory(out);
  ImageStore store = ImageStore::Open(store_path);
  const int h = store.height(), w = store.width(), c = store.channels();
  if (c != 1 && c != 3) throw Error(Msg(store_path, ": ", c, "-channel images; moving sprites takes gray or RGB"));

  RemoveOrphanTemps(out);
  const std::string tmp = HiddenSibling(out, Msg(".tmp-", ::getpid()));
  fs::remove_all(tmp);
  struct TmpGuard {  // removes the half-written folder on any failure
    std::string path;
    bool keep = false;
    ~TmpGuard() {
      std::error_code ec;
      if (!keep) fs::remove_all(path, ec);
    }
  } guard{tmp};

  SpriteSummary summary;
  int64_t total = 0;
  for (const char* split : kSplits) total += static_cast<int64_t>(opts.per_class.at(split)) * opts.motions.size();
  Progress progress("rendering clips", total, "clips");
  std::vector<uint8_t> pixels(static_cast<size_t>(h) * w * c);
  const auto names = store.split_names();
  for (size_t si = 0; si < 3; ++si) {
    const std::string split = kSplits[si];
    std::string from = split;
    if (std::find(names.begin(), names.end(), from) == names.end()) {
      if (split == "val") from = "train";
      else throw Error(Msg(store_path, " has no '", split, "' split (it has: ", JoinNames(names), ")"));
    }
    const std::vector<int64_t>& rows = store.split(from);
    if (rows.empty() && opts.per_class.at(split) > 0) throw Error(Msg(store_path, ": its '", from, "' split is empty"));
    for (size_t k = 0; k < opts.motions.size(); ++k) {
      const std::string& motion = opts.motions[k];
      for (int i = 0; i < opts.per_class.at(split); ++i) {
        const uint64_t clip_seed = Mix(Mix(Mix(opts.seed, si), k), static_cast<uint64_t>(i));
        std::mt19937_64 pick(clip_seed);
        const int64_t row = rows[std::uniform_int_distribution<size_t>(0, rows.size() - 1)(pick)];
        store.ReadIndices({row}, pixels.data());
        cv::Mat sprite(h, w, CV_8UC(c), pixels.data());
        if (c == 3) cv::cvtColor(sprite, sprite, cv::COLOR_RGB2BGR);  // imwrite takes BGR
        std::vector<cv::Mat> clip = RenderClip(sprite, motion, opts, Mix(clip_seed, 1));
        const std::string dir = Msg(tmp, "/", split, "/", motion, "/", motion, "_", split, "_", i);
        fs::create_directories(dir);
        for (size_t t = 0; t < clip.size(); ++t) {
          char name[32];
          std::snprintf(name, sizeof(name), "/%04zu.png", t);
          if (!cv::imwrite(dir + name, clip[t]))
            throw Error(Msg(dir, name, ": could not be written (disk full or not writable?)"));
        }
        summary.frames += static_cast<int64_t>(clip.size());
        ++summary.clips;
        ++summary.per_split[split];
        progress.Add();
      }
    }
  }
  progress.Finish();
  nlohmann::json marker = {{"format", "mlfd.moving_sprites"},
                           {"store", store_path},
                           {"store_sha256", store.Fingerprint()},
                           {"motions", opts.motions},
                           {"frames", opts.frames},
                           {"canvas", opts.canvas},
                           {"sprite_scale", opts.sprite_scale},
                           {"clips_per_class", opts.per_class},
                           {"seed", opts.seed},
                           {"layout", "<split>/<motion>/<video>/<frame>.png"},
                           {"provenance", nlohmann::json::parse(provenance_json)}};
  WriteTextAtomic(tmp + "/" + kMarker, marker.dump(2) + "\n");
  // Into place: a previous dataset of ours is moved aside first and removed after the rename.
  std::string old;
  if (PathExists(out)) {
    old = HiddenSibling(out, Msg(".old-", ::getpid()));
    fs::remove_all(old);
    RenameFile(out, old);
  }
  RenameFile(tmp, out);
  guard.keep = true;
  if (!old.empty()) fs::remove_all(old);
  return summary;
}

}  // namespace mlfd
