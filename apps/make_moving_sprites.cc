// make_moving_sprites: a synthetic action-recognition dataset of frame folders from an image store.
#include <iostream>

#include "app/app.h"
#include "data/moving_sprites.h"
#include "dist/dist.h"
#include "util/log.h"
#include "util/provenance.h"

int main(int argc, char** argv) {
  return mlfd::RunMain("make_moving_sprites", [&] {
    mlfd::CommandLine cli(
        {"make_moving_sprites",
         "Writes a synthetic action-recognition dataset: clips of one image of an image store (an MNIST "
         "digit, a Fashion-MNIST garment) moving over a black canvas, whose class is the motion pattern "
         "(translations, rotation on a circle, zoom). Clips of each split take their sprites from the "
         "store's split of that name. Output: frame folders <out>/<split>/<motion>/<video>/<frame>.png "
         "and moving_sprites.json, for prepare_data's frame-folder sources. The data is synthetic and "
         "says so in its name and marker file. Prints a JSON summary on stdout.",
         "make_moving_sprites [options] <store.h5> <out folder>",
         "make_moving_sprites --motions right,left,down,up --frames 16 runs/v/data/mnist.h5 runs/v/sprites/mnist"});
    mlfd::SpriteOptions opts;
    opts.Register(cli.options());
    std::string store, out;
    cli.AddPositional("store", &store, "image store whose images are the sprites");
    cli.AddPositional("out", &out, "output folder (new, or one this tool wrote: then replaced)");
    mlfd::dist::RequireSingleProcess("make_moving_sprites");
    if (!cli.Parse(argc, argv)) return 0;
    opts.Check();
    mlfd::SpriteSummary s = mlfd::MakeMovingSprites(store, out, opts, mlfd::MakeProvenance(cli).json.dump());
    std::cout << nlohmann::json{{"out", out}, {"clips", s.clips}, {"frames", s.frames}, {"splits", s.per_split},
                                {"motions", opts.motions}}
                     .dump()
              << std::endl;
    MLOG(INFO) << "wrote " << out << ": " << s.clips << " clips of " << opts.frames << " frames";
    return 0;
  });
}
