// evaluate: metrics of any checkpoint this project writes on one split of an image store (the
// head for the store's dataset is chosen automatically), as JSON, plus a confusion-matrix PNG and
// training-curve PNGs from the run's metrics file. A video network is evaluated on a clip store: the
// centred temporal crop of the frames it was trained on, or the mean logits of --clips k crops.
#pragma once

#include <boost/program_options.hpp>
#include <nlohmann/json.hpp>
#include <string>

namespace mlfd {

struct EvaluateOptions {
  std::string split = "test";
  std::string val_split = "val";  // also report top-1 on this split ("" = no), for the report
  std::string name;               // the model's role in the report (teacher, joint, mlfd, ...)
  std::string note;               // free text for the report (an ablation variant's options), "" = none
  std::string dataset;          // head to use; default: the store's dataset name
  std::string out;              // metrics JSON file (default: stdout only)
  std::string confusion_png;    // confusion matrix plot
  std::string curves_png;       // training curves (loss and accuracy per epoch)
  std::string logits_out;       // HDF5 with the split's logits, labels and store rows
  std::string metrics_file;     // per-epoch metrics; default <checkpoint stem>.metrics.jsonl
  std::string device = "auto";
  int64_t batch_size = 256;
  int workers = 2;
  int clips = 1;                // video networks: temporal crops per video, logits averaged (1 = centred)
  int crops = 1;                // spatial crops per image or clip, logits averaged (1, 3 or 5)
  void Register(boost::program_options::options_description& d);
  void Check() const;
};

nlohmann::json Evaluate(const std::string& checkpoint, const std::string& store,
                        const EvaluateOptions& opts, const nlohmann::json& provenance);

}  // namespace mlfd
