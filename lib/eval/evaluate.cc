// evaluate implementation.
#include "eval/evaluate.h"

#include <algorithm>
#include <memory>

#include <sstream>

#include "data/clip_store.h"
#include "data/image_store.h"
#include "eval/metrics.h"
#include "eval/plot.h"
#include "io/h5.h"
#include "io/tensor_io.h"
#include "models/checkpoint.h"
#include "util/options.h"
#include "models/device.h"
#include "util/error.h"
#include "util/file_roles.h"
#include "util/fs.h"
#include "util/log.h"
#include "util/staged_files.h"

namespace mlfd {

namespace po = boost::program_options;

void EvaluateOptions::Register(po::options_description& d) {
  d.add_options()("split", po::value(&split)->default_value(split), "split to evaluate")(
      "val-split", po::value(&val_split)->default_value(val_split),
      "also record top-1 on this split if the store has it (\"\" = skip)")(
      "name", po::value(&name), "the model's name in the comparison report (teacher, joint_baseline, joint, kd, fitnet, mlfd, ...)")(
      "note", po::value(&note),
      "free text recorded as \"note\" in the JSON and shown by the report (e.g. an ablation variant's options)")(
      "dataset", po::value(&dataset), "dataset (head) to evaluate; default: the store's name")(
      "out", po::value(&out), "write the metrics JSON here (atomically) as well as to stdout")(
      "confusion-png", po::value(&confusion_png), "draw the confusion matrix to this PNG")(
      "curves-png", po::value(&curves_png), "draw the training curves (from the metrics file) to this PNG")(
      "logits-out", po::value(&logits_out), "write the split's logits (HDF5: logits, labels, indices)")(
      "metrics-file", po::value(&metrics_file), "per-epoch metrics (default <checkpoint stem>.metrics.jsonl)")(
      "device", po::value(&device)->default_value(device), "auto | cpu | cuda[:i]")(
      "batch-size", po::value(&batch_size)->default_value(batch_size), "images per forward pass")(
      "workers", po::value(&workers)->default_value(workers), "loader threads")(
      "clips", po::value(&clips)->default_value(clips),
      "video networks: average the logits of this many uniformly spaced temporal crops per video "
      "(1 = the centred crop)")(
      "crops", po::value(&crops)->default_value(crops),
      "spatial crops per image or clip, logits averaged: 1 = the resize to the model's size; 3 or 5 = "
      "the frames resized to 8/7 of it (short side) and cut at start, centre and end of the longer side "
      "(the diagonal of a square frame), or at the four corners and the centre");
}

void EvaluateOptions::Check() const {
  OptionChecker c;
  c.Require(!split.empty(), "split", "must not be empty");
  c.Require(batch_size >= 1, "batch-size", "must be >= 1");
  c.Require(workers >= 1, "workers", "must be >= 1");
  c.Require(clips >= 1 && clips <= 64, "clips", "must be in 1..64");
  c.Require(crops == 1 || crops == 3 || crops == 5, "crops", "must be 1, 3 or 5");
  c.Throw();
}

namespace {
// The accuracy and the loss curves of a training run (from its metrics file), as two PNGs.
std::pair<std::string, std::string> CurvesPngs(const std::string& metrics_path, const std::string& title) {
  std::istringstream in(ReadTextFile(metrics_path));
  std::string line;
  Series train_loss{"train loss", {}, {}}, train_acc{"train acc", {}, {}}, val_acc{"val (selection metric)", {}, {}};
  while (std::getline(in, line)) {
    if (line.empty()) continue;
    auto j = nlohmann::json::parse(line, nullptr, false);
    if (j.is_discarded() || !j.contains("epoch")) throw Error(Msg(metrics_path, ": malformed metrics line"));
    double e = j["epoch"].get<double>();
    if (j.contains("train_loss")) train_loss.x.push_back(e), train_loss.y.push_back(j["train_loss"].get<double>());
    if (j.contains("train_acc")) train_acc.x.push_back(e), train_acc.y.push_back(j["train_acc"].get<double>());
    if (j.contains("val_metric")) val_acc.x.push_back(e), val_acc.y.push_back(j["val_metric"].get<double>());
  }
  if (train_loss.x.empty()) throw Error(Msg(metrics_path, ": no epochs recorded"));
  return {LinesPng({train_acc, val_acc}, title + ": accuracy", "epoch", "top-1"),
          LinesPng({train_loss}, title + ": training loss", "epoch", "loss")};
}

Predictions PredictSplit(Net& net, const HeadInfo& info, const std::shared_ptr<const ImageStore>& store,
                         const std::string& split, const AugmentConfig& eval, torch::Device device,
                         const EvaluateOptions& opts) {
  return Predict(net, info, store, store->split(split), eval, device, opts.batch_size, opts.workers, opts.crops);
}
Predictions PredictSplit(Net& net, const HeadInfo& info, const std::shared_ptr<const ClipStore>& store,
                         const std::string& split, const AugmentConfig& eval, torch::Device device,
                         const EvaluateOptions& opts) {
  return Predict(net, info, store, store->split(split), eval, device, opts.batch_size, opts.workers, opts.clips,
                 opts.crops);
}

// The evaluation proper, on an image store or (video networks) a clip store.
template <class Store>
nlohmann::json EvaluateOn(const std::string& checkpoint, const std::string& store_path, LoadedCheckpoint& ck,
                          const EvaluateOptions& opts, const nlohmann::json& provenance, torch::Device device,
                          const std::string& metrics_file, const std::string& loss_png) {
  const bool curves = !opts.curves_png.empty();
  auto store = std::make_shared<const Store>(Store::Open(store_path));
  std::string ds = opts.dataset.empty() ? store->name() : opts.dataset;
  const HeadInfo& info = ck.meta.Dataset(ds, checkpoint);
  if (store->channels() != info.channels)
    throw Error(Msg(store_path, ": images have ", store->channels(), " channel(s) but ", checkpoint,
                    " was trained on ", info.channels));
  if (store->class_names() != info.class_names)
    throw Error(Msg(store_path, ": its ", store->num_classes(), " classes differ from the ",
                    info.class_names.size(), " classes of ", checkpoint, "'s head for '", ds, "'"));
  if (!info.store_sha256.empty() && info.store_sha256 != store->Fingerprint())
    MLOG(WARNING) << store_path << " is not the store " << checkpoint
                  << " was trained on (fingerprints differ); its splits may overlap the training data";
  AugmentConfig eval;
  eval.out_size = (info.height == store->height() && info.width == store->width()) ? 0 : info.height;
  PrepareFrozen(*ck.net);  // BatchNorm folded, channels-last: the network only runs frozen here
  Predictions p = PredictSplit(ck.net, info, store, opts.split, eval, device, opts);
  ClassificationMetrics m = ComputeMetrics(p.logits, p.labels, store->num_classes());
  nlohmann::json j = {{"checkpoint", checkpoint},
                      {"checkpoint_sha256", ck.sha256},
                      {"kind", ck.meta.kind},
                      {"arch", ck.meta.model.arch},
                      {"model", ck.meta.model.ToJson()},
                      {"epoch", ck.meta.epoch},
                      {"training", ck.meta.metrics},
                      {"store", store_path},
                      {"store_sha256", store->Fingerprint()},
                      {"dataset", ds},
                      {"split", opts.split},
                      {"metrics", m.ToJson(store->class_names())},
                      {"provenance", provenance}};
  if (!opts.name.empty()) j["name"] = opts.name;
  if (!opts.note.empty()) j["note"] = opts.note;
  if (opts.crops > 1) j["crops"] = opts.crops;
  if (info.frames > 0) {  // a video network: how its clips were cropped
    j["frames"] = info.frames;
    j["clips"] = opts.clips;
  }
  {  // the seed the checkpoint was trained with: the report pairs runs of one seed
    h5::File f = h5::File::Open(checkpoint);
    if (f.HasAttr("/", "provenance")) {
      nlohmann::json p = f.GetJsonAttr("/", "provenance");
      if (p.contains("options") && p["options"].contains("seed") && p["options"]["seed"].is_number_integer())
        j["seed"] = p["options"]["seed"];
    }
  }
  if (!opts.val_split.empty() && opts.val_split != opts.split) {
    auto names = store->split_names();
    if (std::find(names.begin(), names.end(), opts.val_split) != names.end()) {
      Predictions pv = PredictSplit(ck.net, info, store, opts.val_split, eval, device, opts);
      j["val_top1"] = ComputeMetrics(pv.logits, pv.labels, store->num_classes()).top1;
      j["val_split"] = opts.val_split;
    }
  }
  if (!opts.confusion_png.empty()) j["confusion_png"] = opts.confusion_png;
  if (curves) j["curves_png"] = opts.curves_png;
  // Every output goes to a temporary first; they are renamed into place together at the end, so
  // a failure leaves none of them (and the previous versions intact).
  StagedFiles staged;
  if (!opts.confusion_png.empty())
    staged.Add(opts.confusion_png,
               ConfusionMatrixPng(m.confusion, store->class_names(),
                                  Msg(ds, " ", opts.split, ": ", ck.meta.kind, " ", ck.meta.model.arch, ", top-1 ",
                                      static_cast<int>(m.top1 * 10000) / 100.0, "%")));
  if (curves) {
    auto [acc, loss] = CurvesPngs(metrics_file, Msg(ck.meta.kind, " ", ck.meta.model.arch));
    staged.Add(opts.curves_png, acc);
    staged.Add(loss_png, loss);
  }
  std::unique_ptr<h5::AtomicFile> logits;
  if (!opts.logits_out.empty()) {
    logits = std::make_unique<h5::AtomicFile>(opts.logits_out);
    h5::File f = h5::File::Create(*logits);
    f.SetAttr("/", "format", "mlfd.logits");
    f.SetAttr("/", "checkpoint_sha256", ck.sha256);
    f.SetAttr("/", "store_sha256", store->Fingerprint());
    f.SetAttr("/", "split", opts.split);
    WriteTensor(f, "logits", p.logits);
    WriteTensor(f, "labels", p.labels);
    const auto& rows = store->split(opts.split);
    f.Write("indices", h5::DType::kInt64, {static_cast<int64_t>(rows.size())}, rows.data());
    f.SetJsonAttr("/", "provenance", provenance);
    f.Close();
  }
  if (!opts.out.empty()) staged.Add(opts.out, j.dump(2) + "\n");
  if (logits) logits->Commit();
  staged.Commit();
  MLOG(INFO) << ds << " " << opts.split << ": top-1 " << m.top1 << ", top-5 " << m.top5 << ", NLL "
             << m.nll << ", ECE " << m.ece << " (" << m.count
             << (std::is_same<Store, ClipStore>::value ? Msg(" videos, ", opts.clips, " temporal x ", opts.crops, " spatial crop(s) each)") : std::string(" images)"));
  return j;
}

}  // namespace

nlohmann::json Evaluate(const std::string& checkpoint, const std::string& store_path,
                        const EvaluateOptions& opts, const nlohmann::json& provenance) {
  // What the command reads and writes, checked before any work: no output may replace an input or
  // another output, or a file of another kind.
  DeclareInput("checkpoint", checkpoint);
  DeclareInput("store", store_path);
  const bool curves = !opts.curves_png.empty();
  const std::string metrics_file =
      !curves ? "" : opts.metrics_file.empty() ? StripExtension(checkpoint) + ".metrics.jsonl" : opts.metrics_file;
  const std::string loss_png = curves ? StripExtension(opts.curves_png) + ".loss.png" : "";
  if (curves) DeclareInput("metrics file", metrics_file);
  if (!opts.out.empty()) CheckTextOutput("--out", opts.out, OutputKind::kJson);
  if (!opts.confusion_png.empty()) CheckTextOutput("--confusion-png", opts.confusion_png, OutputKind::kPng);
  if (curves) {
    CheckTextOutput("--curves-png", opts.curves_png, OutputKind::kPng);
    CheckTextOutput("the loss plot of --curves-png", loss_png, OutputKind::kPng, /*ours_only=*/true);
  }
  if (!opts.logits_out.empty()) h5::CheckOutputPath(opts.logits_out, "mlfd.logits");
  torch::Device device = ParseDevice(opts.device);
  LoadedCheckpoint ck = LoadCheckpoint(checkpoint);
  const bool video = IsVideoModel(ck.meta.model);
  if (opts.clips > 1 && !video)
    throw UsageError(Msg("--clips applies to video networks; ", checkpoint, " is ", ck.meta.model.arch));
  CheckStoreKind(store_path, ck.meta.model);
  if (video) return EvaluateOn<ClipStore>(checkpoint, store_path, ck, opts, provenance, device, metrics_file, loss_png);
  return EvaluateOn<ImageStore>(checkpoint, store_path, ck, opts, provenance, device, metrics_file, loss_png);
}

}  // namespace mlfd
