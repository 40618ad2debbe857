// bench_feature_cache: read throughput of a feature cache (FeatureCache::Read, the reader the
// training stages use) in shuffled training batches, next to a plain sequential read of the same
// file; prints a Markdown table.
//   build/bin/feature_cache --split train --level fused --batch-size 128 <features.h5>
#include <chrono>
#include <cstdio>
#include <fstream>
#include <iostream>
#include <random>
#include <vector>

#include <torch/torch.h>

#include "io/feature_cache.h"
#include "app/app.h"
#include "util/error.h"
#include "util/fs.h"

int main(int argc, char** argv) {
  return mlfd::RunMain("feature_cache", [&] {
    mlfd::CommandLine cli({"feature_cache",
                           "Measures the read throughput of a feature cache: shuffled batches of one level "
                           "through FeatureCache::Read (from disk, not preloaded), and a plain sequential "
                           "read of the whole file, in GB/s.",
                           "feature_cache [options] <features.h5>",
                           "feature_cache --split train --level fused --batch-size 128 runs/demo/seed1/features/joint_mnist.h5"});
    std::string path, split = "train", level = "fused";
    int64_t batch = 128;
    cli.options().add_options()("split", mlfd::po::value(&split)->default_value(split), "split")(
        "level", mlfd::po::value(&level)->default_value(level), "level to read")(
        "batch-size", mlfd::po::value(&batch)->default_value(batch), "rows per read");
    cli.AddPositional("features", &path, "feature cache");
    if (!cli.Parse(argc, argv)) return 0;
    using clock = std::chrono::steady_clock;
    // Plain sequential read of the file (first, so both see a warm page cache in the same way).
    double seq_gbs = 0;
    int64_t file_bytes = 0;
    for (int rep = 0; rep < 2; ++rep) {
      std::ifstream f(path, std::ios::binary);
      std::vector<char> buf(1 << 20);
      auto t0 = clock::now();
      int64_t n = 0;
      while (f.read(buf.data(), static_cast<std::streamsize>(buf.size())) || f.gcount() > 0) n += f.gcount();
      double s = std::chrono::duration<double>(clock::now() - t0).count();
      file_bytes = n;
      seq_gbs = n / s / 1e9;
    }
    mlfd::FeatureCache cache(path);
    torch::Tensor rows = cache.Indices(split);
    const int64_t n = rows.size(0);
    std::vector<int64_t> order(static_cast<size_t>(n));
    for (int64_t i = 0; i < n; ++i) order[static_cast<size_t>(i)] = i;
    std::mt19937_64 rng(1);
    std::shuffle(order.begin(), order.end(), rng);
    torch::Tensor shuffled = rows.index_select(0, torch::tensor(order));
    int64_t bytes = 0;
    auto t0 = clock::now();
    for (int64_t b = 0; b < n; b += batch) {
      torch::Tensor x = cache.Read(split, level, shuffled.narrow(0, b, std::min(batch, n - b)));
      bytes += x.numel() * (cache.dtype() == "float16" ? 2 : 4);  // as stored; Read returns float32
    }
    double s = std::chrono::duration<double>(clock::now() - t0).count();
    auto shape = cache.SampleShape(split, level);
    std::printf("| read | bytes | seconds | GB/s |\n|---|---|---|---|\n");
    std::printf("| FeatureCache::Read, %s/%s %lld rows x %s, shuffled batches of %lld | %lld | %.3f | %.3f |\n",
                split.c_str(), level.c_str(), static_cast<long long>(n), mlfd::Msg(torch::IntArrayRef(shape)).c_str(),
                static_cast<long long>(batch), static_cast<long long>(bytes), s, bytes / s / 1e9);
    std::printf("| plain sequential read of the whole file | %lld | %.3f | %.3f |\n", static_cast<long long>(file_bytes),
                file_bytes / seq_gbs / 1e9, seq_gbs);
    return 0;
  });
}
