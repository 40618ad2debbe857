// A synthetic action-recognition dataset the project can make from data it already has: "moving
// sprites", short clips of one image of a store (an MNIST digit, a Fashion-MNIST garment) moving
// over a black canvas, whose class is the motion pattern, not the sprite. A single frame does not
// tell the class; the motion over the frames does. Clips are written as frame folders in the
// layout users' own datasets have, <out>/<split>/<motion>/<video>/<frame>.png, which prepare_data
// reads like any frame-folder dataset (a frame_folder source per split).
#pragma once

#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include <boost/program_options.hpp>
#include <opencv2/core.hpp>

namespace mlfd {

// The motion patterns: translations (right, left, down, up, down_right, up_left), rotations about
// a centre on a circle (clockwise, counterclockwise: the sprite's position goes round, screen
// coordinates), and scaling about a fixed centre (zoom_in, zoom_out).
std::vector<std::string> MotionNames();

struct SpriteOptions {
  std::vector<std::string> motions = {"right", "left", "down", "up"};  // the classes, in index order
  int frames = 16;         // frames per clip
  int canvas = 48;         // square canvas side in pixels
  double sprite_scale = 1.0;  // sprite size on the canvas relative to its stored size (zoom: the middle)
  std::map<std::string, int> per_class = {{"train", 100}, {"val", 50}, {"test", 50}};  // clips per class
  uint64_t seed = 0;
  void Register(boost::program_options::options_description& d);
  void Check() const;
};

// One clip: `frames` canvas x canvas images with `sprite` (H x W x C uint8) moving by `motion`,
// its path drawn from `rng_seed` (start, speed, radius, scale range) so it stays inside the canvas.
std::vector<cv::Mat> RenderClip(const cv::Mat& sprite, const std::string& motion, const SpriteOptions& opts,
                                uint64_t rng_seed);

struct SpriteSummary {
  int64_t clips = 0, frames = 0;
  std::map<std::string, int64_t> per_split;
};

// Writes the dataset to the folder `out` from the images of `store` (an image store): clips of
// split s take their sprites from the store's split s (train, val, test; a store without "val"
// gives val clips from train). Written under a temporary name and renamed into place at the end;
// an existing `out` is replaced only when it holds a dataset this function wrote (its
// moving_sprites.json), and never when it is anything else.
SpriteSummary MakeMovingSprites(const std::string& store, const std::string& out, const SpriteOptions& opts,
                                const std::string& provenance_json);

}  // namespace mlfd
