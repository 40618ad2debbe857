// Augmentation implementation (torchvision semantics, see augment.h).
#include "data/augment.h"

#include <algorithm>
#include <cmath>
#include <opencv2/imgproc.hpp>

#include "util/error.h"

namespace mlfd {
namespace aug {
namespace {

// ratio * a + (1 - ratio) * b, clamped and truncated to uint8 (torchvision's _blend).
cv::Mat Blend(const cv::Mat& a, const cv::Mat& b, double ratio) {
  cv::Mat fa, fb, out;
  a.convertTo(fa, CV_32F);
  b.convertTo(fb, CV_32F);
  cv::Mat mix = fa * ratio + fb * (1.0 - ratio);
  cv::Mat clamped = cv::min(cv::max(mix, 0.0), 255.0);
  clamped.convertTo(out, CV_8U, 1.0, -0.4999);  // truncation, as torch's float -> uint8
  return out;
}

// Grayscale as in torchvision (0.2989 R + 0.587 G + 0.114 B, truncated), same channel count.
cv::Mat Gray(const cv::Mat& img) {
  if (img.channels() == 1) return img.clone();
  cv::Mat f;
  img.convertTo(f, CV_32F);
  std::vector<cv::Mat> ch;
  cv::split(f, ch);
  cv::Mat g = ch[0] * 0.2989 + ch[1] * 0.587 + ch[2] * 0.114, g8;
  g.convertTo(g8, CV_8U, 1.0, -0.4999);
  cv::Mat out;
  cv::merge(std::vector<cv::Mat>{g8, g8, g8}, out);
  return out;
}

cv::Mat Warp(const cv::Mat& img, const cv::Mat& m) {
  cv::Mat out;
  cv::warpAffine(img, out, m, img.size(), cv::INTER_NEAREST, cv::BORDER_CONSTANT, cv::Scalar::all(0));
  if (out.channels() != img.channels()) out = out.reshape(img.channels());
  return out;
}

}  // namespace

cv::Mat ShearX(const cv::Mat& img, double s) { return Warp(img, (cv::Mat_<double>(2, 3) << 1, s, 0, 0, 1, 0)); }
cv::Mat ShearY(const cv::Mat& img, double s) { return Warp(img, (cv::Mat_<double>(2, 3) << 1, 0, 0, s, 1, 0)); }
cv::Mat TranslateX(const cv::Mat& img, int px) { return Warp(img, (cv::Mat_<double>(2, 3) << 1, 0, px, 0, 1, 0)); }
cv::Mat TranslateY(const cv::Mat& img, int px) { return Warp(img, (cv::Mat_<double>(2, 3) << 1, 0, 0, 0, 1, px)); }

cv::Mat Rotate(const cv::Mat& img, double degrees) {
  cv::Point2f c((img.cols - 1) / 2.0f, (img.rows - 1) / 2.0f);
  return Warp(img, cv::getRotationMatrix2D(c, degrees, 1.0));
}

cv::Mat Brightness(const cv::Mat& img, double f) { return Blend(img, cv::Mat::zeros(img.size(), img.type()), f); }
cv::Mat Color(const cv::Mat& img, double f) { return img.channels() == 1 ? img.clone() : Blend(img, Gray(img), f); }

cv::Mat Contrast(const cv::Mat& img, double f) {
  cv::Mat g = Gray(img);
  double mean = cv::mean(g)[0];
  return Blend(img, cv::Mat(img.size(), img.type(), cv::Scalar::all(mean)), f);
}

cv::Mat Sharpness(const cv::Mat& img, double f) {
  if (img.rows <= 2 || img.cols <= 2) return img.clone();
  cv::Mat kernel = (cv::Mat_<float>(3, 3) << 1, 1, 1, 1, 5, 1, 1, 1, 1) / 13.0f;
  cv::Mat fimg, blurred;
  img.convertTo(fimg, CV_32F);
  cv::filter2D(fimg, blurred, CV_32F, kernel, cv::Point(-1, -1), 0, cv::BORDER_REPLICATE);
  cv::Mat degenerate;
  blurred.convertTo(degenerate, CV_8U);  // rounds, as torchvision's .round() before the cast
  img.row(0).copyTo(degenerate.row(0));  // the border keeps the original pixels
  img.row(img.rows - 1).copyTo(degenerate.row(img.rows - 1));
  img.col(0).copyTo(degenerate.col(0));
  img.col(img.cols - 1).copyTo(degenerate.col(img.cols - 1));
  return Blend(img, degenerate, f);
}

cv::Mat Posterize(const cv::Mat& img, int bits) {
  uint8_t mask = static_cast<uint8_t>(~((1 << (8 - bits)) - 1));
  cv::Mat out;
  cv::bitwise_and(img, cv::Scalar::all(mask), out);
  return out;
}

cv::Mat Solarize(const cv::Mat& img, double threshold) {
  cv::Mat out = img.clone();
  for (size_t i = 0; i < out.total() * out.channels(); ++i)
    if (out.data[i] >= threshold) out.data[i] = static_cast<uint8_t>(255 - out.data[i]);
  return out;
}

cv::Mat AutoContrast(const cv::Mat& img) {
  std::vector<cv::Mat> ch;
  cv::split(img, ch);
  for (auto& c : ch) {
    double lo, hi;
    cv::minMaxLoc(c, &lo, &hi);
    if (hi > lo) {
      cv::Mat f;
      c.convertTo(f, CV_32F, 255.0 / (hi - lo), -lo * 255.0 / (hi - lo));
      f = cv::min(cv::max(f, 0.0), 255.0);
      f.convertTo(c, CV_8U, 1.0, -0.4999);
    }
  }
  cv::Mat out;
  cv::merge(ch, out);
  return out;
}

cv::Mat Equalize(const cv::Mat& img) {  // torchvision's _scale_channel lookup table
  std::vector<cv::Mat> ch;
  cv::split(img, ch);
  for (auto& c : ch) {
    int64_t hist[256] = {0};
    for (size_t i = 0; i < c.total(); ++i) hist[c.data[i]]++;
    int last = 255;
    while (last > 0 && hist[last] == 0) --last;
    int64_t total = 0;
    for (auto h : hist) total += h;
    int64_t step = (total - hist[last]) / 255;
    if (step == 0) continue;
    uint8_t lut[256];
    int64_t cum = 0;
    lut[0] = 0;
    for (int v = 0; v < 255; ++v) {  // lut[v + 1] = (cumsum[v] + step // 2) // step
      cum += hist[v];
      lut[v + 1] = static_cast<uint8_t>(std::min<int64_t>(255, (cum + step / 2) / step));
    }
    for (size_t i = 0; i < c.total(); ++i) c.data[i] = lut[c.data[i]];
  }
  cv::Mat out;
  cv::merge(ch, out);
  return out;
}

cv::Mat Invert(const cv::Mat& img) {
  cv::Mat out;
  cv::bitwise_not(img, out);
  return out;
}

}  // namespace aug

namespace {

enum class Op { kShearX, kShearY, kTranslateX, kTranslateY, kRotate, kBrightness, kColor, kContrast,
                kSharpness, kPosterize, kSolarize, kAutoContrast, kEqualize, kInvert };
struct SubOp {
  Op op;
  double p;
  int bin;  // magnitude bin 0..9 (-1: none)
};
// torchvision.transforms.AutoAugmentPolicy.IMAGENET
const SubOp kPolicy[25][2] = {
    {{Op::kPosterize, 0.4, 8}, {Op::kRotate, 0.6, 9}},     {{Op::kSolarize, 0.6, 5}, {Op::kAutoContrast, 0.6, -1}},
    {{Op::kEqualize, 0.8, -1}, {Op::kEqualize, 0.6, -1}},  {{Op::kPosterize, 0.6, 7}, {Op::kPosterize, 0.6, 6}},
    {{Op::kEqualize, 0.4, -1}, {Op::kSolarize, 0.2, 4}},   {{Op::kEqualize, 0.4, -1}, {Op::kRotate, 0.8, 8}},
    {{Op::kSolarize, 0.6, 3}, {Op::kEqualize, 0.6, -1}},   {{Op::kPosterize, 0.8, 5}, {Op::kEqualize, 1.0, -1}},
    {{Op::kRotate, 0.2, 3}, {Op::kSolarize, 0.6, 8}},      {{Op::kEqualize, 0.6, -1}, {Op::kPosterize, 0.4, 6}},
    {{Op::kRotate, 0.8, 8}, {Op::kColor, 0.4, 0}},         {{Op::kRotate, 0.4, 9}, {Op::kEqualize, 0.6, -1}},
    {{Op::kEqualize, 0.0, -1}, {Op::kEqualize, 0.8, -1}},  {{Op::kInvert, 0.6, -1}, {Op::kEqualize, 1.0, -1}},
    {{Op::kColor, 0.6, 4}, {Op::kContrast, 1.0, 8}},       {{Op::kRotate, 0.8, 8}, {Op::kColor, 1.0, 2}},
    {{Op::kColor, 0.8, 8}, {Op::kSolarize, 0.8, 7}},       {{Op::kSharpness, 0.4, 7}, {Op::kInvert, 0.6, -1}},
    {{Op::kShearX, 0.6, 5}, {Op::kEqualize, 1.0, -1}},     {{Op::kColor, 0.4, 0}, {Op::kEqualize, 0.6, -1}},
    {{Op::kEqualize, 0.4, -1}, {Op::kSolarize, 0.2, 4}},   {{Op::kSolarize, 0.6, 5}, {Op::kAutoContrast, 0.6, -1}},
    {{Op::kInvert, 0.6, -1}, {Op::kEqualize, 1.0, -1}},    {{Op::kColor, 0.6, 4}, {Op::kContrast, 1.0, 8}},
    {{Op::kEqualize, 0.8, -1}, {Op::kEqualize, 0.6, -1}}};

double Uniform(std::mt19937_64& rng) { return std::uniform_real_distribution<double>(0.0, 1.0)(rng); }
int RandInt(std::mt19937_64& rng, int n) { return static_cast<int>(rng() % static_cast<uint64_t>(n)); }

cv::Mat Apply(const cv::Mat& img, Op op, int bin, bool negate) {
  const double s = negate ? -1.0 : 1.0;
  const double t = bin / 9.0;  // position in linspace(0, max, 10)
  switch (op) {
    case Op::kShearX: return aug::ShearX(img, s * 0.3 * t);
    case Op::kShearY: return aug::ShearY(img, s * 0.3 * t);
    case Op::kTranslateX: return aug::TranslateX(img, static_cast<int>(s * 150.0 / 331.0 * img.cols * t));
    case Op::kTranslateY: return aug::TranslateY(img, static_cast<int>(s * 150.0 / 331.0 * img.rows * t));
    case Op::kRotate: return aug::Rotate(img, s * 30.0 * t);
    case Op::kBrightness: return aug::Brightness(img, 1.0 + s * 0.9 * t);
    case Op::kColor: return aug::Color(img, 1.0 + s * 0.9 * t);
    case Op::kContrast: return aug::Contrast(img, 1.0 + s * 0.9 * t);
    case Op::kSharpness: return aug::Sharpness(img, 1.0 + s * 0.9 * t);
    case Op::kPosterize: return aug::Posterize(img, 8 - static_cast<int>(std::round(bin / (9.0 / 4.0))));
    case Op::kSolarize: return aug::Solarize(img, 255.0 * (1.0 - t));
    case Op::kAutoContrast: return aug::AutoContrast(img);
    case Op::kEqualize: return aug::Equalize(img);
    case Op::kInvert: return aug::Invert(img);
  }
  return img;
}

bool Signed(Op op) {
  return op == Op::kShearX || op == Op::kShearY || op == Op::kTranslateX || op == Op::kTranslateY ||
         op == Op::kRotate || op == Op::kBrightness || op == Op::kColor || op == Op::kContrast ||
         op == Op::kSharpness;
}

cv::Mat Resize(const cv::Mat& img, int size) {
  if (size <= 0 || (img.rows == size && img.cols == size)) return img;
  cv::Mat out;
  cv::resize(img, out, cv::Size(size, size), 0, 0, cv::INTER_LINEAR);
  if (out.channels() != img.channels()) out = out.reshape(img.channels());
  return out;
}

// torchvision RandomResizedCrop.get_params, then a bilinear resize.
cv::Mat RandomResizedCrop(const cv::Mat& img, const AugmentConfig& c, std::mt19937_64& rng) {
  const int H = img.rows, W = img.cols, size = c.out_size > 0 ? c.out_size : std::min(H, W);
  const double area = static_cast<double>(H) * W;
  for (int attempt = 0; attempt < 10; ++attempt) {
    double target = area * (c.rrc_scale_min + (c.rrc_scale_max - c.rrc_scale_min) * Uniform(rng));
    double lr0 = std::log(c.rrc_ratio_min), lr1 = std::log(c.rrc_ratio_max);
    double aspect = std::exp(lr0 + (lr1 - lr0) * Uniform(rng));
    int w = static_cast<int>(std::lround(std::sqrt(target * aspect)));
    int h = static_cast<int>(std::lround(std::sqrt(target / aspect)));
    if (w > 0 && w <= W && h > 0 && h <= H) {
      int i = RandInt(rng, H - h + 1), j = RandInt(rng, W - w + 1);
      return Resize(img(cv::Rect(j, i, w, h)).clone(), size);
    }
  }
  double ratio = static_cast<double>(W) / H;  // fallback: central crop
  int w = W, h = H;
  if (ratio < c.rrc_ratio_min) h = static_cast<int>(std::lround(w / c.rrc_ratio_min));
  else if (ratio > c.rrc_ratio_max) w = static_cast<int>(std::lround(h * c.rrc_ratio_max));
  return Resize(img(cv::Rect((W - w) / 2, (H - h) / 2, w, h)).clone(), size);
}

}  // namespace

cv::Mat AutoAugmentImageNet(const cv::Mat& img, std::mt19937_64& rng) {
  const SubOp* sub = kPolicy[RandInt(rng, 25)];
  cv::Mat out = img;
  for (int k = 0; k < 2; ++k) {
    double draw = Uniform(rng);
    bool negate = RandInt(rng, 2) == 0;
    if (draw <= sub[k].p) out = Apply(out, sub[k].op, sub[k].bin, Signed(sub[k].op) && negate);
  }
  return out;
}

std::pair<int, int> EvalCropOrigin(int w, int h, int side, int crops, int crop) {
  if (side > w || side > h || crop < 0 || crop >= crops || !(crops == 1 || crops == 3 || crops == 5))
    throw Error(Msg("evaluation crop ", crop, " of ", crops, " of side ", side, " in a ", w, " x ", h, " frame"));
  const int dx = w - side, dy = h - side;
  if (crops == 1) return {dx / 2, dy / 2};
  if (crops == 3) {  // start, centre, end of the longer side (of both for a square frame)
    const int k = crop;
    if (dx > dy) return {dx * k / 2, dy / 2};
    if (dy > dx) return {dx / 2, dy * k / 2};
    return {dx * k / 2, dy * k / 2};
  }
  const std::pair<int, int> five[5] = {{dx / 2, dy / 2}, {0, 0}, {dx, 0}, {0, dy}, {dx, dy}};  // centre, corners
  return five[crop];
}

cv::Mat EvalTransform(const cv::Mat& img, const AugmentConfig& cfg) {
  if (cfg.eval_crops <= 1) {
    cv::Mat out = Resize(img, cfg.out_size);
    return out.data == img.data ? img.clone() : out;
  }
  const int side = cfg.out_size > 0 ? cfg.out_size : std::min(img.cols, img.rows);
  const int shorter = static_cast<int>(std::lround(side * 8.0 / 7.0));
  const double scale = static_cast<double>(shorter) / std::min(img.cols, img.rows);
  const int w = std::max(shorter, static_cast<int>(std::lround(img.cols * scale)));
  const int h = std::max(shorter, static_cast<int>(std::lround(img.rows * scale)));
  cv::Mat big;
  cv::resize(img, big, cv::Size(w, h), 0, 0, cv::INTER_LINEAR);
  if (big.channels() != img.channels()) big = big.reshape(img.channels());
  const auto [x, y] = EvalCropOrigin(w, h, side, cfg.eval_crops, cfg.eval_crop);
  return big(cv::Rect(x, y, side, side)).clone();
}

cv::Mat Augment(const cv::Mat& img, const AugmentConfig& cfg, std::mt19937_64& rng) {
  cv::Mat x = cfg.random_resized_crop ? RandomResizedCrop(img, cfg, rng) : Resize(img, cfg.out_size);
  if (cfg.pad > 0) {
    cv::Mat padded;
    cv::copyMakeBorder(x, padded, cfg.pad, cfg.pad, cfg.pad, cfg.pad, cv::BORDER_CONSTANT, cv::Scalar::all(0));
    int i = RandInt(rng, 2 * cfg.pad + 1), j = RandInt(rng, 2 * cfg.pad + 1);
    x = padded(cv::Rect(j, i, x.cols, x.rows)).clone();
  }
  if (cfg.hflip && Uniform(rng) < 0.5) {
    cv::Mat f;
    cv::flip(x, f, 1);
    x = f;
  }
  if (cfg.autoaugment) x = AutoAugmentImageNet(x, rng);
  if (x.data == img.data) x = img.clone();
  if (!x.isContinuous()) x = x.clone();
  return x;
}

std::vector<cv::Mat> AugmentClip(const std::vector<cv::Mat>& frames, const AugmentConfig& cfg, std::mt19937_64& rng) {
  std::vector<cv::Mat> out;
  out.reserve(frames.size());
  std::mt19937_64 last = rng;
  for (const cv::Mat& f : frames) {
    last = rng;  // the same draw for every frame
    out.push_back(Augment(f, cfg, last));
  }
  rng = last;
  return out;
}

std::vector<int> TemporalCropStarts(int stored, int frames, int views) {
  if (frames < 1 || frames > stored || views < 1)
    throw Error(Msg("internal: temporal crops of ", frames, " frames out of ", stored, ", ", views, " views"));
  const int span = stored - frames;
  if (views == 1) return {span / 2};
  std::vector<int> starts;
  for (int j = 0; j < views; ++j)
    starts.push_back(static_cast<int>(std::lround(static_cast<double>(j) * span / (views - 1))));
  return starts;
}

int RandomTemporalStart(int stored, int frames, std::mt19937_64& rng) {
  if (frames < 1 || frames > stored)
    throw Error(Msg("internal: a temporal crop of ", frames, " frames out of ", stored));
  return static_cast<int>(rng() % static_cast<uint64_t>(stored - frames + 1));
}

}  // namespace mlfd
