// train_teacher implementation.
#include "train/teacher.h"

#include <torch/torch.h>

#include <numeric>

#include "data/image_store.h"
#include "data/loader.h"
#include "eval/metrics.h"
#include "util/options.h"
#include "models/device.h"
#include "util/error.h"
#include "util/log.h"

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

void TeacherOptions::Register(po::options_description& d) {
  model.Register(d);
  augment.Register(d);
  optim.Register(d);
  loop.Register(d);
  d.add_options()("batch-size", po::value(&batch_size)->default_value(batch_size),
                  "images per step (split equally over the datasets)")(
      "label-smoothing", po::value(&label_smoothing)->default_value(label_smoothing), "label smoothing")(
      "label-space", po::value(&label_space)->default_value(label_space),
      "several stores: heads (one head per dataset, loss weights 1/m) | concat (one head, labels offset)")(
      "train-split", po::value(&train_split)->default_value(train_split), "split to train on")(
      "val-split", po::value(&val_split)->default_value(val_split), "split that selects the best epoch");
}

void TeacherOptions::Check() const {
  OptionChecker c;
  c.Require(batch_size >= 1, "batch-size", "must be >= 1");
  c.Require(label_smoothing >= 0 && label_smoothing < 1, "label-smoothing", "must be in [0, 1)");
  c.Require(label_space == "heads" || label_space == "concat", "label-space", "must be heads or concat");
  c.Require(train_split != val_split, "val-split", "must differ from --train-split");
  c.Require(val_split != "test", "val-split", "model selection never looks at the test split");
  c.Throw();
  model.Check();
  augment.Check();
  optim.Check();
  loop.Check();
}

