// extract_features: writes the multi-level feature cache of a frozen network over an image store.
#include <iostream>

#include "distill/extract_features.h"
#include "app/app.h"
#include "dist/dist.h"
#include "util/file_roles.h"
#include "util/options.h"
#include "util/error.h"
#include "util/provenance.h"

int main(int argc, char** argv) {
  return mlfd::RunMain("extract_features", [&] {
    mlfd::CommandLine cli(
        {"extract_features",
         "Runs a frozen network (a stage-1 teacher, or the joint teacher T*, whose levels include every "
         "teacher's fusion map) over the chosen splits of an image store, without augmentation, and "
         "writes the feature cache: per split and level an N x C x H x W dataset (float16 by default), "
         "chunked per sample, the logits of the store's dataset, labels, store rows, and the "
         "fingerprints of the model and the store, which every reader checks. Memory stays bounded: "
         "one batch at a time.",
         "extract_features [options] --levels <a,b,...> --out <features.h5> <model.h5> <store.h5>",
         "extract_features --levels fused,pool --out runs/demo/features/mnist.h5 runs/demo/joint/final.h5 "
         "runs/demo/data/mnist.h5"});
    mlfd::ExtractOptions opts;
    opts.Register(cli.options());
    std::string out, model, store;
    cli.options().add_options()("out", mlfd::po::value(&out), "output feature cache (.h5)");
    cli.AddPositional("model", &model, "checkpoint");
    cli.AddPositional("store", &store, "image store");
    bool print_levels = false;
    cli.options().add_options()(
        "print-levels", mlfd::po::value(&print_levels)->default_value(false)->implicit_value(true),
        "print the levels the cache would hold (comma-separated, one line) and exit without reading images "
        "or writing anything (the pipeline's check of derived cache levels)");
    mlfd::dist::RequireSingleProcess("extract_features");
    if (!cli.Parse(argc, argv)) return 0;
    opts.Check();
    if (print_levels) {
      std::cout << mlfd::JoinNames(mlfd::CacheLevels(model, store, opts)) << std::endl;
      return 0;
    }
    if (out.empty()) throw mlfd::UsageError("--out is required");
    mlfd::DeclareInput("model", model);  // before the output is checked
    mlfd::DeclareInput("store", store);
    std::cout << mlfd::ExtractFeatures(model, store, out, opts, mlfd::MakeProvenance(cli)).dump() << std::endl;
    return 0;
  });
}
