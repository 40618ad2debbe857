// Video clips for prepare_data: which frames of a video are stored (uniformly over its length, or
// every k-th frame up to a maximum; a short video padded by repeating frames or refused), and
// decoding a video file (OpenCV videoio) or a folder of frame images into those frames at the
// stored size and channels. The clip store (data/clip_store.h) holds the result.
#pragma once

#include <cstdint>
#include <nlohmann/json.hpp>
#include <opencv2/core.hpp>
#include <string>
#include <vector>

#include "data/manifest.h"

namespace mlfd {

struct ClipSampling {
  enum class Mode { kUniform, kStep };
  Mode mode = Mode::kUniform;
  int frames = 16;  // T: frames stored per clip (kStep: the maximum, --max-frames)
  int step = 1;     // kStep: every step-th frame, from the first
  bool pad = true;  // a video with fewer frames than needed: repeat frames (true) or refuse it

  // Frames a video needs so that nothing is repeated: T (uniform) or (T - 1) * step + 1 (step).
  int64_t FramesNeeded() const;
  // {"mode": "uniform", "frames": T, "short_video": "pad"} or
  // {"mode": "step", "step": k, "max_frames": T, "short_video": "refuse"} (the store's `sampling`).
  nlohmann::json ToJson() const;
};

// The source frame of each of the T stored frames of a video of `num_frames` frames, or an empty
// vector when num_frames < 1, or when the video is short (num_frames < FramesNeeded()) and
// sampling.pad is false.
//   uniform: frame floor((2i + 1) * n / (2T)), the middle of the i-th of T equal segments; when
//            n < T this shows every frame in order, some twice.
//   step:    frames 0, k, 2k, ..., (T - 1) k; when the video ends before, its last sampled frame
//            is repeated up to T.
std::vector<int64_t> SampleFrameIndices(int64_t num_frames, const ClipSampling& sampling);

// Natural order of file names: runs of digits compare as numbers ("2.jpg" < "10.jpg" <
// "frame_11.jpg" only by their prefixes), the rest byte-wise; ties broken byte-wise.
bool NaturalLess(const std::string& a, const std::string& b);

struct DecodedClip {
  std::vector<cv::Mat> frames;    // T frames, stored size and channels (RGB or gray), continuous
  std::vector<int64_t> indices;   // the source frame of each
  int64_t num_source_frames = 0;  // the video's length (frames decoded; when step sampling stops
                                  // decoding early, the container's frame count if larger)
  double frame_rate = 0;          // frames per second; 0 when unknown
  bool padded = false;            // some frames repeated because the video is short
  std::string error;              // why no clip could be made ("" when frames holds one)
};

// Decodes a video file once (FFmpeg through cv::VideoCapture), converting each frame it may need
// to the stored format (ConvertImage), and samples the clip. Errors (cannot be opened, no frames,
// too short to refuse) are returned in `error`, not thrown, so prepare_data can list them all.
DecodedClip DecodeVideoClip(const std::string& file, const ImageSpec& spec,
                            const ClipSampling& sampling);
// A folder of frame images (any image extension, in natural order of their names): samples the
// clip and decodes only the frames it keeps. `frame_rate` is recorded as given (0 = unknown).
DecodedClip DecodeFrameFolderClip(const std::string& dir, const ImageSpec& spec,
                                  const ClipSampling& sampling, double frame_rate);

}  // namespace mlfd
