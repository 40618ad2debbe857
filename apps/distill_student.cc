// distill_student: stage 3 of MLFD, and the KD / FitNet baselines.
#include <iostream>

#include "distill/student.h"
#include "app/app.h"
#include "dist/dist.h"
#include "util/file_roles.h"
#include "util/error.h"
#include "util/provenance.h"

int main(int argc, char** argv) {
  return mlfd::RunMain("distill_student", [&] {
    mlfd::CommandLine cli(
        {"distill_student",
         "Trains a randomly initialised student for one dataset against frozen teachers: the joint "
         "teacher T* (MLFD: soft targets, MSE at the fused levels and the dense level, labels), a "
         "stage-1 teacher (the KD and FitNet baselines), or several teachers (UNIC, AMTML-KD, uniform "
         "multi-teacher KD, FEED). Teacher signals come from the teachers run online on the same "
         "augmented view, or from their feature caches of clean images. Regressors, projectors and "
         "transforms are training-only: --out is a plain checkpoint of the student's architecture, "
         "read by evaluate and the PyTorch tools.",
         "distill_student [options] --teacher <teacher.h5> [--teacher <teacher.h5> ...] --out <student.h5> <store.h5>",
         "distill_student --method mlfd --like runs/demo/teachers/mnist.h5 --teacher runs/demo/joint/final.h5 "
         "--epochs 8 --out runs/demo/students/mlfd_mnist.h5 runs/demo/data/mnist.h5"});
    mlfd::StudentOptions opts;
    opts.Register(cli.options());
    std::string out, store;
    std::vector<std::string> teachers;
    cli.options().add_options()("out", mlfd::po::value(&out), "output student checkpoint (.h5)")(
        "teacher", mlfd::po::value(&teachers)->composing(),
        "teacher checkpoint (joint teacher or stage-1 teacher); repeat for the multi-teacher methods");
    cli.AddPositional("store", &store, "image store of the student's dataset");
    if (!cli.Parse(argc, argv)) return 0;
    if (out.empty()) throw mlfd::UsageError("--out is required");
    if (teachers.empty() && opts.method != "ce") throw mlfd::UsageError("--teacher is required");
    opts.Check();
    // The inputs, before the outputs are checked.
    for (const auto& t : teachers) mlfd::DeclareInput("--teacher", t);
    if (!opts.like.empty()) mlfd::DeclareInput("--like", opts.like);
    for (const auto& f : opts.features) mlfd::DeclareInput("--features", f);
    mlfd::DeclareInput("store", store);
    mlfd::TrainResult r = mlfd::DistillStudent(teachers, store, out, opts, mlfd::MakeProvenance(cli));
    if (mlfd::dist::IsMain()) std::cout << mlfd::TrainResultJson(out, r, {{"method", opts.method}}).dump() << std::endl;
    return 0;
  });
}
