// finetune_joint: trains the joint teacher T*'s adaptors, fusion trunk and heads (stage 2).
#include <iostream>

#include "train/joint_stage.h"
#include "app/app.h"
#include "dist/dist.h"
#include "util/file_roles.h"
#include "util/error.h"
#include "util/provenance.h"

int main(int argc, char** argv) {
  return mlfd::RunMain("finetune_joint", [&] {
    mlfd::CommandLine cli(
        {"finetune_joint",
         "Trains the joint teacher T* built by build_joint on samples of every dataset of the group, each "
         "sample's loss (cross-entropy, label smoothing) on its own dataset's head, with the teachers "
         "frozen (optionally their last stage unfrozen). Teacher maps are computed online on the "
         "augmented view, or read from feature caches of clean images (--teacher-maps cached, as the "
         "official code). Validation every epoch reports T* next to each dataset's own teacher; the best "
         "epoch (mean validation top-1) goes to --out.",
         "finetune_joint [options] --out <final.h5> <init.h5> <store1.h5> [<store2.h5> ...]",
         "finetune_joint --epochs 4 --optimizer adam --lr 1e-3 --out runs/demo/joint/final.h5 "
         "runs/demo/joint/init.h5 runs/demo/data/mnist.h5 runs/demo/data/fashion_mnist.h5"});
    mlfd::FinetuneJointOptions opts;
    opts.Register(cli.options());
    std::string out, init;
    std::vector<std::string> stores;
    cli.options().add_options()("out", mlfd::po::value(&out), "output checkpoint (.h5)");
    cli.AddPositional("joint", &init, "initial joint teacher (build_joint)");
    cli.AddPositionalList("store", &stores, "image store(s), one per dataset to train on");
    if (!cli.Parse(argc, argv)) return 0;
    if (out.empty()) throw mlfd::UsageError("--out is required");
    opts.Check();
    // The inputs, before the outputs are checked.
    mlfd::DeclareInput("the initial joint teacher", init);
    for (const auto& s : stores) mlfd::DeclareInput("store", s);
    for (const auto& f : opts.features) mlfd::DeclareInput("--features", f);
    mlfd::TrainResult r = mlfd::FinetuneJoint(init, stores, out, opts, mlfd::MakeProvenance(cli));
    if (mlfd::dist::IsMain()) std::cout << mlfd::TrainResultJson(out, r).dump() << std::endl;
    return 0;
  });
}
