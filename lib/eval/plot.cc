// Plot rendering with OpenCV imgproc + imgcodecs.
#include "eval/plot.h"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <opencv2/imgcodecs.hpp>
#include <opencv2/imgproc.hpp>

#include "util/error.h"
#include "util/file_roles.h"
#include "util/fs.h"

namespace mlfd {
namespace {

const auto kFont = cv::FONT_HERSHEY_SIMPLEX;

// A tEXt chunk "Software" = kPngSoftwareMark, which marks the PNG as this toolkit's (an output that
// the user did not name, such as the loss plot beside --curves-png, replaces only a PNG with it).
std::string SoftwareChunk() {
  std::string data = std::string("tEXtSoftware") + '\0' + kPngSoftwareMark;
  uint32_t crc = 0xffffffffu;  // CRC-32 (ISO-HDLC) over the chunk type and data, as PNG wants
  for (unsigned char c : data) {
    crc ^= c;
    for (int k = 0; k < 8; ++k) crc = (crc >> 1) ^ (0xedb88320u & (0u - (crc & 1u)));
  }
  crc ^= 0xffffffffu;
  auto be32 = [](uint32_t v) {
    return std::string{static_cast<char>(v >> 24), static_cast<char>(v >> 16), static_cast<char>(v >> 8),
                       static_cast<char>(v)};
  };
  return be32(static_cast<uint32_t>(data.size() - 4)) + data + be32(crc);
}

// Encodes in memory (libpng never touches the disk, so a full disk gives our one error line and no
// stray "libpng error:"), with the toolkit's mark after the header chunk.
std::string EncodePng(const cv::Mat& img, const std::string& what) {
  std::vector<uchar> png;
  bool ok = false;
  try {
    ok = cv::imencode(".png", img, png);
  } catch (const cv::Exception&) {
    ok = false;
  }
  const size_t after_ihdr = 8 + 4 + 4 + 13 + 4;  // signature, then IHDR: length, type, 13 bytes, CRC
  if (!ok || png.size() < after_ihdr) throw Error(Msg(what, ": cannot encode the plot as PNG"));
  std::string bytes(png.begin(), png.end());
  bytes.insert(after_ihdr, SoftwareChunk());
  return bytes;
}

std::string Short(const std::string& s, size_t n) { return s.size() <= n ? s : s.substr(0, n - 1) + "~"; }

std::string Num(double v) {
  char buf[32];
  if (std::fabs(v) >= 100 || v == std::floor(v)) std::snprintf(buf, sizeof(buf), "%.0f", v);
  else std::snprintf(buf, sizeof(buf), "%.3g", v);
  return buf;
}

}  // namespace

std::string ConfusionMatrixPng(const std::vector<int64_t>& counts, const std::vector<std::string>& names,
                               const std::string& title) {
  const int k = static_cast<int>(names.size());
  if (k == 0 || counts.size() != static_cast<size_t>(k) * k)
    throw Error(Msg(title, ": confusion matrix needs ", k, " x ", k, " counts"));
  const int cell = k <= 10 ? 48 : k <= 20 ? 32 : std::max(4, 640 / k);
  const int left = k <= 40 ? 150 : 40, top = 60, bottom = k <= 40 ? 130 : 40;
  cv::Mat img(top + k * cell + bottom, left + k * cell + 20, CV_8UC3, cv::Scalar(255, 255, 255));
  cv::putText(img, Short(title, 80), {10, 25}, kFont, 0.55, cv::Scalar(0, 0, 0), 1, cv::LINE_AA);
  for (int r = 0; r < k; ++r) {
    int64_t row = 0;
    for (int c = 0; c < k; ++c) row += counts[static_cast<size_t>(r * k + c)];
    for (int c = 0; c < k; ++c) {
      int64_t n = counts[static_cast<size_t>(r * k + c)];
      double share = row > 0 ? static_cast<double>(n) / row : 0.0;
      // White -> dark blue (BGR).
      cv::Scalar colour(255 - 100 * share, 255 - 200 * share, 255 - 230 * share);
      cv::Rect box(left + c * cell, top + r * cell, cell, cell);
      cv::rectangle(img, box, colour, cv::FILLED);
      cv::rectangle(img, box, cv::Scalar(220, 220, 220), 1);
      if (k <= 20 && n > 0) {
        std::string t = std::to_string(n);
        double scale = cell >= 48 ? 0.4 : 0.3;
        int base = 0;
        cv::Size ts = cv::getTextSize(t, kFont, scale, 1, &base);
        cv::putText(img, t, {box.x + (cell - ts.width) / 2, box.y + (cell + ts.height) / 2}, kFont, scale,
                    share > 0.5 ? cv::Scalar(255, 255, 255) : cv::Scalar(0, 0, 0), 1, cv::LINE_AA);
      }
    }
    if (k <= 40)
      cv::putText(img, Short(names[static_cast<size_t>(r)], 18), {5, top + r * cell + cell / 2 + 4}, kFont, 0.38,
                  cv::Scalar(0, 0, 0), 1, cv::LINE_AA);
  }
  if (k <= 40) {  // predicted-class names, rotated by drawing onto a transposed strip
    cv::Mat vertical(k * cell, bottom - 20, CV_8UC3, cv::Scalar(255, 255, 255));
    for (int c = 0; c < k; ++c) {  // right-aligned, so the rotated labels start at the matrix
      std::string t = Short(names[static_cast<size_t>(c)], 18);
      int base = 0;
      int tw = cv::getTextSize(t, kFont, 0.38, 1, &base).width;
      cv::putText(vertical, t, {vertical.cols - tw - 5, c * cell + cell / 2 + 4}, kFont, 0.38,
                  cv::Scalar(0, 0, 0), 1, cv::LINE_AA);
    }
    cv::Mat label_area;
    cv::rotate(vertical, label_area, cv::ROTATE_90_COUNTERCLOCKWISE);
    label_area.copyTo(img(cv::Rect(left, top + k * cell + 5, k * cell, bottom - 20)));
  }
  cv::putText(img, "true (rows) / predicted (columns)", {10, 45}, kFont, 0.4, cv::Scalar(80, 80, 80), 1, cv::LINE_AA);
  return EncodePng(img, title);
}

std::string LinesPng(const std::vector<Series>& series, const std::string& title, const std::string& xlabel,
                     const std::string& ylabel) {
  double x0 = INFINITY, x1 = -INFINITY, y0 = INFINITY, y1 = -INFINITY;
  for (const auto& s : series)
    for (size_t i = 0; i < s.x.size() && i < s.y.size(); ++i)
      if (std::isfinite(s.x[i]) && std::isfinite(s.y[i])) {
        x0 = std::min(x0, s.x[i]), x1 = std::max(x1, s.x[i]);
        y0 = std::min(y0, s.y[i]), y1 = std::max(y1, s.y[i]);
      }
  if (!std::isfinite(x0)) throw Error(Msg(title, ": nothing to plot"));
  if (x1 == x0) x0 -= 0.5, x1 += 0.5;
  if (y1 == y0) y0 -= 0.5, y1 += 0.5;
  double pad = (y1 - y0) * 0.05;
  y0 -= pad, y1 += pad;
  const int W = 720, H = 440, L = 70, R = 20, T = 40, B = 60;
  cv::Mat img(H, W, CV_8UC3, cv::Scalar(255, 255, 255));
  auto px = [&](double x) { return L + static_cast<int>((x - x0) / (x1 - x0) * (W - L - R)); };
  auto py = [&](double y) { return H - B - static_cast<int>((y - y0) / (y1 - y0) * (H - T - B)); };
  for (int i = 0; i <= 5; ++i) {  // grid and ticks
    double xv = x0 + (x1 - x0) * i / 5, yv = y0 + (y1 - y0) * i / 5;
    cv::line(img, {px(xv), T}, {px(xv), H - B}, cv::Scalar(235, 235, 235));
    cv::line(img, {L, py(yv)}, {W - R, py(yv)}, cv::Scalar(235, 235, 235));
    cv::putText(img, Num(xv), {px(xv) - 10, H - B + 18}, kFont, 0.4, cv::Scalar(0, 0, 0), 1, cv::LINE_AA);
    cv::putText(img, Num(yv), {5, py(yv) + 4}, kFont, 0.4, cv::Scalar(0, 0, 0), 1, cv::LINE_AA);
  }
  cv::rectangle(img, {L, T}, {W - R, H - B}, cv::Scalar(0, 0, 0));
  const cv::Scalar colours[] = {{180, 119, 31}, {14, 127, 255}, {44, 160, 44}, {40, 39, 214}, {189, 103, 148}};
  for (size_t s = 0; s < series.size(); ++s) {
    const cv::Scalar& col = colours[s % 5];
    cv::Point prev(-1, -1);
    for (size_t i = 0; i < series[s].x.size() && i < series[s].y.size(); ++i) {
      if (!std::isfinite(series[s].x[i]) || !std::isfinite(series[s].y[i])) {
        prev = {-1, -1};
        continue;
      }
      cv::Point p(px(series[s].x[i]), py(series[s].y[i]));
      if (prev.x >= 0) cv::line(img, prev, p, col, 2, cv::LINE_AA);
      cv::circle(img, p, 3, col, cv::FILLED, cv::LINE_AA);
      prev = p;
    }
    cv::line(img, {L + 10, T + 15 + 18 * static_cast<int>(s)}, {L + 35, T + 15 + 18 * static_cast<int>(s)}, col, 2);
    cv::putText(img, series[s].name, {L + 42, T + 19 + 18 * static_cast<int>(s)}, kFont, 0.45, cv::Scalar(0, 0, 0), 1,
                cv::LINE_AA);
  }
  cv::putText(img, Short(title, 80), {L, 25}, kFont, 0.55, cv::Scalar(0, 0, 0), 1, cv::LINE_AA);
  cv::putText(img, xlabel, {(W - L) / 2 + L - 20, H - 15}, kFont, 0.45, cv::Scalar(0, 0, 0), 1, cv::LINE_AA);
  cv::putText(img, ylabel, {5, T - 8}, kFont, 0.45, cv::Scalar(0, 0, 0), 1, cv::LINE_AA);
  return EncodePng(img, title);
}

void PlotConfusionMatrix(const std::vector<int64_t>& counts, const std::vector<std::string>& class_names,
                         const std::string& title, const std::string& png_path) {
  WriteTextAtomic(png_path, ConfusionMatrixPng(counts, class_names, title));
}

void PlotLines(const std::vector<Series>& series, const std::string& title, const std::string& xlabel,
               const std::string& ylabel, const std::string& png_path) {
  WriteTextAtomic(png_path, LinesPng(series, title, xlabel, ylabel));
}

}  // namespace mlfd
