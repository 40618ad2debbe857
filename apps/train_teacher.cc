// train_teacher: stage 1 of MLFD (one teacher per dataset), or the joint-training baseline when
// given several image stores.
#include <iostream>

#include "train/teacher.h"
#include "util/file_roles.h"
#include "util/error.h"
#include "app/app.h"
#include "dist/dist.h"
#include "util/provenance.h"

int main(int argc, char** argv) {
  return mlfd::RunMain("train_teacher", [&] {
    mlfd::CommandLine cli(
        {"train_teacher",
         "Trains a backbone with the MLFD classifier head (pool -> embed -> linear) on the train "
         "split of an image store, validating every epoch; writes the best checkpoint (chosen on "
         "the validation split) to --out, the last one with optimiser state to <out>.last.h5 "
         "(for --resume) and per-epoch metrics to <out>.metrics.jsonl. With several stores it "
         "trains the joint-training baseline: one backbone on all datasets at once, with one head "
         "per dataset or one concatenated label space, every step drawing from every dataset. A video "
         "network (r3d_18, mc3_18, r2plus1d_18) trains the same way on clip stores, on random "
         "temporal crops of --clip-frames frames.",
         "train_teacher [options] --out <ckpt.h5> <store.h5> [<store2.h5> ...]",
         "train_teacher --arch resnet18 --small-stem --width 0.25 --embed-dim 128 --epochs 8 "
         "--optimizer sgd --lr 0.1 --pad 2 --out runs/demo/teachers/mnist.h5 runs/demo/data/mnist.h5"});
    mlfd::TeacherOptions opts;
    opts.Register(cli.options());
    std::string out;
    std::vector<std::string> stores;
    cli.options().add_options()("out", mlfd::po::value(&out), "output checkpoint (.h5)");
    cli.AddPositionalList("store", &stores, "image store(s) written by prepare_data (clip stores for a video --arch)");
    if (!cli.Parse(argc, argv)) return 0;
    if (out.empty()) throw mlfd::UsageError("--out is required");
    opts.Check();
    for (const auto& s : stores) mlfd::DeclareInput("store", s);  // before the outputs are checked
    mlfd::TrainResult r = mlfd::TrainTeacher(stores, out, opts, mlfd::MakeProvenance(cli));
    if (mlfd::dist::IsMain()) std::cout << mlfd::TrainResultJson(out, r).dump() << std::endl;
    return 0;
  });
}
