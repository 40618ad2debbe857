// extract_features: a frozen network's levels over an image store, written as a feature cache.
#include "distill/extract_features.h"

#include <torch/torch.h>

#include <malloc.h>

#include <algorithm>
#include <fstream>

#include "data/clip_store.h"
#include "data/image_store.h"
#include "data/loader.h"
#include "distill/student.h"
#include "io/h5.h"
#include "io/tensor_io.h"
#include "models/checkpoint.h"
#include "models/device.h"
#include "models/joint.h"
#include "util/error.h"
#include "util/log.h"
#include "util/options.h"
#include "util/progress.h"
#include "util/provenance.h"

namespace mlfd {

namespace po = boost::program_options;

void ExtractOptions::Register(po::options_description& d) {
  d.add_options()("levels",
                  po::value<std::string>()->default_value("")->notifier([this](const std::string& s) { levels = SplitCsv(s); }),
                  "comma-separated level names to store (logits are always stored)")(
      "for-student", po::value(&for_students)->composing(),
      "distill_student options of a student that will read this cache, as one string (e.g. '--method fitnet "
      "--like teacher.h5'): adds the levels its loss reads from this model; repeatable")(
      "splits",
      po::value<std::string>()->default_value("train,val,test")->notifier([this](const std::string& s) { splits = SplitCsv(s); }),
      "comma-separated splits of the store")(
      "teacher-inputs", po::value(&teacher_inputs)->default_value(teacher_inputs)->implicit_value(true),
      "joint teacher: also store every teacher's fusion map and logits (for finetune_joint --teacher-maps cached)")(
      "dtype", po::value(&dtype)->default_value(dtype), "float16 | float32 (maps and vectors)")(
      "dataset", po::value(&dataset)->default_value(dataset), "head to use (default: the store's dataset)")(
      "device", po::value(&device)->default_value(device), "auto | cpu | cuda[:i]")(
      "batch-size", po::value(&batch_size)->default_value(batch_size), "images per forward pass")(
      "workers", po::value(&workers)->default_value(workers), "loader threads");
}

void ExtractOptions::Check() const {
  OptionChecker c;
  c.Require(!splits.empty(), "splits", "name at least one split");
  c.Require(dtype == "float16" || dtype == "float32", "dtype", "must be float16 or float32");
  c.Require(batch_size >= 1, "batch-size", "must be >= 1");
  c.Require(workers >= 1, "workers", "must be >= 1");
  c.Throw();
}

namespace {
template <class Store>
std::vector<std::string> StudentTeacherLevelsOf(const std::string& student_options, Net& teacher,
                                                const Store& store) {
  StudentOptions so;
  po::options_description d;
  so.Register(d);
  po::variables_map vm;
  try {
    po::store(po::command_line_parser(po::split_unix(student_options)).options(d).run(), vm);
    po::notify(vm);
  } catch (const po::error& e) {
    throw UsageError(Msg("--for-student '", student_options, "': ", e.what()));
  }
  try {
    so.Check();
    const MethodSpec& m = FindMethod(so.method);
    if (m.multi_teacher())
      throw UsageError(Msg("method ", m.name, " reads several teachers; give their caches' levels with --levels"));
    ModelConfig config = StudentConfig(so, store);
    constexpr bool clips = std::is_same<Store, ClipStore>::value;
    if (IsVideoArch(config.arch) != clips)
      throw UsageError(Msg("the student (", config.arch, ") is ", clips ? "an image" : "a video",
                           " network, but ", store.path(), " is ",
                           clips ? "a clip store" : "an image store"));
    Net student = BuildModel(config);
    std::vector<Net> teachers{teacher};
    StudentLoss loss = BuildStudentLoss(so, teachers, student);
    return loss.teacher_levels.at(0);
  } catch (const UsageError& e) {
    throw UsageError(Msg("--for-student '", student_options, "': ", e.what()));
  }
}
}  // namespace

std::vector<std::string> StudentTeacherLevels(const std::string& student_options, Net& teacher,
                                              const ImageStore& store) {
  return StudentTeacherLevelsOf(student_options, teacher, store);
}
std::vector<std::string> StudentTeacherLevels(const std::string& student_options, Net& teacher,
                                              const ClipStore& store) {
  return StudentTeacherLevelsOf(student_options, teacher, store);
}

namespace {
int64_t PeakRssBytes() {
  std::ifstream f("/proc/self/status");
  std::string line;
  while (std::getline(f, line))
    if (line.rfind("VmHWM:", 0) == 0) return std::stoll(line.substr(6)) * 1024;
  return 0;
}

// The stages keep freed blocks on the heap (RunMain's allocator setting: no mmap, no trimming), so
// a batch's activations are not faulted in again. Here each batch's transient blocks interleave
// with HDF5's long-lived ones (an index entry per written row), so freed space fragments and the
// heap grew with the number of rows: peak RSS 566-1,103 MB for 54,000 images against 277 MB for
// 6,000 (250-260 MB for both with glibc's defaults). Returning the free pages to the kernel every
// kTrimEveryRows rows bounds it, at the cost of faulting one batch's blocks in again per period.
constexpr int64_t kTrimEveryRows = 4096;
void ReturnFreeHeapPages() { malloc_trim(0); }
}  // namespace

namespace {
template <class Store>
std::vector<std::string> CacheLevelsOf(LoadedCheckpoint& ck, const std::string& model_path,
                                       const Store& store, const ExtractOptions& opts) {
  std::vector<std::string> levels = opts.levels;
  for (const auto& so : opts.for_students)
    for (const auto& l : StudentTeacherLevels(so, ck.net, store))
      if (std::find(levels.begin(), levels.end(), l) == levels.end()) levels.push_back(l);
  if (opts.teacher_inputs) {
    JointNetImpl& j = AsJoint(ck.net, model_path);
    for (int i = 0; i < j.num_teachers(); ++i)
      for (const auto& l : {j.TeacherLevel(i), j.TeacherLogitsLevel(i)})
        if (std::find(levels.begin(), levels.end(), l) == levels.end()) levels.push_back(l);
  }
  if (std::find(levels.begin(), levels.end(), "logits") == levels.end()) levels.push_back("logits");
  const auto valid = ck.net->LevelNames();
  for (const auto& l : levels)
    if (std::find(valid.begin(), valid.end(), l) == valid.end()) {
      std::string list;
      for (const auto& n : valid) list += (list.empty() ? "" : ", ") + n;
      throw UsageError(Msg("--levels: ", model_path, " has no level '", l, "' (valid: ", list, ")"));
    }
  return levels;
}
}  // namespace

std::vector<std::string> CacheLevels(LoadedCheckpoint& ck, const std::string& model_path,
                                     const ImageStore& store, const ExtractOptions& opts) {
  return CacheLevelsOf(ck, model_path, store, opts);
}
std::vector<std::string> CacheLevels(LoadedCheckpoint& ck, const std::string& model_path,
                                     const ClipStore& store, const ExtractOptions& opts) {
  return CacheLevelsOf(ck, model_path, store, opts);
}

std::vector<std::string> CacheLevels(const std::string& model_path, const std::string& store_path,
                                     const ExtractOptions& opts) {
  LoadedCheckpoint ck = LoadCheckpoint(model_path);
  CheckStoreKind(store_path, ck.meta.model);
  if (IsClipStore(store_path))
    return CacheLevels(ck, model_path, ClipStore::Open(store_path), opts);
  return CacheLevels(ck, model_path, ImageStore::Open(store_path), opts);
}

namespace {

// What the loader reads of `store`: its rows, as images (image stores) or as the centred temporal
// crop of `info.frames` frames (clip stores: the view evaluate scores).
LoaderSource Source(const std::shared_ptr<const ImageStore>& s, const std::vector<int64_t>& rows,
                    int64_t batch, const HeadInfo& info, LoaderOptions*) {
  return MakeSource(s, rows, batch, info.mean, info.std);
}
LoaderSource Source(const std::shared_ptr<const ClipStore>& s, const std::vector<int64_t>& rows,
                    int64_t batch, const HeadInfo& info, LoaderOptions* lo) {
  if (info.frames > s->frames())
    throw Error(
        Msg(s->path(), ": clips of ", s->frames(), " frames, but the model takes ", info.frames));
  lo->clip_frames = info.frames;
  lo->clip_views = 1;
  lo->clip_view = 0;
  return MakeSource(s, rows, batch, info.mean, info.std);
}

template <class Store>
nlohmann::json ExtractOn(const std::string& model_path, const std::string& store_path,
                         const std::string& out, LoadedCheckpoint& ck, const ExtractOptions& opts,
                         Provenance provenance, torch::Device device) {
  constexpr bool clips = std::is_same<Store, ClipStore>::value;
  auto store = std::make_shared<const Store>(Store::Open(store_path));
  provenance.AddInputFingerprint("model", model_path, ck.sha256);
  provenance.AddInputFingerprint("store", store_path, store->Fingerprint());
  const std::string ds = opts.dataset.empty() ? store->name() : opts.dataset;
  const HeadInfo& info = ck.meta.Dataset(ds, model_path);
  if (store->channels() != info.channels)
    throw Error(Msg(store_path, ": images have ", store->channels(), " channel(s) but ", model_path,
                    " was trained on ", info.channels));
  const std::vector<std::string> levels = CacheLevels(ck, model_path, *store, opts);
  for (const auto& s : opts.splits) store->split(s);  // fail early on an unknown split

  h5::AtomicFile atomic(out);
  h5::File f = h5::File::Create(atomic);
  f.SetAttr("/", "format", kFeatureFormat);
  f.SetAttr("/", "format_version", static_cast<int64_t>(kFeatureVersion));
  f.SetAttr("/", "model_path", model_path);
  f.SetAttr("/", "model_sha256", ck.sha256);
  f.SetAttr("/", "store_path", store_path);
  f.SetAttr("/", "store_sha256", store->Fingerprint());
  f.SetAttr("/", "dataset", ds);
  f.SetAttr("/", "head", static_cast<int64_t>(info.head));
  f.SetJsonAttr("/", "levels", levels);
  f.SetAttr("/", "dtype", opts.dtype);
  f.SetJsonAttr("/", "model", ck.meta.model.ToJson());
  if (clips)  // the temporal crop every clip was cut to (its centred crop; 0 = all stored frames)
    f.SetAttr("/", "frames", static_cast<int64_t>(info.frames));

  Net net = ck.net;
  net->to(device);
  PrepareFrozen(*net);  // BatchNorm folded, channels-last (the writes below make rows contiguous)
  torch::NoGradGuard no_grad;
  const torch::ScalarType map_type = opts.dtype == "float16" ? torch::kFloat16 : torch::kFloat32;
  const int64_t k = static_cast<int64_t>(info.class_names.size());
  AugmentConfig eval;
  eval.out_size = (info.height == store->height() && info.width == store->width()) ? 0 : info.height;
  nlohmann::json summary = {{"levels", nlohmann::json::object()}};
  int64_t total_bytes = 0, total_images = 0;
  Progress progress(
      "extracting features",
      [&] {
        int64_t n = 0;
        for (const auto& s : opts.splits) n += static_cast<int64_t>(store->split(s).size());
        return n;
      }(),
      clips ? "clips" : "images");
  for (const auto& split : opts.splits) {
    const auto& rows = store->split(split);
    const int64_t n = static_cast<int64_t>(rows.size());
    f.Write(split + "/indices", h5::DType::kInt64, {n}, rows.data());
    std::vector<int64_t> labels;
    for (int64_t r : rows) labels.push_back(store->labels()[static_cast<size_t>(r)]);
    f.Write(split + "/labels", h5::DType::kInt64, {n}, labels.data());
    if (n == 0) continue;
    LoaderOptions lo;
    lo.shuffle = false;
    lo.train_augment = false;
    lo.augment = eval;
    lo.workers = opts.workers;
    lo.cache_in_memory = false;  // bounded memory: rows are read batch by batch
    LoaderSource src = Source(store, rows, opts.batch_size, info, &lo);
    Loader loader({src}, lo);
    loader.StartEpoch(0);
    Batch b;
    int64_t row = 0, since_trim = 0;
    bool created = false;
    while (loader.Next(&b)) {
      LevelMap r = net->Forward(b.images.to(device), levels, info.head);
      r["logits"] = r.at("logits").narrow(1, info.label_offset, k);
      for (const auto& l : levels) {
        torch::Tensor t = r.at(l).to(torch::kCPU, l == "logits" ? torch::kFloat32 : map_type).contiguous();
        if (!created) {
          h5::Shape shape{n};
          for (int64_t i = 1; i < t.dim(); ++i) shape.push_back(t.size(i));
          h5::DatasetOptions o;
          o.chunk_rows = 1;  // one chunk per sample: a batch of rows is one read per sample
          f.CreateDataset(split + "/" + l, ToH5(t.scalar_type()), shape, o);
          summary["levels"][l] = shape;
        }
        if (!torch::isfinite(t).all().item<bool>())
          throw Error(Msg(model_path, ": non-finite values at level ", l, " (", split, " rows ", row, "..",
                          row + t.size(0) - 1, ")", l == "logits" ? "" : "; try --dtype float32"));
        WriteTensorRows(f, split + "/" + l, row, t);
        total_bytes += t.numel() * static_cast<int64_t>(t.element_size());
      }
      created = true;
      row += b.images.size(0);
      since_trim += b.images.size(0);
      if (since_trim >= kTrimEveryRows) {
        ReturnFreeHeapPages();
        since_trim = 0;
      }
      total_images += b.images.size(0);
      progress.Add(b.images.size(0));
    }
  }
  progress.Finish();
  WriteProvenance(f, provenance);
  f.Close();
  atomic.Commit();
  summary["out"] = out;
  summary["images"] = total_images;
  summary["feature_bytes"] = total_bytes;
  summary["seconds"] = progress.ElapsedSeconds();
  summary["peak_rss_bytes"] = PeakRssBytes();
  MLOG(INFO) << "wrote " << out << ": " << total_images << (clips ? " clips, " : " images, ")
             << total_bytes / 1e6 << " MB of features, peak RSS " << PeakRssBytes() / 1e6 << " MB";
  return summary;
}

}  // namespace

nlohmann::json ExtractFeatures(const std::string& model_path, const std::string& store_path,
                               const std::string& out, const ExtractOptions& opts,
                               Provenance provenance) {
  h5::CheckOutputPath(out, kFeatureFormat);
  torch::Device device = ParseDevice(opts.device);
  LoadedCheckpoint ck = LoadCheckpoint(model_path);
  CheckStoreKind(store_path, ck.meta.model);
  if (IsClipStore(store_path))
    return ExtractOn<ClipStore>(model_path, store_path, out, ck, opts, std::move(provenance),
                                device);
  return ExtractOn<ImageStore>(model_path, store_path, out, ck, opts, std::move(provenance),
                               device);
}

}  // namespace mlfd
