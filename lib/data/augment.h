// Image augmentation with OpenCV for the training loaders: resize, random resized crop, zero-pad +
// random crop, horizontal flip and AutoAugment's ImageNet policy, following the semantics of
// torchvision.transforms on uint8 images (1-channel gray or 3-channel RGB, H x W x C).
#pragma once

#include <opencv2/core.hpp>
#include <random>
#include <string>
#include <utility>
#include <vector>

namespace mlfd {

struct AugmentConfig {
  int out_size = 0;              // final square size (0 = keep the stored size)
  int pad = 0;                   // zero padding, then a random crop back to the size
  bool random_resized_crop = false;
  double rrc_scale_min = 0.08, rrc_scale_max = 1.0;
  double rrc_ratio_min = 3.0 / 4.0, rrc_ratio_max = 4.0 / 3.0;
  bool hflip = false;            // with probability 0.5
  bool autoaugment = false;      // ImageNet policy
  // Evaluation views (evaluate --crops): 1 = the resize to out_size alone; 3 or 5 = the frame
  // resized to a short side of out_size * 8 / 7 and an out_size square cut at position
  // `eval_crop` of `eval_crops` (3: start, centre, end of the longer side, the diagonal of a square
  // frame; 5: the four corners and the centre), as video papers' multi-crop testing.
  int eval_crops = 1, eval_crop = 0;
};

// Training transform: (random resized crop | resize) -> pad + crop -> flip -> AutoAugment.
// Deterministic given the rng state. Returns a new continuous Mat.
cv::Mat Augment(const cv::Mat& img, const AugmentConfig& cfg, std::mt19937_64& rng);
// Evaluation transform: only the resize to out_size (bilinear), or a copy; with eval_crops 3 or
// 5, crop eval_crop of the larger resize (above).
cv::Mat EvalTransform(const cv::Mat& img, const AugmentConfig& cfg);
// The top-left corner (x, y) of crop `crop` of `crops` (1, 3 or 5) of side `side` in a w x h frame.
std::pair<int, int> EvalCropOrigin(int w, int h, int side, int crops, int crop);

// Clips: one random draw per clip, the same transform on every frame (each frame is augmented with
// a copy of the same rng state, so crops, flips and AutoAugment's choice of operations and
// magnitudes agree across frames). `rng` ends as after one frame's Augment.
std::vector<cv::Mat> AugmentClip(const std::vector<cv::Mat>& frames, const AugmentConfig& cfg, std::mt19937_64& rng);

// Temporal crops of `frames` consecutive frames out of `stored` (frames <= stored): the first
// frame of `views` crops spaced uniformly from the first possible start to the last (views = 1:
// the centred crop), as action-recognition papers evaluate several clips per video.
std::vector<int> TemporalCropStarts(int stored, int frames, int views);
// Training: a uniformly random start in 0..stored - frames.
int RandomTemporalStart(int stored, int frames, std::mt19937_64& rng);

// AutoAugment, ImageNet policy: one of 25 sub-policies of two (op, probability, magnitude bin).
cv::Mat AutoAugmentImageNet(const cv::Mat& img, std::mt19937_64& rng);

// The AutoAugment operations (torchvision.transforms.functional semantics on uint8 images;
// geometric ops use nearest interpolation and fill 0).
namespace aug {
cv::Mat ShearX(const cv::Mat& img, double shear);   // shear factor, about the top-left corner
cv::Mat ShearY(const cv::Mat& img, double shear);
cv::Mat TranslateX(const cv::Mat& img, int pixels);
cv::Mat TranslateY(const cv::Mat& img, int pixels);
cv::Mat Rotate(const cv::Mat& img, double degrees);  // counter-clockwise, about the centre
cv::Mat Brightness(const cv::Mat& img, double factor);
cv::Mat Color(const cv::Mat& img, double factor);
cv::Mat Contrast(const cv::Mat& img, double factor);
cv::Mat Sharpness(const cv::Mat& img, double factor);
cv::Mat Posterize(const cv::Mat& img, int bits);
cv::Mat Solarize(const cv::Mat& img, double threshold);
cv::Mat AutoContrast(const cv::Mat& img);
cv::Mat Equalize(const cv::Mat& img);
cv::Mat Invert(const cv::Mat& img);
}  // namespace aug

}  // namespace mlfd
