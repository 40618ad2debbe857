// train_teacher implementation.
#include "train/teacher.h"

#include <torch/torch.h>

#include <numeric>

#include "data/clip_store.h"
#include "data/image_store.h"
#include "data/loader.h"
#include "util/options.h"
#include "util/error.h"
#include "util/log.h"
#include "util/provenance.h"

namespace mlfd {

namespace po = boost::program_options;

void TeacherOptions::Register(po::options_description& d) {
  model.Register(d);
  StageOptions::Register(d, "images per step (split equally over the datasets)", "label smoothing");
  d.add_options()("label-space", po::value(&label_space)->default_value(label_space),
                  "several stores: heads (one head per dataset, loss weights 1/m) | concat (one head, labels offset)")(
      "fold", po::value(&fold)->default_value(fold),
      "i/k: train without fold i of k of the training split (stratified by class), for a split fit: the "
      "checkpoint records the fold, and finetune_joint --fit-rows held-out fits T* on the rows this teacher never saw")(
      "fold-seed", po::value(&fold_seed)->default_value(fold_seed), "seed of the folds' draw (independent of --seed)")(
      "clip-frames", po::value(&clip_frames)->default_value(clip_frames),
      "video networks: train on a random temporal crop of this many consecutive stored frames per clip "
      "(0 = all); validation and evaluate use the centred crop of the same length");
}

void TeacherOptions::Check() const {
  OptionChecker c;
  c.Require(label_space == "heads" || label_space == "concat", "label-space", "must be heads or concat");
  c.Require(fold_seed < (uint64_t{1} << 62), "fold-seed", "must be below 2^62");
  c.Require(clip_frames >= 0 && clip_frames <= 4096, "clip-frames", "must be in 0..4096");
  c.Require(clip_frames == 0 || IsVideoArch(model.arch), "clip-frames",
            "applies to video architectures (r3d_18, mc3_18, r2plus1d_18), not " + model.arch);
  c.Throw();
  RowFold::Parse(fold, fold_seed);  // refuses a malformed --fold
  StageOptions::Check();
  model.Check();
}

namespace {

HeadInfo Head(const ImageStore& s, const TeacherOptions& opts) { return StoreHead(s, opts.augment.size); }
HeadInfo Head(const ClipStore& s, const TeacherOptions& opts) {
  return StoreHead(s, opts.augment.size, opts.clip_frames);
}

// The stage over image stores, or clip stores for a video network.
template <class Store>
TrainResult TrainOn(Stage& stage, const std::vector<std::string>& store_paths,
                    const std::vector<std::shared_ptr<const Store>>& stores, const TeacherOptions& opts) {
  for (size_t i = 1; i < stores.size(); ++i)
    if (stores[i]->channels() != stores[0]->channels())
      throw Error(Msg(store_paths[i], ": ", stores[i]->channels(), " channels, but ", store_paths[0], " has ",
                      stores[0]->channels(), "; one network needs one channel count"));
  const int m = static_cast<int>(stores.size());
  const bool concat = m > 1 && opts.label_space == "concat";
  std::vector<int> head_classes;
  std::vector<std::string> head_names;
  std::vector<HeadInfo> infos;
  int64_t offset = 0;
  for (int d = 0; d < m; ++d) {
    const auto& s = *stores[static_cast<size_t>(d)];
    HeadInfo h = Head(s, opts);
    h.head = concat ? 0 : d;
    h.train_fold = RowFold::Parse(opts.fold, opts.fold_seed);
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
  for (size_t d = 0; d < stores.size(); ++d) {
    const auto& s = stores[d];
    const RowFold& fold = infos[d].train_fold;
    std::vector<int64_t> rows = fold.Select(s->labels(), s->split(opts.train_split), /*held_out=*/false);
    if (fold.active())
      MLOG(INFO) << s->name() << ": training on " << rows.size() << " of " << s->split(opts.train_split).size()
                 << " training images (without fold " << fold.ToString() << ", fold seed " << fold.seed << ")";
    sources.push_back(MakeSource(s, std::move(rows), per));
  }
  LoaderOptions lo = opts.TrainLoader();
  lo.clip_frames = opts.clip_frames;
  Loader loader(sources, lo);
  MLOG(INFO) << "training on " << loader.samples_per_epoch() << " samples per epoch, "
             << loader.steps_per_epoch() << " steps of " << per * m << " images";

  torch::Tensor label_offsets = torch::empty({m}, torch::kInt64);  // concat: first label per dataset
  for (int d = 0; d < m; ++d) label_offsets[d] = infos[static_cast<size_t>(d)].label_offset;
  label_offsets = label_offsets.to(stage.device());
  const double ls = opts.label_smoothing;
  TrainTask task;
  task.model = net.get();
  task.step = [&](const Batch& b) {
    StepOutput out;
    if (m == 1 || concat) {
      torch::Tensor y = b.labels;
      if (concat) y = y + label_offsets.index_select(0, b.dataset);
      torch::Tensor z = net->forward(b.images, 0);
      out.loss = CrossEntropy(z, y, ls);
      out.correct = z.argmax(1).eq(y).sum().item<int64_t>();
    } else {  // one head per dataset, loss weight 1/m each
      torch::Tensor f = net->Features(b.images);
      out.loss = torch::zeros({}, f.options().dtype(torch::kFloat32));
      for (int d = 0; d < m; ++d) {
        torch::Tensor idx = b.dataset.eq(d).nonzero().squeeze(1);
        if (idx.numel() == 0) continue;
        AddDatasetCrossEntropy(&out, net->Head(f.index_select(0, idx), d), b.labels.index_select(0, idx), 1.0 / m, ls,
                               infos[static_cast<size_t>(d)].dataset);
      }
    }
    out.count = b.images.size(0);
    return out;
  };
  const AugmentConfig eval = opts.augment.Eval();
  task.validate = [&]() { return stage.ValidateEach(net, infos, stores, eval); };
  task.meta = [&]() {
    CheckpointMeta meta;
    meta.kind = m == 1 ? "teacher" : "joint_baseline";
    meta.model = config;
    meta.datasets = infos;
    return meta;
  };
  return stage.Run(task, loader);
}

}  // namespace

TrainResult TrainTeacher(const std::vector<std::string>& store_paths, const std::string& out,
                         const TeacherOptions& opts, Provenance provenance) {
  Stage stage(opts, out, std::move(provenance));
  for (const auto& p : store_paths) CheckStoreKind(p, opts.model.arch);
  const bool several = store_paths.size() > 1;
  if (IsVideoArch(opts.model.arch))
    return TrainOn(stage, store_paths, stage.OpenClipStores(store_paths, several), opts);
  return TrainOn(stage, store_paths, stage.OpenStores(store_paths, several), opts);
}

}  // namespace mlfd
