// bench_feature_cache: read throughput of a feature cache (FeatureCache::Read, the reader the
// training stages use) in shuffled training batches, next to a plain sequential read of the same
// file; prints a Markdown table.
//   build/bin/feature_cache --split train --level fused --batch-size 128 <features.h5>
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <fstream>
#include <iostream>
#include <random>
#include <vector>

#include <torch/torch.h>

#include "io/feature_cache.h"
#include "io/h5.h"
#include "io/tensor_io.h"
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
    // ATen's first calls (kernel registration, the thread pool) are not the cache's cost.
    (void)torch::rand({256, 64}).to(torch::kHalf).index_select(0, torch::arange(64)).to(torch::kFloat32).sum().item<float>();
    auto shape = cache.SampleShape(split, level);
    const std::string what = mlfd::Msg(split, "/", level, " ", n, " rows x ", torch::IntArrayRef(shape), " ", cache.dtype());
    const int64_t row_bytes = [&] {
      int64_t b = cache.dtype() == "float16" ? 2 : 4;
      for (auto d : shape) b *= d;
      return b;
    }();
    auto row = [&](const std::string& how, double s) {
      std::printf("| %s | %lld | %.3f | %.3f |\n", how.c_str(), static_cast<long long>(n * row_bytes), s,
                  n * row_bytes / s / 1e9);
    };
    std::printf("| read of %s (bytes as stored) | bytes | seconds | GB/s |\n|---|---|---|---|\n", what.c_str());
    // Two passes over the split in shuffled batches: the first also looks up where each row lies
    // (once per level and split), the second is what every later epoch costs.
    {
      auto t0 = clock::now();
      for (int64_t b = 0; b < n; b += batch)
        (void)cache.Read(split, level, shuffled.narrow(0, b, std::min(batch, n - b)));
      row(mlfd::Msg("FeatureCache::Read, shuffled batches of ", batch, ", first epoch (with the row lookup and checksums)"),
          std::chrono::duration<double>(clock::now() - t0).count());
    }
    {  // Later epochs: passes repeated for at least 0.5 s (a small level reads in well under a millisecond).
      int passes = 0;
      double s = 0;
      auto t0 = clock::now();
      while (passes < 2 || s < 0.5) {
        for (int64_t b = 0; b < n; b += batch)
          (void)cache.Read(split, level, shuffled.narrow(0, b, std::min(batch, n - b)));
        ++passes;
        s = std::chrono::duration<double>(clock::now() - t0).count();
      }
      row(mlfd::Msg("FeatureCache::Read, shuffled batches of ", batch, ", later epochs (mean of ", passes, ")"), s / passes);
    }
    {  // The same batches through HDF5's own reader (what FeatureCache::Read did before).
      mlfd::h5::File f = mlfd::h5::File::Open(path);
      const std::string name = split + "/" + level;
      const auto info = f.Info(name);
      std::vector<char> buf(static_cast<size_t>(batch * row_bytes));
      auto t0 = clock::now();
      for (int64_t b = 0; b < n; b += batch) {
        std::vector<int64_t> rows(order.begin() + b, order.begin() + std::min(n, b + batch));
        std::sort(rows.begin(), rows.end());
        f.ReadRowList(name, rows, buf.data(), info.dtype);
      }
      row(mlfd::Msg("HDF5's reader (h5::File::ReadRowList), the same batches"), std::chrono::duration<double>(clock::now() - t0).count());
      t0 = clock::now();
      (void)mlfd::ReadTensor(f, name);
      row("the whole split through HDF5 (one H5Dread)", std::chrono::duration<double>(clock::now() - t0).count());
    }
    {  // The reader's own checksum over the same bytes, in memory, row by row.
      std::vector<char> bytes(static_cast<size_t>(n * row_bytes), 1);
      uint32_t sum = 0;
      auto t0 = clock::now();
      for (int64_t r = 0; r < n; ++r) sum ^= mlfd::h5::Fletcher32(bytes.data() + r * row_bytes, static_cast<size_t>(row_bytes));
      static volatile uint32_t sink;
      sink = sink ^ sum;
      row("Fletcher32 of every row, in memory (the reader's checksum)",
          std::chrono::duration<double>(clock::now() - t0).count());
    }
    {  // Preloading the split (a fresh reader: includes the row lookup).
      mlfd::FeatureCache fresh(path);
      auto t0 = clock::now();
      if (!fresh.Preload(split, {level}, int64_t{1} << 40)) throw mlfd::Error("preload refused");
      row("FeatureCache::Preload of the split (what training stages do when it fits in memory)",
          std::chrono::duration<double>(clock::now() - t0).count());
    }
    std::printf("| plain sequential read of the whole file | %lld | %.3f | %.3f |\n", static_cast<long long>(file_bytes),
                file_bytes / seq_gbs / 1e9, seq_gbs);
    return 0;
  });
}
