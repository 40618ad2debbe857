// The setup every training stage shares: model, augmentation and stage options, the Stage object.
#include "train/stage.h"

#include "dist/dist.h"

#include <torch/torch.h>

#include <algorithm>
#include <numeric>

#include "data/clip_store.h"
#include "data/image_store.h"
#include "models/device.h"
#include "util/error.h"
#include "util/log.h"
#include "util/options.h"
#include "util/sha256.h"

namespace mlfd {

namespace po = boost::program_options;

void ModelOptions::Register(po::options_description& d, const std::string& p) {
  std::string archs;
  for (const auto& a : ArchNames()) archs += (archs.empty() ? "" : " | ") + a;
  d.add_options()((p + "arch").c_str(), po::value(&arch)->default_value(arch), archs.c_str())(
      (p + "width").c_str(), po::value(&width)->default_value(width), "channel width multiplier")(
      (p + "small-stem").c_str(), po::value(&small_stem)->default_value(small_stem)->implicit_value(true),
      "3x3 stride-1 stem without max-pool, for 28-64 px images")(
      (p + "embed-dim").c_str(), po::value(&embed_dim)->default_value(embed_dim),
      "MLFD dense embedding size E (0 = none; skipped when equal to the feature size)")(
      (p + "dropout").c_str(), po::value(&dropout)->default_value(dropout), "dropout before the head")(
      (p + "drop-path").c_str(), po::value(&drop_path)->default_value(drop_path), "stochastic depth rate");
}

void ModelOptions::Check(const std::string& p) const {
  OptionChecker c(p);
  auto archs = ArchNames();
  c.Require(std::find(archs.begin(), archs.end(), arch) != archs.end(), "arch",
            "unknown architecture '" + arch + "' (valid: " +
                std::accumulate(archs.begin(), archs.end(), std::string(),
                                [](std::string a, const std::string& b) { return a.empty() ? b : a + ", " + b; }) +
                ")");
  c.Require(width > 0 && width <= 4, "width", "must be in (0, 4]");
  c.Require(embed_dim >= 0, "embed-dim", "must be >= 0");
  c.Require(dropout >= 0 && dropout < 1, "dropout", "must be in [0, 1)");
  c.Require(drop_path >= 0 && drop_path < 1, "drop-path", "must be in [0, 1)");
  c.Throw();
}

ModelConfig ModelOptions::ToConfig(int in_channels, std::vector<int> head_classes,
                                   std::vector<std::string> head_names) const {
  ModelConfig c;
  c.arch = arch;
  c.in_channels = in_channels;
  c.head_classes = std::move(head_classes);
  c.head_names = std::move(head_names);
  c.small_stem = small_stem;
  c.width = width;
  c.embed_dim = embed_dim;
  c.dropout = dropout;
  c.drop_path = drop_path;
  c.Check();
  return c;
}

void AugmentOptions::Register(po::options_description& d, const std::string& p) {
  d.add_options()((p + "size").c_str(), po::value(&size)->default_value(size),
                  "input size: images are resized to size x size (0 = stored size)")(
      (p + "pad").c_str(), po::value(&pad)->default_value(pad), "zero padding before a random crop (0 = off)")(
      (p + "rrc").c_str(), po::value(&rrc)->default_value(rrc)->implicit_value(true), "random resized crop")(
      (p + "rrc-scale-min").c_str(), po::value(&rrc_scale_min)->default_value(rrc_scale_min),
      "random resized crop: smallest area fraction")(
      (p + "hflip").c_str(), po::value(&hflip)->default_value(hflip)->implicit_value(true),
      "random horizontal flip")(
      (p + "autoaugment").c_str(), po::value(&autoaugment)->default_value(autoaugment)->implicit_value(true),
      "AutoAugment, ImageNet policy");
}

void AugmentOptions::Check(const std::string& p) const {
  OptionChecker c(p);
  c.Require(size >= 0 && size <= 4096, "size", "must be in 0..4096");
  c.Require(pad >= 0 && pad <= 256, "pad", "must be in 0..256");
  c.Require(rrc_scale_min > 0 && rrc_scale_min <= 1, "rrc-scale-min", "must be in (0, 1]");
  c.Throw();
}

AugmentConfig AugmentOptions::Train() const {
  AugmentConfig a;
  a.out_size = size;
  a.pad = pad;
  a.random_resized_crop = rrc;
  a.rrc_scale_min = rrc_scale_min;
  a.hflip = hflip;
  a.autoaugment = autoaugment;
  return a;
}

AugmentConfig AugmentOptions::Eval() const {
  AugmentConfig a;
  a.out_size = size;
  return a;
}

void StageOptions::Register(po::options_description& d, const std::string& batch_help,
                            const std::string& smoothing_help) {
  augment.Register(d);
  optim.Register(d);
  loop.Register(d);
  const std::string batch_text =
      batch_help + " (per process when launched data-parallel by torchrun or srun: the global batch is N times it)";
  d.add_options()("batch-size", po::value(&batch_size)->default_value(batch_size), batch_text.c_str())(
      "label-smoothing", po::value(&label_smoothing)->default_value(label_smoothing), smoothing_help.c_str())(
      "train-split", po::value(&train_split)->default_value(train_split), "split to train on")(
      "val-split", po::value(&val_split)->default_value(val_split), "split that selects the best epoch");
}

void StageOptions::Check() const {
  OptionChecker c;
  c.Require(batch_size >= 1, "batch-size", "must be >= 1");
  c.Require(label_smoothing >= 0 && label_smoothing < 1, "label-smoothing", "must be in [0, 1)");
  c.Require(train_split != val_split, "val-split", "must differ from --train-split");
  c.Require(val_split != "test", "val-split", "model selection never looks at the test split");
  c.Throw();
  augment.Check();
  optim.Check();
  loop.Check();
}

LoaderOptions StageOptions::TrainLoader() const {
  LoaderOptions lo;
  lo.augment = augment.Train();
  lo.seed = loop.seed;
  lo.drop_last = !loop.keep_last_batch;
  lo.workers = loop.workers;
  lo.prefetch = loop.prefetch;
  if (dist::Active()) {  // data parallel: this process's shard of every epoch
    lo.shard_rank = dist::Rank();
    lo.shard_world = dist::World();
  }
  return lo;
}

HeadInfo StoreHead(const ImageStore& s, int size) {
  HeadInfo h;
  h.dataset = s.name();
  h.class_names = s.class_names();
  h.mean = s.mean();
  h.std = s.std();
  h.height = size > 0 ? size : s.height();
  h.width = size > 0 ? size : s.width();
  h.channels = s.channels();
  h.store_sha256 = s.Fingerprint();
  return h;
}

HeadInfo StoreHead(const ClipStore& s, int size, int frames) {
  HeadInfo h;
  h.dataset = s.name();
  h.class_names = s.class_names();
  h.mean = s.mean();
  h.std = s.std();
  h.height = size > 0 ? size : s.height();
  h.width = size > 0 ? size : s.width();
  h.channels = s.channels();
  h.frames = frames > 0 ? frames : s.frames();
  h.store_sha256 = s.Fingerprint();
  return h;
}

torch::Tensor CrossEntropy(const torch::Tensor& logits, const torch::Tensor& labels, double label_smoothing) {
  return torch::nn::functional::cross_entropy(
      logits.to(torch::kFloat32), labels,
      torch::nn::functional::CrossEntropyFuncOptions().label_smoothing(label_smoothing));
}

void AddDatasetCrossEntropy(StepOutput* out, const torch::Tensor& logits, const torch::Tensor& labels, double weight,
                            double label_smoothing, const std::string& dataset) {
  torch::Tensor l = CrossEntropy(logits, labels, label_smoothing);
  out->loss = out->loss + l * weight;
  out->terms["ce_" + dataset] = l.item<double>();
  out->correct += logits.argmax(1).eq(labels).sum().item<int64_t>();
}

nlohmann::json TrainResultJson(const std::string& checkpoint, const TrainResult& r, const nlohmann::json& extra) {
  nlohmann::json j{{"checkpoint", checkpoint},
                   {"best_epoch", r.best_epoch},
                   {"best_val_top1", r.best_metric},
                   {"epochs_run", r.epochs_run},
                   {"train_images_per_second", r.images_per_second}};
  for (auto it = extra.begin(); it != extra.end(); ++it) j[it.key()] = it.value();
  return j;
}

Stage::Stage(const StageOptions& opts, std::string out, Provenance provenance)
    : opts_(opts), out_(std::move(out)), provenance_(std::move(provenance)), device_(ParseDevice(opts.loop.device)) {
  // Launched by torchrun or srun: join the group; each process takes the GPU of its local rank.
  dist::Init(opts_.loop.dist, device_);
  if (dist::Active() && device_.is_cuda() && !device_.has_index())
    device_ = torch::Device(torch::kCUDA, static_cast<c10::DeviceIndex>(dist::LocalRank()));
  if (dist::Active())  // how the output was trained: --batch-size is per process
    provenance_.json["data_parallel"] = {{"world_size", dist::World()}, {"launcher", dist::Launcher()},
                                         {"sync_bn", dist::SyncBatchNorm()}};
  if (dist::IsMain()) RunFiles(out_).CheckWritable(opts_.loop.resume);  // before loading data
}

template <class Store>
std::vector<std::shared_ptr<const Store>> Stage::OpenAll(const std::vector<std::string>& paths, bool several) {
  if (paths.empty())
    throw UsageError(std::is_same<Store, ClipStore>::value ? "give at least one clip store" : "give at least one image store");
  std::vector<std::shared_ptr<const Store>> stores;
  for (size_t i = 0; i < paths.size(); ++i) {
    auto s = std::make_shared<Store>(Store::Open(paths[i]));
    provenance_.AddInputFingerprint(several ? Msg("store", i) : std::string("store"), paths[i], s->Fingerprint());
    for (size_t j = 0; j < i; ++j)
      if (stores[j]->name() == s->name()) throw Error(Msg(paths[i], ": dataset '", s->name(), "' given twice"));
    s->split(opts_.train_split);  // fail early if a split is absent
    s->split(opts_.val_split);
    stores.push_back(std::move(s));
  }
  return stores;
}

std::vector<std::shared_ptr<const ImageStore>> Stage::OpenStores(const std::vector<std::string>& paths, bool several) {
  return OpenAll<ImageStore>(paths, several);
}

std::vector<std::shared_ptr<const ClipStore>> Stage::OpenClipStores(const std::vector<std::string>& paths,
                                                                    bool several) {
  return OpenAll<ClipStore>(paths, several);
}

std::shared_ptr<const ImageStore> Stage::OpenStore(const std::string& path) { return OpenStores({path}, false).at(0); }

LoadedCheckpoint Stage::LoadInput(const std::string& key, const std::string& path) {
  LoadedCheckpoint ck = LoadCheckpoint(path);
  provenance_.AddInputFingerprint(key, path, ck.sha256);
  return ck;
}

std::unique_ptr<FeatureCache> Stage::OpenCache(const std::string& key, const std::string& path,
                                               const std::string& model_path, const std::string& model_sha256,
                                               const std::string& store_path, const std::string& store_fingerprint,
                                               const std::vector<std::string>& levels, int64_t memory_budget,
                                               const std::string& head_dataset, int head) {
  auto cache = std::make_unique<FeatureCache>(path);
  cache->CheckModel(model_path, model_sha256);
  cache->CheckStore(store_path, store_fingerprint);
  if (!head_dataset.empty()) cache->CheckHead(head_dataset, head);
  cache->RequireLevels(levels);
  bool mem = cache->Preload(opts_.train_split, levels, memory_budget);
  provenance_.AddInputFingerprint(key, path, Sha256File(path));
  MLOG(INFO) << path << ": " << JoinNames(levels) << (mem ? " loaded into memory" : " read from disk");
  return cache;
}

ClassificationMetrics Stage::Validate(Net& net, const HeadInfo& info, const std::shared_ptr<const ImageStore>& store,
                                      const AugmentConfig& eval) {
  Predictions p = Predict(net, info, store, store->split(opts_.val_split), eval, device_, 256, opts_.loop.workers);
  return ComputeMetrics(p.logits, p.labels, store->num_classes());
}

ClassificationMetrics Stage::Validate(Net& net, const HeadInfo& info, const std::shared_ptr<const ClipStore>& store,
                                      const AugmentConfig& eval) {
  // A clip is T images: validate in batches of the training batch, which is known to fit.
  Predictions p = Predict(net, info, store, store->split(opts_.val_split), eval, device_,
                          std::min<int64_t>(256, opts_.batch_size), opts_.loop.workers);
  return ComputeMetrics(p.logits, p.labels, store->num_classes());
}

nlohmann::json Stage::ValidateEach(Net& net, const std::vector<HeadInfo>& infos,
                                  const std::vector<std::shared_ptr<const ImageStore>>& stores,
                                  const AugmentConfig& eval) {
  return ValidateAll(net, infos, stores, eval);
}

nlohmann::json Stage::ValidateEach(Net& net, const std::vector<HeadInfo>& infos,
                                  const std::vector<std::shared_ptr<const ClipStore>>& stores,
                                  const AugmentConfig& eval) {
  return ValidateAll(net, infos, stores, eval);
}

template <class Store>
nlohmann::json Stage::ValidateAll(Net& net, const std::vector<HeadInfo>& infos,
                                  const std::vector<std::shared_ptr<const Store>>& stores, const AugmentConfig& eval) {
  nlohmann::json v;
  double sum = 0;
  for (size_t d = 0; d < stores.size(); ++d) {
    ClassificationMetrics cm = Validate(net, infos.at(d), stores[d], eval);
    v[stores[d]->name() + "_top1"] = cm.top1;
    v[stores[d]->name() + "_nll"] = cm.nll;
    sum += cm.top1;
  }
  v["metric"] = sum / static_cast<double>(std::max<size_t>(1, stores.size()));
  return v;
}

TrainResult Stage::Run(TrainTask& task, Loader& loader) {
  return Train(task, loader, opts_.optim, opts_.loop, out_, provenance_, device_);
}

}  // namespace mlfd
