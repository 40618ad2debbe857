// Clip sampling and decoding (videos with OpenCV videoio, frame folders with imgcodecs).
#include "data/clips.h"

#include <dirent.h>
#include <sys/stat.h>

#include <algorithm>
#include <cctype>
#include <opencv2/videoio.hpp>

#include "data/prepare.h"
#include "data/source_readers.h"
#include "util/error.h"

namespace mlfd {

int64_t ClipSampling::FramesNeeded() const {
  return mode == Mode::kUniform ? frames : static_cast<int64_t>(frames - 1) * step + 1;
}

nlohmann::json ClipSampling::ToJson() const {
  nlohmann::json j;
  if (mode == Mode::kUniform) {
    j = {{"mode", "uniform"}, {"frames", frames}};
  } else {
    j = {{"mode", "step"}, {"step", step}, {"max_frames", frames}};
  }
  j["short_video"] = pad ? "pad" : "refuse";
  return j;
}

std::vector<int64_t> SampleFrameIndices(int64_t n, const ClipSampling& s) {
  std::vector<int64_t> out;
  if (n < 1 || s.frames < 1 || (n < s.FramesNeeded() && !s.pad)) return out;
  const int64_t t = s.frames;
  out.reserve(static_cast<size_t>(t));
  for (int64_t i = 0; i < t; ++i) {
    if (s.mode == ClipSampling::Mode::kUniform) {
      out.push_back((2 * i + 1) * n / (2 * t));
    } else {
      int64_t last = (n - 1) / s.step * s.step;  // the last frame a step reaches
      out.push_back(std::min(i * s.step, last));
    }
  }
  return out;
}

bool NaturalLess(const std::string& a, const std::string& b) {
  size_t i = 0, j = 0;
  auto digit = [](char c) { return std::isdigit(static_cast<unsigned char>(c)) != 0; };
  while (i < a.size() && j < b.size()) {
    if (digit(a[i]) && digit(b[j])) {
      size_t i0 = i, j0 = j;
      while (i < a.size() && digit(a[i])) ++i;
      while (j < b.size() && digit(b[j])) ++j;
      // Compare the runs as numbers without converting: skip leading zeros, then length, then digits.
      size_t ia = i0, jb = j0;
      while (ia + 1 < i && a[ia] == '0') ++ia;
      while (jb + 1 < j && b[jb] == '0') ++jb;
      if (i - ia != j - jb) return i - ia < j - jb;
      int c = a.compare(ia, i - ia, b, jb, j - jb);
      if (c != 0) return c < 0;
    } else {
      if (a[i] != b[j]) return static_cast<unsigned char>(a[i]) < static_cast<unsigned char>(b[j]);
      ++i;
      ++j;
    }
  }
  if ((i < a.size()) != (j < b.size())) return j < b.size();
  return a < b;  // equal by the natural order ("01" vs "1"): byte-wise
}

std::vector<std::string> DefaultVideoExtensions() {
  return {".avi", ".mp4", ".mkv", ".webm", ".mov", ".m4v", ".mpg", ".mpeg", ".flv", ".wmv", ".3gp", ".ogv"};
}

namespace {

// Picks the sampled frames out of the frames of a video, in order.
void Finish(DecodedClip& c, const std::vector<cv::Mat>& by_index, const ClipSampling& s) {
  c.indices = SampleFrameIndices(c.num_source_frames, s);
  if (c.indices.empty()) {
    c.error = c.num_source_frames == 0
                  ? "no frames"
                  : Msg(c.num_source_frames, " frame(s), ", s.FramesNeeded(), " needed (--short-video refuse)");
    return;
  }
  c.padded = c.num_source_frames < s.FramesNeeded();
  for (int64_t k : c.indices) c.frames.push_back(by_index[static_cast<size_t>(k)]);
}

}  // namespace

DecodedClip DecodeVideoClip(const std::string& file, const ImageSpec& spec, const ClipSampling& s) {
  DecodedClip c;
  struct stat st;
  if (stat(file.c_str(), &st) == 0 && S_ISREG(st.st_mode) && st.st_size == 0) {
    c.error = "an empty file";
    return c;
  }
  cv::VideoCapture cap;
  try {
    // FFmpeg only: other backends would read a name with '%' as an image sequence, or try a camera.
    if (!cap.open(file, cv::CAP_FFMPEG)) {
      c.error = "cannot be opened as a video";
      return c;
    }
    c.frame_rate = cap.get(cv::CAP_PROP_FPS);
    if (!(c.frame_rate > 0 && c.frame_rate < 1e6)) c.frame_rate = 0;
    // Every frame is decoded (the container's frame count is not trusted), but only the ones the
    // sampling may keep are converted and held: every frame for uniform sampling (which needs the
    // length), every step-th up to the last one needed for step sampling.
    const int64_t limit = s.mode == ClipSampling::Mode::kStep ? s.FramesNeeded() : INT64_MAX;
    std::vector<cv::Mat> frames;
    int64_t n = 0;
    while (n < limit && cap.grab()) {
      const bool keep = s.mode == ClipSampling::Mode::kUniform || n % s.step == 0;
      if (keep) {
        // A fresh Mat per frame: retrieve() writes into the Mat it is given, and a frame that needs
        // no resizing is kept in that very buffer.
        cv::Mat raw;
        if (!cap.retrieve(raw) || raw.empty()) break;  // a frame that does not decode ends the video
        frames.push_back(ConvertImage(raw, spec, /*is_bgr=*/raw.channels() >= 3));
      } else {
        frames.emplace_back();
      }
      ++n;
    }
    c.num_source_frames = n;
    if (n == limit) {  // stopped early: the video's length as its container gives it
      const double count = cap.get(cv::CAP_PROP_FRAME_COUNT);
      if (count > static_cast<double>(n) && count < 1e12) c.num_source_frames = static_cast<int64_t>(count);
    }
    Finish(c, frames, s);
  } catch (const cv::Exception& e) {
    c = DecodedClip();
    c.error = Msg("decoder error: ", e.what());
  }
  return c;
}

DecodedClip DecodeFrameFolderClip(const std::string& dir, const ImageSpec& spec, const ClipSampling& s,
                                  double frame_rate) {
  DecodedClip c;
  c.frame_rate = frame_rate;
  std::vector<std::string> names;
  DIR* d = opendir(dir.c_str());
  if (!d) {
    c.error = "cannot open the folder";
    return c;
  }
  const auto exts = DefaultImageExtensions();
  while (dirent* e = readdir(d)) {
    std::string name = e->d_name;
    if (IsImageFile(name, exts)) names.push_back(name);
  }
  closedir(d);
  std::sort(names.begin(), names.end(), NaturalLess);
  c.num_source_frames = static_cast<int64_t>(names.size());
  std::vector<int64_t> idx = SampleFrameIndices(c.num_source_frames, s);
  std::vector<cv::Mat> by_index(names.size());
  for (int64_t k : idx) {
    cv::Mat& m = by_index[static_cast<size_t>(k)];
    if (!m.empty()) continue;
    m = LoadAndConvert(dir + "/" + names[static_cast<size_t>(k)], spec);
    if (m.empty()) {
      c.error = Msg("frame ", names[static_cast<size_t>(k)], " cannot be read");
      return c;
    }
  }
  if (names.empty()) {
    c.error = "no frame images";
    return c;
  }
  Finish(c, by_index, s);
  return c;
}

}  // namespace mlfd
