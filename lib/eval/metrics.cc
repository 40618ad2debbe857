// Metrics and the prediction pass.
#include "eval/metrics.h"

#include "dist/dist.h"

#include <cmath>
#include <limits>

#include "data/loader.h"
#include "util/error.h"

namespace mlfd {

nlohmann::json ClassificationMetrics::ToJson(const std::vector<std::string>& class_names) const {
  nlohmann::json per_class = nlohmann::json::array();
  for (int c = 0; c < num_classes; ++c) {
    double a = per_class_accuracy[static_cast<size_t>(c)];
    per_class.push_back({{"class", c < static_cast<int>(class_names.size()) ? class_names[static_cast<size_t>(c)] : std::to_string(c)},
                         {"count", per_class_count[static_cast<size_t>(c)]},
                         {"accuracy", std::isnan(a) ? nlohmann::json(nullptr) : nlohmann::json(a)}});
  }
  nlohmann::json conf = nlohmann::json::array();
  for (int r = 0; r < num_classes; ++r)
    conf.push_back(std::vector<int64_t>(confusion.begin() + r * num_classes,
                                        confusion.begin() + (r + 1) * num_classes));
  return {{"count", count}, {"top1", top1}, {"top5", top5}, {"nll", nll}, {"ece", ece},
          {"per_class", per_class}, {"confusion", conf}};
}

ClassificationMetrics ComputeMetrics(const torch::Tensor& logits_in, const torch::Tensor& labels_in,
                                     int num_classes, int ece_bins) {
  torch::Tensor logits = logits_in.detach().to(torch::kCPU, torch::kFloat64);
  torch::Tensor labels = labels_in.detach().to(torch::kCPU, torch::kInt64);
  if (logits.dim() != 2 || logits.size(1) != num_classes || labels.size(0) != logits.size(0))
    throw Error(Msg("metrics: logits ", logits.sizes(), " and labels ", labels.sizes(),
                    " do not fit ", num_classes, " classes"));
  if (labels.numel() > 0 && (labels.min().item<int64_t>() < 0 || labels.max().item<int64_t>() >= num_classes))
    throw Error(Msg("metrics: a label is outside 0..", num_classes - 1));
  if (!torch::isfinite(logits).all().item<bool>())
    throw Error("metrics: the model produced non-finite logits (diverged weights?)");
  ClassificationMetrics m;
  m.num_classes = num_classes;
  m.count = logits.size(0);
  m.confusion.assign(static_cast<size_t>(num_classes) * num_classes, 0);
  m.per_class_count.assign(static_cast<size_t>(num_classes), 0);
  m.per_class_accuracy.assign(static_cast<size_t>(num_classes), std::numeric_limits<double>::quiet_NaN());
  if (m.count == 0) return m;
  torch::Tensor logp = torch::log_softmax(logits, 1);
  m.nll = -logp.gather(1, labels.unsqueeze(1)).mean().item<double>();
  torch::Tensor pred = logits.argmax(1);
  int k = std::min(5, num_classes);
  torch::Tensor topk = std::get<1>(logits.topk(k, 1));
  m.top1 = pred.eq(labels).to(torch::kFloat64).mean().item<double>();
  m.top5 = topk.eq(labels.unsqueeze(1)).any(1).to(torch::kFloat64).mean().item<double>();
  auto p = pred.accessor<int64_t, 1>();
  auto y = labels.accessor<int64_t, 1>();
  std::vector<int64_t> right(static_cast<size_t>(num_classes), 0);
  for (int64_t i = 0; i < m.count; ++i) {
    m.confusion[static_cast<size_t>(y[i] * num_classes + p[i])]++;
    m.per_class_count[static_cast<size_t>(y[i])]++;
    if (y[i] == p[i]) right[static_cast<size_t>(y[i])]++;
  }
  for (int c = 0; c < num_classes; ++c)
    if (m.per_class_count[static_cast<size_t>(c)] > 0)
      m.per_class_accuracy[static_cast<size_t>(c)] =
          static_cast<double>(right[static_cast<size_t>(c)]) / m.per_class_count[static_cast<size_t>(c)];
  // ECE: sum over bins of |accuracy - confidence| weighted by the bin's share of samples.
  torch::Tensor conf = std::get<0>(logp.exp().max(1));
  auto cf = conf.accessor<double, 1>();
  std::vector<double> bin_conf(static_cast<size_t>(ece_bins), 0), bin_acc(static_cast<size_t>(ece_bins), 0);
  std::vector<int64_t> bin_n(static_cast<size_t>(ece_bins), 0);
  for (int64_t i = 0; i < m.count; ++i) {
    int b = std::min(ece_bins - 1, static_cast<int>(cf[i] * ece_bins));
    bin_conf[static_cast<size_t>(b)] += cf[i];
    bin_acc[static_cast<size_t>(b)] += (y[i] == p[i]) ? 1.0 : 0.0;
    bin_n[static_cast<size_t>(b)]++;
  }
  for (int b = 0; b < ece_bins; ++b)
    if (bin_n[static_cast<size_t>(b)] > 0)
      m.ece += std::fabs(bin_acc[static_cast<size_t>(b)] - bin_conf[static_cast<size_t>(b)]) / m.count;
  return m;
}

namespace {
// Logits of the samples of `indices` in `proto`'s store (its rows replaced), averaged over the
// temporal views of a clip source and the spatial crops (AugmentConfig::eval_crops).
Predictions PredictSource(Net& net, const HeadInfo& info, LoaderSource proto, const std::vector<int64_t>& indices,
                          const AugmentConfig& eval_transform, torch::Device device, int workers, int views,
                          int crops) {
  LoaderOptions lo;
  lo.shuffle = false;
  lo.train_augment = false;
  lo.augment = eval_transform;
  lo.workers = workers;
  lo.clip_frames = info.frames;
  lo.clip_views = views;
  // Data parallel: each rank predicts rows rank, rank + W, ... and the rows are gathered back into
  // their order, so every metric equals the one process's.
  const int W = dist::World(), r = dist::Rank();
  std::vector<int64_t> mine;
  for (size_t i = static_cast<size_t>(r); i < indices.size(); i += static_cast<size_t>(W)) mine.push_back(indices[i]);
  const int64_t own = static_cast<int64_t>(mine.size());
  if (mine.empty()) mine.push_back(indices.at(0));  // fewer rows than ranks: a spare row, dropped below
  proto.indices = mine;
  proto.mean = info.mean;
  proto.std = info.std;
  net->eval();
  net->to(device);
  torch::NoGradGuard no_grad;
  const int64_t k = static_cast<int64_t>(info.class_names.size());
  torch::Tensor sum, labels_all;
  lo.augment.eval_crops = crops;
  for (int u = 0; u < views * crops; ++u) {  // every temporal view, every crop of it
    const int v = u / crops;
    lo.clip_view = v;
    lo.augment.eval_crop = u % crops;
    Loader loader({proto}, lo);
    loader.StartEpoch(0);
    std::vector<torch::Tensor> logits, labels;
    Batch b;
    while (loader.Next(&b)) {
      torch::Tensor z = net->forward(b.images.to(device), info.head).to(torch::kCPU, torch::kFloat32);
      logits.push_back(z.narrow(1, info.label_offset, k));
      labels.push_back(b.labels);
    }
    torch::Tensor z = torch::cat(logits);
    sum = u == 0 ? z : sum + z;
    if (u == 0) labels_all = torch::cat(labels);
  }
  torch::Tensor z = views * crops > 1 ? sum / static_cast<double>(views * crops) : sum;
  if (W == 1) return {z, labels_all};
  const int64_t n = static_cast<int64_t>(indices.size());
  return {dist::GatherStrided(z.narrow(0, 0, own).contiguous(), n),
          dist::GatherStrided(labels_all.narrow(0, 0, own).contiguous(), n)};
}
}  // namespace

Predictions Predict(Net& net, const HeadInfo& info, std::shared_ptr<const ImageStore> store,
                    const std::vector<int64_t>& indices, const AugmentConfig& eval_transform,
                    torch::Device device, int64_t batch_size, int workers, int crops) {
  return PredictSource(net, info, MakeSource(store, {}, batch_size), indices, eval_transform, device, workers, 1, crops);
}

Predictions Predict(Net& net, const HeadInfo& info, std::shared_ptr<const ClipStore> store,
                    const std::vector<int64_t>& indices, const AugmentConfig& eval_transform,
                    torch::Device device, int64_t batch_size, int workers, int views, int crops) {
  if (views < 1) throw Error(Msg("internal: ", views, " temporal views"));
  return PredictSource(net, info, MakeSource(store, {}, batch_size), indices, eval_transform, device, workers, views, crops);
}

}  // namespace mlfd
