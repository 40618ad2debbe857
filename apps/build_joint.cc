// build_joint: assembles the MLFD joint teacher T* (stage 2) from stage-1 teachers.
#include <iostream>

#include "train/joint_stage.h"
#include "app/app.h"
#include "dist/dist.h"
#include "util/file_roles.h"
#include "util/error.h"
#include "util/provenance.h"

int main(int argc, char** argv) {
  return mlfd::RunMain("build_joint", [&] {
    mlfd::CommandLine cli(
        {"build_joint",
         "Assembles the joint teacher T* of MLFD from any number of stage-1 teachers (architectures may "
         "differ): each teacher's map at the fusion level goes through a trainable adaptor (BN + 1x1 conv "
         "to S channels); the concatenated adaptor outputs go through the fusion trunk (BN, GELU, 1x1 "
         "conv to Cout, BN, GELU) and optional stride-2 stages; heads (dropout + linear) predict each "
         "dataset. The teachers stay frozen and are referred to by path and sha256 (or embedded). Train "
         "it with finetune_joint.",
         "build_joint [options] --out <joint.h5> --teacher <t1.h5> --teacher <t2.h5> ...",
         "build_joint --level layer4 --adaptor-dim 256 --dropout 0.5 --out runs/demo/joint/init.h5 "
         "--teacher runs/demo/teachers/mnist.h5 --teacher runs/demo/teachers/fashion_mnist.h5"});
    mlfd::BuildJointOptions opts;
    opts.Register(cli.options());
    std::string out;
    std::vector<std::string> teachers;
    cli.options().add_options()("out", mlfd::po::value(&out), "output joint checkpoint (.h5)")(
        "teacher", mlfd::po::value(&teachers)->composing(), "stage-1 teacher checkpoint (repeat per teacher)");
    mlfd::dist::RequireSingleProcess("build_joint");
    if (!cli.Parse(argc, argv)) return 0;
    if (out.empty()) throw mlfd::UsageError("--out is required");
    if (teachers.empty()) throw mlfd::UsageError("give at least one --teacher");
    opts.Check();
    for (const auto& t : teachers) mlfd::DeclareInput("--teacher", t);  // before the output is checked
    std::cout << mlfd::BuildJoint(teachers, out, opts, mlfd::MakeProvenance(cli)).dump() << std::endl;
    return 0;
  });
}
