// bench_forward_speed: forward throughput of a frozen network (what a teacher's online signals,
// extract_features and evaluate run) as it ran before and with each inference lever added in turn:
// inference mode, BatchNorm folded into the convolutions (FoldBatchNorm), channels-last weights and
// inputs. Prints a Markdown table: images/s, the ratio to the first row, and the largest absolute
// difference of the logits and of every backbone map from the unfolded network's.
//   build/bin/forward_speed --batch-size 256 --batches 20 runs/bench/seed1/teachers/fashion_tops.h5
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <string>
#include <vector>

#include <torch/torch.h>

#include "app/app.h"
#include "models/checkpoint.h"
#include "util/error.h"

namespace {

using Clock = std::chrono::steady_clock;

struct Mode {
  std::string name;
  bool inference = false, fold = false, channels_last = false;
};

}  // namespace

int main(int argc, char** argv) {
  return mlfd::RunMain("forward_speed", [&] {
    mlfd::CommandLine cli({"forward_speed",
                           "Measures the forward throughput of a frozen network as the stages ran it before "
                           "(evaluation mode, no gradients) and with inference mode, folded BatchNorm and "
                           "channels-last added in turn; checks every variant's outputs against the first.",
                           "forward_speed [options] <model.h5>",
                           "forward_speed --batch-size 256 --batches 20 runs/bench/seed1/teachers/fashion_tops.h5"});
    std::string path;
    int64_t batch = 256, batches = 20, repeats = 3;
    cli.options().add_options()("batch-size", mlfd::po::value(&batch)->default_value(batch), "images per forward pass")(
        "batches", mlfd::po::value(&batches)->default_value(batches), "timed forward passes per repeat")(
        "repeats", mlfd::po::value(&repeats)->default_value(repeats), "repeats of each mode (the best is shown)");
    cli.AddPositional("model", &path, "checkpoint");
    if (!cli.Parse(argc, argv)) return 0;
    if (batch < 1 || batches < 1 || repeats < 1) throw mlfd::UsageError("--batch-size, --batches and --repeats must be >= 1");
    mlfd::LoadedCheckpoint probe = mlfd::LoadCheckpoint(path);
    const auto& info = probe.meta.datasets.at(0);
    torch::manual_seed(1);
    torch::Tensor x = torch::randn({batch, info.channels, info.height, info.width});
    const std::vector<std::string> maps = probe.net->MapLevels();
    std::vector<std::string> levels = maps;
    levels.push_back("logits");
    const std::vector<Mode> modes = {{"evaluation mode, no gradients (before)", false, false, false},
                                     {"+ inference mode", true, false, false},
                                     {"+ BatchNorm folded", true, true, false},
                                     {"+ channels-last", true, true, true}};
    mlfd::LevelMap reference;
    double base = 0;
    std::printf("| %s, batch %lld, %d threads | images/s | ratio | max abs diff (logits) | max abs diff (maps) |\n|---|---|---|---|---|\n",
                probe.meta.model.arch.c_str(), static_cast<long long>(batch), torch::get_num_threads());
    for (const auto& m : modes) {
      mlfd::LoadedCheckpoint ck = mlfd::LoadCheckpoint(path);
      mlfd::Net net = ck.net;
      net->eval();
      int folded = 0;
      if (m.fold) folded = mlfd::FoldBatchNorm(*net);
      if (m.channels_last) mlfd::ToChannelsLast(*net);  // with the fold: PrepareFrozen
      torch::Tensor in = m.channels_last ? x.contiguous(torch::MemoryFormat::ChannelsLast) : x;
      auto run = [&](auto&& body) {
        if (m.inference) {
          c10::InferenceMode guard;
          return body();
        }
        torch::NoGradGuard guard;
        return body();
      };
      mlfd::LevelMap out = run([&] { return net->Forward(in, levels); });
      double best = 0;
      for (int64_t r = 0; r < repeats; ++r) {
        auto t0 = Clock::now();
        run([&] {
          for (int64_t b = 0; b < batches; ++b) (void)net->forward(in);
          return 0;
        });
        best = std::max(best, batches * batch / std::chrono::duration<double>(Clock::now() - t0).count());
      }
      double d_logits = 0, d_maps = 0;
      if (reference.empty()) {
        for (auto& [k, v] : out) reference[k] = v.clone();
        base = best;
      } else {
        for (const auto& l : levels) {
          double d = (out.at(l).to(torch::kFloat64) - reference.at(l).to(torch::kFloat64)).abs().max().item<double>();
          (l == "logits" ? d_logits : d_maps) = std::max(l == "logits" ? d_logits : d_maps, d);
        }
      }
      std::printf("| %s%s | %.0f | %.2f | %.2g | %.2g |\n", m.name.c_str(),
                  m.fold ? mlfd::Msg(" (", folded, ")").c_str() : "", best, best / base, d_logits, d_maps);
    }
    return 0;
  });
}
