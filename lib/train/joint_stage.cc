// build_joint and finetune_joint.
#include "train/joint_stage.h"

#include <torch/torch.h>

#include <algorithm>
#include <cmath>
#include <set>
#include <type_traits>

#include "data/clip_store.h"
#include "data/image_store.h"
#include "io/h5.h"
#include "models/joint.h"
#include "util/options.h"
#include "util/error.h"
#include "util/log.h"
#include "util/provenance.h"

namespace mlfd {

namespace po = boost::program_options;

void BuildJointOptions::Register(po::options_description& d) {
  d.add_options()(
      "level",
      po::value<std::string>()->default_value("")->notifier([this](const std::string& s) { levels = SplitCsv(s); }),
      "fusion level: one name for every teacher, or one per teacher, comma-separated (default: each "
      "teacher's last map level)")("adaptor-dim", po::value(&adaptor_dim)->default_value(adaptor_dim),
                                   "S: channels of each adaptor's 1x1 conv (4096 in the paper's code)")(
      "cout", po::value(&cout)->default_value(cout),
      "channels of the fused levels (0 = teacher 0's channels at the level the last fused map stands for, "
      "i.e. the student level it is matched against when the student has teacher 0's architecture)")(
      "stages", po::value(&stages)->default_value(stages),
      "stride-2 3x3 conv stages after the trunk (fusing at an earlier, larger level); each is a level")(
      "size", po::value(&input_size)->default_value(input_size), "input size H = W (0 = teacher 0's training size)")(
      "fuse-pool", po::value(&fuse_pool)->default_value(fuse_pool),
      "none (fusion maps must have one size) | adaptive (average-pool every map to the smallest)")(
      "heads", po::value<std::string>()->default_value("")->notifier([this](const std::string& s) { heads = SplitCsv(s); }),
      "datasets with a head, comma-separated (default: every teacher's dataset, shared trunk; one "
      "dataset = the official code's one T* per target dataset)")(
      "dropout", po::value(&dropout)->default_value(dropout), "dropout before each head (paper: 0.5-0.9)")(
      "embed-teachers", po::value(&embed_teachers)->default_value(embed_teachers)->implicit_value(true),
      "copy the teachers' weights into the checkpoint instead of referring to them by path and sha256")(
      "residual-logits", po::value(&residual_logits)->default_value(residual_logits)->implicit_value(true),
      "a dataset's head adds its own teacher's logits and starts at zero, so T* starts as that teacher")(
      "seed", po::value(&seed)->default_value(seed), "initialisation seed");
}

void BuildJointOptions::Check() const {
  OptionChecker c;
  c.Require(adaptor_dim >= 1, "adaptor-dim", "must be >= 1");
  c.Require(cout >= 0, "cout", "must be >= 0");
  c.Require(stages >= 0 && stages <= 4, "stages", "must be in 0..4");
  c.Require(input_size >= 0 && input_size <= 4096, "size", "must be in 0..4096");
  c.Require(fuse_pool == "none" || fuse_pool == "adaptive", "fuse-pool", "must be none or adaptive");
  c.Require(dropout >= 0 && dropout < 1, "dropout", "must be in [0, 1)");
  c.Throw();
}


nlohmann::json BuildJoint(const std::vector<std::string>& teacher_paths, const std::string& out,
                          const BuildJointOptions& opts, Provenance provenance) {
  h5::CheckOutputPath(out, kCheckpointFormat);
  const size_t m = teacher_paths.size();
  if (m == 0) throw UsageError("give at least one --teacher");
  if (opts.levels.size() > 1 && opts.levels.size() != m)
    throw UsageError(Msg("--level: ", opts.levels.size(), " names for ", m, " teachers (give one, or one per teacher)"));
  std::vector<LoadedCheckpoint> teachers;
  for (size_t i = 0; i < m; ++i) {
    teachers.push_back(LoadCheckpoint(teacher_paths[i]));
    provenance.AddInputFingerprint(Msg("teacher", i), teacher_paths[i], teachers.back().sha256);
    if (teachers.back().meta.model.arch == "joint")
      throw Error(Msg(teacher_paths[i], ": is a joint teacher; build_joint takes stage-1 teachers"));
  }
  JointSpec spec;
  spec.adaptor_dim = opts.adaptor_dim;
  spec.stages = opts.stages;
  spec.embedded = false;  // embedded below, after the weights are in
  spec.residual_logits = opts.residual_logits;
  spec.input_size = opts.input_size > 0 ? opts.input_size : teachers[0].meta.datasets.at(0).height;
  // Video teachers: all of them, each trained on clips of one length, which T* then takes.
  const bool video = IsVideoModel(teachers[0].net->config());
  for (size_t i = 0; i < m; ++i) {
    const auto& c = teachers[i].net->config();
    if (IsVideoModel(c) != video)
      throw UsageError(Msg("--teacher: ", teacher_paths[0], " is ", video ? "a video" : "an image", " network and ",
                           teacher_paths[i], " (", c.arch, ") is not; a joint teacher fuses the maps of image ",
                           "networks or of video networks, not both"));
    const int f = teachers[i].meta.datasets.at(0).frames;
    if (video && f != teachers[0].meta.datasets.at(0).frames)
      throw Error(Msg("the video teachers were trained on clips of different lengths (", teacher_paths[0], ": ",
                      teachers[0].meta.datasets.at(0).frames, " frames, ", teacher_paths[i], ": ", f,
                      "); train them with one --clip-frames"));
  }
  if (video) spec.frames = teachers[0].meta.datasets.at(0).frames;
  std::vector<int64_t> map_frames;
  // Fusion levels and their sizes at the input size.
  std::string sizes;
  for (size_t i = 0; i < m; ++i) {
    Net& net = teachers[i].net;
    auto maps = net->MapLevels();
    std::string level = opts.levels.empty() ? maps.back() : opts.levels[opts.levels.size() == 1 ? 0 : i];
    if (std::find(maps.begin(), maps.end(), level) == maps.end())
      throw UsageError(Msg("--level: ", teacher_paths[i], " (", net->config().arch, ") has no map level '", level,
                           "' (valid: ", JoinNames(maps), ")"));
    net->eval();
    torch::NoGradGuard g;
    const int64_t c = net->config().in_channels;
    auto r = net->Forward(video ? torch::zeros({1, c, spec.frames, spec.input_size, spec.input_size})
                                : torch::zeros({1, c, spec.input_size, spec.input_size}),
                          {level});
    const auto& t = r.at(level);
    const int64_t h = video ? 3 : 2;  // the height's dimension
    spec.teacher_map_size.push_back(t.size(h));
    if (video) map_frames.push_back(t.size(2));
    sizes += Msg(sizes.empty() ? "" : "; ", "teacher ", i, " (", teacher_paths[i], ") ", level, ": ", t.size(1), " x ",
                 video ? Msg(t.size(2), " x ") : std::string(), t.size(h), " x ", t.size(h + 1));
    spec.teachers.push_back({teacher_paths[i], teachers[i].sha256, level, net->config(), teachers[i].meta.datasets});
  }
  int64_t lo = *std::min_element(spec.teacher_map_size.begin(), spec.teacher_map_size.end());
  int64_t hi = *std::max_element(spec.teacher_map_size.begin(), spec.teacher_map_size.end());
  if (video) {
    spec.fuse_frames = *std::min_element(map_frames.begin(), map_frames.end());
    if (*std::max_element(map_frames.begin(), map_frames.end()) != spec.fuse_frames) hi = lo + 1;  // sizes differ
  }
  if (lo != hi && opts.fuse_pool == "none")
    throw Error(Msg("the fusion maps differ in size at ", spec.input_size, " px", video ? Msg(", ", spec.frames, " frames") : "",
                    ": ", sizes, ". Choose levels of one size (--level) or pool them (--fuse-pool adaptive)"));
  spec.fuse_size = lo;
  MLOG(INFO) << "fusion maps at " << spec.input_size << " px" << (video ? Msg(", ", spec.frames, " frames") : "")
             << ": " << sizes;
  if (opts.cout > 0) {
    spec.cout = opts.cout;
  } else {
    auto maps = teachers[0].net->MapLevels();
    size_t k = static_cast<size_t>(std::find(maps.begin(), maps.end(), spec.teachers[0].level) - maps.begin());
    k = std::min(maps.size() - 1, k + static_cast<size_t>(opts.stages));
    spec.cout = teachers[0].net->LevelChannels().at(maps[k]);
    MLOG(INFO) << "--cout " << spec.cout << " (teacher 0's " << maps[k] << ")";
  }
  // Heads.
  std::vector<std::string> heads = opts.heads;
  if (heads.empty())
    for (const auto& t : spec.teachers)
      for (const auto& d : t.datasets)
        if (std::find(heads.begin(), heads.end(), d.dataset) == heads.end()) heads.push_back(d.dataset);
  std::vector<HeadInfo> infos;
  ModelConfig config;
  config.arch = "joint";
  config.embed_dim = 0;
  config.dropout = opts.dropout;
  config.width = 1.0;
  config.head_classes.clear();
  for (size_t h = 0; h < heads.size(); ++h) {
    const HeadInfo* found = nullptr;
    int own = -1;
    for (size_t i = 0; i < m; ++i) {
      for (const auto& d : spec.teachers[i].datasets)
        if (d.dataset == heads[h] && !found) found = &d;
      if (own < 0 && spec.teachers[i].datasets[0].dataset == heads[h]) own = static_cast<int>(i);
    }
    if (!found) {
      std::vector<std::string> known;
      for (const auto& t : spec.teachers)
        for (const auto& d : t.datasets) known.push_back(d.dataset);
      throw UsageError(Msg("--heads: no teacher was trained on '", heads[h], "' (they know: ", JoinNames(known), ")"));
    }
    if (opts.residual_logits && own < 0)
      throw UsageError(Msg("--residual-logits: no teacher has '", heads[h], "' as its (first) dataset"));
    HeadInfo info = *found;
    info.mean.assign(static_cast<size_t>(info.channels), 0.0);  // T* takes raw [0,1] pixels
    info.std.assign(static_cast<size_t>(info.channels), 1.0);
    info.height = info.width = static_cast<int>(spec.input_size);
    info.head = static_cast<int>(h);
    info.label_offset = 0;
    if (h > 0 && info.channels != infos[0].channels)
      throw Error(Msg("datasets '", heads[0], "' and '", heads[h], "' have ", infos[0].channels, " and ", info.channels,
                      " channels; one joint teacher takes one channel count (use --heads)"));
    infos.push_back(info);
    config.head_classes.push_back(static_cast<int>(info.class_names.size()));
    config.head_names.push_back(heads[h]);
    spec.own_teacher.push_back(own);
  }
  config.in_channels = infos[0].channels;
  config.joint = spec.ToJson();
  torch::manual_seed(opts.seed);
  Net net = BuildModel(config);
  if (opts.embed_teachers) net = EmbedTeachers(net);
  CheckpointMeta meta;
  meta.kind = "joint";
  meta.model = net->config();
  meta.datasets = infos;
  SaveCheckpoint(out, *net, meta, nullptr, provenance);
  int64_t trainable = 0;
  for (const auto& p : net->parameters())
    if (p.requires_grad()) trainable += p.numel();
  MLOG(INFO) << "wrote " << out << ": " << m << " teacher(s), heads " << JoinNames(heads) << ", fused "
             << spec.cout << " x " << (video ? Msg(spec.fuse_frames, " x ") : "") << spec.fuse_size << " x "
             << spec.fuse_size << ", " << trainable
             << " trainable parameters";
  return {{"checkpoint", out},
          {"heads", heads},
          {"levels", net->LevelNames()},
          {"fuse_size", spec.fuse_size},
          {"fuse_frames", spec.fuse_frames},
          {"cout", spec.cout},
          {"trainable_parameters", trainable}};
}

void FinetuneJointOptions::Register(po::options_description& d) {
  StageOptions::Register(d, "images per step", "label smoothing");
  d.add_options()(
      "sampling", po::value(&sampling)->default_value(sampling),
      "proportional (batches mix datasets by size) | equal (same share per dataset) | per_dataset (a full "
      "batch of every dataset each step)")(
      "teacher-maps", po::value(&teacher_maps)->default_value(teacher_maps),
      "online (teachers run on the augmented view) | cached (maps of clean images from --features)")(
      "features",
      po::value<std::string>()->default_value("")->notifier([this](const std::string& s) { features = SplitCsv(s); }),
      "cached: feature caches of the initial joint teacher, one per store in store order, comma-separated")(
      "unfreeze-last-stage", po::value(&unfreeze_last_stage)->default_value(unfreeze_last_stage)->implicit_value(true),
      "also train each teacher's fusion-level stage (embeds the teachers in the output)")(
      "unfreeze-lr-scale", po::value(&unfreeze_lr_scale)->default_value(unfreeze_lr_scale),
      "learning rate of the unfrozen stage relative to --lr")(
      "fit-rows", po::value(&fit_rows)->default_value(fit_rows),
      "all (every training row) | held-out (of each dataset only the fold its own teacher was trained without, "
      "train_teacher --fold: T* is fitted on the teachers' maps of images they never saw)")(
      "input-dropout", po::value(&input_dropout)->default_value(input_dropout),
      "drop each channel of the teachers' maps before the adaptors with this probability while training "
      "(Dropout2d; a remedy for maps of memorised images)")(
      "input-noise", po::value(&input_noise)->default_value(input_noise),
      "add Gaussian noise to the teachers' maps before the adaptors while training, this many times each "
      "map's standard deviation");
}

void FinetuneJointOptions::Check() const {
  OptionChecker c;
  c.Require(sampling == "proportional" || sampling == "equal" || sampling == "per_dataset", "sampling",
            "must be proportional, equal or per_dataset");
  c.Require(teacher_maps == "online" || teacher_maps == "cached", "teacher-maps", "must be online or cached");
  c.Require(teacher_maps == "online" || !features.empty(), "features", "--teacher-maps cached needs --features");
  c.Require(teacher_maps == "cached" || features.empty(), "features", "only with --teacher-maps cached");
  c.Require(!(unfreeze_last_stage && teacher_maps == "cached"), "unfreeze-last-stage",
            "cached maps cannot follow an unfrozen stage; use --teacher-maps online");
  c.Require(unfreeze_lr_scale > 0, "unfreeze-lr-scale", "must be > 0");
  c.Require(fit_rows == "all" || fit_rows == "held-out", "fit-rows", "must be all or held-out");
  c.Require(input_dropout >= 0 && input_dropout < 1, "input-dropout", "must be in [0, 1)");
  c.Require(input_noise >= 0, "input-noise", "must be >= 0");
  c.Throw();
  StageOptions::Check();
}

namespace {


// The training of T* on image stores, or on clip stores when its teachers are video networks.
template <class Store>
TrainResult FinetuneOn(Stage& stage, const std::string& init_path, const LoadedCheckpoint& init, Net& net,
                       const std::set<std::string>& unfrozen, const std::vector<std::string>& store_paths,
                       const std::vector<std::shared_ptr<const Store>>& stores, const FinetuneJointOptions& opts) {
  constexpr bool video = std::is_same<Store, ClipStore>::value;
  JointNetImpl& joint = AsJoint(net, init_path);
  const int m = static_cast<int>(store_paths.size());
  if (m == 0) throw UsageError(video ? "give at least one clip store" : "give at least one image store");
  if (!opts.features.empty() && static_cast<int>(opts.features.size()) != m)
    throw UsageError(Msg("--features: ", opts.features.size(), " caches for ", m, " stores (one per store, same order)"));
  const int64_t size = joint.spec().input_size;
  std::vector<HeadInfo> infos;
  std::vector<std::unique_ptr<FeatureCache>> caches;
  for (int d = 0; d < m; ++d) {
    const auto& path = store_paths[static_cast<size_t>(d)];
    const auto& s = *stores[static_cast<size_t>(d)];
    infos.push_back(init.meta.Dataset(s.name(), init_path));
    if (s.class_names() != infos.back().class_names)
      throw Error(Msg(path, ": its classes differ from those of ", init_path, "'s head for '", s.name(), "'"));
    if (opts.teacher_maps == "cached")
      caches.push_back(stage.OpenCache(Msg("features", d), opts.features[static_cast<size_t>(d)], init_path, init.sha256,
                                       path, s.Fingerprint(), joint.TeacherInputLevels(infos.back().head),
                                       int64_t{4} << 30));
  }
  // The rows T* is fitted on: all, or only those each dataset's own teacher never saw.
  std::vector<std::vector<int64_t>> fit_rows;
  for (int d = 0; d < m; ++d) {
    const auto& s = *stores[static_cast<size_t>(d)];
    const auto& train = s.split(opts.train_split);
    if (opts.fit_rows == "all") {
      fit_rows.push_back(train);
      continue;
    }
    const int own = joint.spec().own_teacher.at(static_cast<size_t>(infos[static_cast<size_t>(d)].head));
    if (own < 0)
      throw UsageError(Msg("--fit-rows held-out: ", init_path, " has no teacher of its own for '", s.name(), "'"));
    const JointTeacher& t = joint.spec().teachers.at(static_cast<size_t>(own));
    const HeadInfo* seen = nullptr;
    for (const auto& h : t.datasets)
      if (h.dataset == s.name()) seen = &h;
    if (!seen || !seen->train_fold.active())
      throw UsageError(Msg("--fit-rows held-out: the teacher of '", s.name(), "' (", t.path,
                           ") was trained on every training row; train it with --fold i/k"));
    fit_rows.push_back(seen->train_fold.Select(s.labels(), train, /*held_out=*/true));
    MLOG(INFO) << s.name() << ": fitting on the " << fit_rows.back().size() << " of " << train.size()
               << " training images its teacher never saw (fold " << seen->train_fold.ToString() << ")";
  }
  // Batch composition.
  std::vector<LoaderSource> sources;
  int64_t total = 0;
  for (const auto& rows : fit_rows) total += static_cast<int64_t>(rows.size());
  for (int d = 0; d < m; ++d) {
    const auto& s = stores[static_cast<size_t>(d)];
    int64_t n = static_cast<int64_t>(fit_rows[static_cast<size_t>(d)].size());
    int64_t b = opts.sampling == "per_dataset" ? opts.batch_size
                : opts.sampling == "equal"     ? std::max<int64_t>(1, opts.batch_size / m)
                                               : std::max<int64_t>(1, std::llround(double(opts.batch_size) * n / total));
    std::vector<double> zeros(static_cast<size_t>(s->channels()), 0.0), ones(static_cast<size_t>(s->channels()), 1.0);
    sources.push_back(MakeSource(s, fit_rows[static_cast<size_t>(d)], b, zeros, ones));
    MLOG(INFO) << s->name() << ": " << n << " training images, " << b << " per step";
  }
  LoaderOptions lo = opts.TrainLoader();
  lo.augment.out_size = stores[0]->height() == size ? 0 : static_cast<int>(size);
  for (const auto& s : stores)
    if ((s->height() == size) != (stores[0]->height() == size))
      throw Error(Msg("the stores have different ", video ? "frame" : "image",
                      " sizes; resize them to the joint teacher's with prepare_data"));
  lo.train_augment = opts.teacher_maps == "online";  // cached maps are of clean images
  lo.clip_frames = static_cast<int>(joint.spec().frames);  // video: every teacher's clip length
  Loader loader(sources, lo);

  // The first-class number: each dataset's own teacher on the validation split.
  AugmentConfig eval;
  eval.out_size = lo.augment.out_size;
  std::vector<double> teacher_val(static_cast<size_t>(m), -1.0);
  for (int d = 0; d < m; ++d) {
    int own = joint.spec().own_teacher.at(static_cast<size_t>(infos[static_cast<size_t>(d)].head));
    if (own < 0) continue;
    Net t = joint.teacher(own);
    const auto& s = stores[static_cast<size_t>(d)];
    teacher_val[static_cast<size_t>(d)] =
        stage.Validate(t, joint.spec().teachers[static_cast<size_t>(own)].datasets[0], s, eval).top1;
    MLOG(INFO) << s->name() << ": its own teacher's " << opts.val_split << " top-1 is "
               << teacher_val[static_cast<size_t>(d)] << " (T* has to beat this for the student to gain)";
  }

  const torch::Device device = stage.device();
  TrainTask task;
  task.model = net.get();
  if (!unfrozen.empty())
    task.lr_scale = [&](const std::string& name) { return unfrozen.count(name) ? opts.unfreeze_lr_scale : 1.0; };
  task.step = [&](const Batch& b) {
    StepOutput out;
    out.loss = torch::zeros({}, b.images.options().dtype(torch::kFloat32));
    const double n = static_cast<double>(b.images.size(0));
    for (int d = 0; d < m; ++d) {
      torch::Tensor idx = b.dataset.eq(d).nonzero().squeeze(1);
      if (idx.numel() == 0) continue;
      const int head = infos[static_cast<size_t>(d)].head;
      torch::Tensor z;
      if (opts.teacher_maps == "cached") {
        LevelMap in;
        torch::Tensor rows = b.indices.index_select(0, idx);
        for (const auto& l : joint.TeacherInputLevels(head))
          in[l] = caches[static_cast<size_t>(d)]->Read(opts.train_split, l, rows).to(device);
        z = joint.ForwardFromTeachers(in, {"logits"}, head).at("logits");
      } else {
        z = net->forward(b.images.index_select(0, idx), head);
      }
      AddDatasetCrossEntropy(&out, z, b.labels.index_select(0, idx), static_cast<double>(idx.numel()) / n,
                             opts.label_smoothing, stores[static_cast<size_t>(d)]->name());
    }
    out.count = b.images.size(0);
    return out;
  };
  task.validate = [&]() {
    nlohmann::json v = stage.ValidateEach(net, infos, stores, eval);
    for (int d = 0; d < m; ++d) {  // the student can only gain where T* beats the dataset's teacher
      const double t = teacher_val[static_cast<size_t>(d)];
      if (t < 0) continue;
      const std::string name = stores[static_cast<size_t>(d)]->name();
      v[name + "_teacher_top1"] = t;
      v[name + "_gain_over_teacher"] = v[name + "_top1"].get<double>() - t;
    }
    return v;
  };
  task.meta = [&]() {
    CheckpointMeta meta;
    meta.kind = "joint";
    meta.model = net->config();
    meta.datasets = init.meta.datasets;
    return meta;
  };
  TrainResult r = stage.Run(task, loader);
  for (const auto& rec : r.history)
    if (rec.value("epoch", -1) == r.best_epoch)
      for (const auto& s : stores)
        if (rec.contains("val_" + s->name() + "_teacher_top1")) {
          MLOG(INFO) << s->name() << ": T* " << opts.val_split << " top-1 " << rec["val_" + s->name() + "_top1"].template get<double>()
                     << " vs its own teacher " << rec["val_" + s->name() + "_teacher_top1"].template get<double>();
        }
  return r;
}

}  // namespace

TrainResult FinetuneJoint(const std::string& init_path, const std::vector<std::string>& store_paths,
                          const std::string& out, const FinetuneJointOptions& opts, Provenance provenance) {
  Stage stage(opts, out, std::move(provenance));
  LoadedCheckpoint init = stage.LoadInput("joint", init_path);
  if (init.meta.kind != "joint") throw Error(Msg(init_path, ": a '", init.meta.kind, "' checkpoint, not a joint teacher"));
  Net net = init.net;
  std::set<std::string> unfrozen;
  if (opts.unfreeze_last_stage) {
    net = EmbedTeachers(net);
    for (const auto& n : AsJoint(net, init_path).UnfreezeLastStage()) unfrozen.insert(n);
    MLOG(INFO) << "unfroze " << unfrozen.size() << " teacher tensors (lr x " << opts.unfreeze_lr_scale << ")";
  }
  JointNetImpl& joint = AsJoint(net, init_path);
  joint.SetInputRegularisation(opts.input_dropout, opts.input_noise);
  for (const auto& p : store_paths) CheckStoreKind(p, net->config());
  if (joint.video()) return FinetuneOn(stage, init_path, init, net, unfrozen, store_paths, stage.OpenClipStores(store_paths, true), opts);
  return FinetuneOn(stage, init_path, init, net, unfrozen, store_paths, stage.OpenStores(store_paths, true), opts);
}

}  // namespace mlfd
