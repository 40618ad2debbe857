// evaluate: metrics of a checkpoint on one split of an image store.
#include <iostream>

#include "eval/evaluate.h"
#include "app/app.h"
#include "dist/dist.h"
#include "util/provenance.h"

int main(int argc, char** argv) {
  return mlfd::RunMain("evaluate", [&] {
    mlfd::CommandLine cli(
        {"evaluate",
         "Evaluates any checkpoint this project writes (teacher, joint baseline, joint teacher, "
         "student) on one split of an image store (a video network: of a clip store, on the centred "
         "temporal crop or the mean logits of --clips crops per video), choosing the head for the store's dataset: "
         "top-1, top-5, per-class accuracy, confusion matrix, NLL and expected calibration error "
         "as JSON on stdout (and --out); optionally a confusion-matrix PNG and training-curve PNGs "
         "drawn from the run's per-epoch metrics.",
         "evaluate [options] <checkpoint.h5> <store.h5>",
         "evaluate --split test --out runs/demo/eval/teacher_mnist.json --confusion-png "
         "runs/demo/eval/teacher_mnist.png runs/demo/teachers/mnist.h5 runs/demo/data/mnist.h5"});
    mlfd::EvaluateOptions opts;
    opts.Register(cli.options());
    std::string ckpt, store;
    cli.AddPositional("checkpoint", &ckpt, "checkpoint (.h5)");
    cli.AddPositional("store", &store, "image store (.h5), or clip store for a video network");
    mlfd::dist::RequireSingleProcess("evaluate");
    if (!cli.Parse(argc, argv)) return 0;
    opts.Check();
    mlfd::Provenance prov = mlfd::MakeProvenance(cli);
    nlohmann::json j = mlfd::Evaluate(ckpt, store, opts, prov.json);
    std::cout << j.dump() << std::endl;
    return 0;
  });
}
