// Batch-level mixup and cutmix (data/mix.h).
#include "data/mix.h"

#include <algorithm>
#include <cmath>
#include <numeric>
#include <random>
#include <vector>

#include "util/error.h"

namespace mlfd {

bool IsMixMode(const std::string& mode) { return mode == "mixup" || mode == "cutmix"; }

namespace {
double SampleBeta(double alpha, std::mt19937_64& rng) {
  std::gamma_distribution<double> g(alpha, 1.0);
  const double a = g(rng), b = g(rng);
  return a + b > 0 ? a / (a + b) : 0.5;
}
}  // namespace

MixedBatch MixBatch(const torch::Tensor& images, const torch::Tensor& labels, const std::string& mode, double alpha,
                    uint64_t seed) {
  if (!IsMixMode(mode)) throw Error(Msg("mix: unknown mode '", mode, "' (valid: mixup, cutmix)"));
  if (!(alpha > 0) || !std::isfinite(alpha)) throw Error(Msg("mix: alpha must be a number > 0, not ", alpha));
  if (images.dim() != 4) throw Error(Msg("mix: expected an N x C x H x W batch, got ", images.dim(), " dimensions"));
  if (labels.dim() != 1 || labels.size(0) != images.size(0))
    throw Error(Msg("mix: ", labels.numel(), " labels for ", images.size(0), " images"));
  std::mt19937_64 rng(seed);
  const int64_t n = images.size(0), h = images.size(2), w = images.size(3);
  MixedBatch out;
  out.lambda = SampleBeta(alpha, rng);
  std::vector<int64_t> perm(static_cast<size_t>(n));
  std::iota(perm.begin(), perm.end(), int64_t{0});
  std::shuffle(perm.begin(), perm.end(), rng);
  out.perm = torch::tensor(perm, torch::kInt64).to(images.device());
  out.labels_b = labels.index_select(0, out.perm.to(labels.device()));
  torch::Tensor partner = images.index_select(0, out.perm);
  if (mode == "mixup") {
    out.images = images * out.lambda + partner * (1.0 - out.lambda);
    return out;
  }
  // cutmix: a box of side sqrt(1 - lambda) of the image's, centred uniformly, clipped.
  const double cut = std::sqrt(1.0 - out.lambda);
  const int64_t bh = static_cast<int64_t>(std::floor(static_cast<double>(h) * cut));
  const int64_t bw = static_cast<int64_t>(std::floor(static_cast<double>(w) * cut));
  const int64_t cy = std::uniform_int_distribution<int64_t>(0, h - 1)(rng);
  const int64_t cx = std::uniform_int_distribution<int64_t>(0, w - 1)(rng);
  out.y0 = std::clamp<int64_t>(cy - bh / 2, 0, h), out.y1 = std::clamp<int64_t>(cy + bh / 2, 0, h);
  out.x0 = std::clamp<int64_t>(cx - bw / 2, 0, w), out.x1 = std::clamp<int64_t>(cx + bw / 2, 0, w);
  out.images = images.clone();
  if (out.y1 > out.y0 && out.x1 > out.x0) {
    using torch::indexing::Slice;
    out.images.index_put_({Slice(), Slice(), Slice(out.y0, out.y1), Slice(out.x0, out.x1)},
                          partner.index({Slice(), Slice(), Slice(out.y0, out.y1), Slice(out.x0, out.x1)}));
  }
  out.lambda = 1.0 - static_cast<double>((out.y1 - out.y0) * (out.x1 - out.x0)) / static_cast<double>(h * w);
  return out;
}

}  // namespace mlfd
