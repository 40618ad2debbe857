// Clip sampling and decoding (videos with OpenCV videoio, frame folders with imgcodecs).
#include "data/clips.h"

#include <dirent.h>
#include <sys/stat.h>

#include <algorithm>
#include <cctype>
#include <functional>
#include <map>
#include <opencv2/videoio.hpp>
#include <set>

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
      // Compare the runs as numbers without converting: skip leading zeros, then length, then
      // digits.
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

namespace {

// Picks the sampled frames out of the frames kept of a video (by source index), in order.
void Finish(DecodedClip& c, const std::map<int64_t, cv::Mat>& kept, const ClipSampling& s) {
  c.indices = SampleFrameIndices(c.num_source_frames, s);
  if (c.indices.empty()) {
    c.error = c.num_source_frames == 0 ? "no frames"
                                       : Msg(c.num_source_frames, " frame(s), ", s.FramesNeeded(),
                                             " needed (--short-video refuse)");
    return;
  }
  c.padded = c.num_source_frames < s.FramesNeeded();
  for (int64_t k : c.indices) c.frames.push_back(kept.at(k));
}

bool Contains(const std::map<int64_t, cv::Mat>& kept, const std::vector<int64_t>& indices) {
  for (int64_t k : indices)
    if (!kept.count(k)) return false;
  return true;
}

// One pass over a video: decodes its frames (up to `limit`), converting and keeping those that
// `want_of` (given the container's frame count, 0 when it has none) names. Returns the frames
// decoded, or -1 when the file does not open.
int64_t DecodePass(const std::string& file, const ImageSpec& spec,
                   const std::function<std::set<int64_t>(int64_t)>& want_of, int64_t limit,
                   std::map<int64_t, cv::Mat>* kept, double* frame_rate, int64_t* frame_count) {
  cv::VideoCapture cap;
  // FFmpeg only: other backends would read a name with '%' as an image sequence, or try a camera.
  if (!cap.open(file, cv::CAP_FFMPEG)) return -1;
  *frame_rate = cap.get(cv::CAP_PROP_FPS);
  const double count = cap.get(cv::CAP_PROP_FRAME_COUNT);
  *frame_count = count > 0 && count < 1e12 ? static_cast<int64_t>(count) : 0;
  const std::set<int64_t> want = want_of(*frame_count);
  int64_t n = 0;
  while (n < limit && cap.grab()) {
    if (want.count(n)) {
      // A fresh Mat per frame: retrieve() writes into the Mat it is given, and a frame that needs
      // no resizing is kept in that very buffer.
      cv::Mat raw;
      if (!cap.retrieve(raw) || raw.empty()) break;  // a frame that does not decode ends the video
      (*kept)[n] = ConvertImage(raw, spec, /*is_bgr=*/raw.channels() >= 3);
    }
    ++n;
  }
  return n;
}

}  // namespace

DecodedClip DecodeVideoClip(const std::string& file, const ImageSpec& spec, const ClipSampling& s) {
  DecodedClip c;
  struct stat st;
  if (stat(file.c_str(), &st) == 0 && S_ISREG(st.st_mode) && st.st_size == 0) {
    c.error = "an empty file";
    return c;
  }
  try {
    // Every frame up to the last one sampled is decoded, but only the sampled ones are converted
    // and held (T frames at the stored size, whatever the video's length). Uniform sampling needs
    // the length first: the container's frame count is taken on trust, and checked by decoding;
    // when it was wrong, a second pass keeps the frames the decoded length asks for.
    std::map<int64_t, cv::Mat> kept;
    int64_t count = 0;
    const bool step = s.mode == ClipSampling::Mode::kStep;
    const int64_t limit = step ? s.FramesNeeded() : INT64_MAX;
    auto sampled = [&](int64_t frames) {
      std::set<int64_t> want;
      if (step)
        for (int64_t k = 0; k < limit; k += s.step) want.insert(k);
      else
        for (int64_t k : SampleFrameIndices(frames, s)) want.insert(k);
      return want;
    };
    int64_t n = DecodePass(file, spec, sampled, limit, &kept, &c.frame_rate, &count);
    if (n < 0) {
      c.error = "cannot be opened as a video";
      return c;
    }
    if (!(c.frame_rate > 0 && c.frame_rate < 1e6)) c.frame_rate = 0;
    c.num_source_frames =
        n == limit ? std::max(n, count) : n;  // stopped early: the container's length
    const std::vector<int64_t> need = SampleFrameIndices(c.num_source_frames, s);
    if (!Contains(kept, need)) {  // the container's frame count was wrong: decode again, knowing n
      kept.clear();
      double rate = 0;
      auto needed = [&](int64_t) { return std::set<int64_t>(need.begin(), need.end()); };
      if (DecodePass(file, spec, needed, n, &kept, &rate, &count) != n || !Contains(kept, need)) {
        c.error = "decodes differently on a second pass";
        return c;
      }
    }
    Finish(c, kept, s);
  } catch (const cv::Exception& e) {
    c = DecodedClip();
    c.error = Msg("decoder error: ", e.what());
  }
  return c;
}

DecodedClip DecodeFrameFolderClip(const std::string& dir, const ImageSpec& spec,
                                  const ClipSampling& s, double frame_rate) {
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
  std::map<int64_t, cv::Mat> by_index;
  for (int64_t k : idx) {
    cv::Mat& m = by_index[k];
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