TrainResult TrainTeacher(const std::vector<std::string>& store_paths, const std::string& out,
                         const TeacherOptions& opts, Provenance provenance) {
  torch::Device device = ParseDevice(opts.loop.device);
  RunFiles(out).CheckWritable(opts.loop.resume);  // before loading data
  std::vector<std::shared_ptr<const ImageStore>> stores;
  for (size_t i = 0; i < store_paths.size(); ++i) {
    stores.push_back(std::make_shared<ImageStore>(ImageStore::Open(store_paths[i])));
    provenance.AddInputFingerprint(Msg("store", i), store_paths[i], stores.back()->Fingerprint());
    for (size_t j = 0; j < i; ++j)
      if (stores[j]->name() == stores[i]->name())
        throw Error(Msg(store_paths[i], ": dataset '", stores[i]->name(), "' given twice"));
    if (stores[i]->channels() != stores[0]->channels())
      throw Error(Msg(store_paths[i], ": ", stores[i]->channels(), " channels, but ", store_paths[0],
                      " has ", stores[0]->channels(), "; one network needs one channel count"));
  }
  const int m = static_cast<int>(stores.size());
  const bool concat = m > 1 && opts.label_space == "concat";
  std::vector<int> head_classes;
  std::vector<std::string> head_names;
  std::vector<HeadInfo> infos;
  int64_t offset = 0;
  for (int d = 0; d < m; ++d) {
    const auto& s = *stores[static_cast<size_t>(d)];
    HeadInfo h;
    h.dataset = s.name();
    h.class_names = s.class_names();
    h.mean = s.mean();
    h.std = s.std();
    h.height = opts.augment.size > 0 ? opts.augment.size : s.height();
    h.width = opts.augment.size > 0 ? opts.augment.size : s.width();
    h.channels = s.channels();
    h.store_sha256 = s.Fingerprint();
    h.head = concat ? 0 : d;
    h.label_offset = concat ? offset : 0;
    offset += s.num_classes();
    if (!concat) {
      head_classes.push_back(s.num_classes());
      head_names.push_back(s.name());
    }
    infos.push_back(h);
  }
  if (concat) {
    head_classes = {static_cast<int>(offset)};
    head_names = {"concat"};
  }
  ModelConfig config = opts.model.ToConfig(stores[0]->channels(), head_classes, head_names);
  torch::manual_seed(opts.loop.seed);
  Net net = BuildModel(config);
  MLOG(INFO) << "model " << config.ToJson().dump() << ": "
             << [&] { int64_t n = 0; for (auto& p : net->parameters()) n += p.numel(); return n; }()
             << " parameters";

  std::vector<LoaderSource> sources;
  int64_t per = std::max<int64_t>(1, opts.batch_size / m);
  for (int d = 0; d < m; ++d)
    sources.push_back({stores[static_cast<size_t>(d)], stores[static_cast<size_t>(d)]->split(opts.train_split), per});
  for (int d = 0; d < m; ++d) stores[static_cast<size_t>(d)]->split(opts.val_split);  // fail early if absent
  LoaderOptions lo;
  lo.augment = opts.augment.Train();
  lo.seed = opts.loop.seed;
  lo.drop_last = !opts.loop.keep_last_batch;
  lo.workers = opts.loop.workers;
  lo.prefetch = opts.loop.prefetch;
  Loader loader(sources, lo);
  MLOG(INFO) << "training on " << loader.samples_per_epoch() << " samples per epoch, "
             << loader.steps_per_epoch() << " steps of " << per * m << " images";

  auto ce = [&](const torch::Tensor& z, const torch::Tensor& y) {
    return torch::nn::functional::cross_entropy(
        z.to(torch::kFloat32), y, torch::nn::functional::CrossEntropyFuncOptions().label_smoothing(opts.label_smoothing));
  };
  torch::Tensor label_offsets = torch::empty({m}, torch::kInt64);  // concat: first label per dataset
  for (int d = 0; d < m; ++d) label_offsets[d] = infos[static_cast<size_t>(d)].label_offset;
  label_offsets = label_offsets.to(device);
  TrainTask task;
  task.model = net.get();
  task.step = [&](const Batch& b) {
    StepOutput out;
    if (m == 1 || concat) {
      torch::Tensor y = b.labels;
      if (concat) y = y + label_offsets.index_select(0, b.dataset);
      torch::Tensor z = net->forward(b.images, 0);
      out.loss = ce(z, y);
      out.correct = z.argmax(1).eq(y).sum().item<int64_t>();
    } else {  // one head per dataset, loss weight 1/m each
      torch::Tensor f = net->Features(b.images);
      out.loss = torch::zeros({}, f.options().dtype(torch::kFloat32));
      for (int d = 0; d < m; ++d) {
        torch::Tensor idx = b.dataset.eq(d).nonzero().squeeze(1);
        if (idx.numel() == 0) continue;
        torch::Tensor z = net->Head(f.index_select(0, idx), d);
        torch::Tensor y = b.labels.index_select(0, idx);
        torch::Tensor l = ce(z, y);
        out.loss = out.loss + l / m;
        out.terms["ce_" + infos[static_cast<size_t>(d)].dataset] = l.item<double>();
        out.correct += z.argmax(1).eq(y).sum().item<int64_t>();
      }
    }
    out.count = b.images.size(0);
    return out;
  };
  task.validate = [&]() {
    nlohmann::json v;
    double sum = 0;
    for (int d = 0; d < m; ++d) {
      const auto& s = stores[static_cast<size_t>(d)];
      Predictions p = Predict(net, infos[static_cast<size_t>(d)], s, s->split(opts.val_split),
                              opts.augment.Eval(), device, 256, opts.loop.workers);
      ClassificationMetrics cm = ComputeMetrics(p.logits, p.labels, s->num_classes());
      v[s->name() + "_top1"] = cm.top1;
      v[s->name() + "_nll"] = cm.nll;
      sum += cm.top1;
    }
    v["metric"] = sum / m;
    return v;
  };
  task.meta = [&]() {
    CheckpointMeta meta;
    meta.kind = m == 1 ? "teacher" : "joint_baseline";
    meta.model = config;
    meta.datasets = infos;
    return meta;
  };
  return Train(task, loader, opts.optim, opts.loop, out, provenance, device);
}

}  // namespace mlfd
