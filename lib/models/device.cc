// Device parsing.
#include "models/device.h"

#include <torch/cuda.h>

#include "util/error.h"

namespace mlfd {

torch::Device ParseDevice(const std::string& spec) {
  if (spec == "auto") return torch::cuda::is_available() ? torch::Device(torch::kCUDA, 0) : torch::kCPU;
  if (spec == "cpu") return torch::kCPU;
  if (spec.rfind("cuda", 0) == 0) {
    if (!torch::cuda::is_available())
      throw UsageError("--device " + spec + ": CUDA is not available in this build or on this machine");
    int index = 0;
    if (spec.size() > 4) {
      if (spec[4] != ':') throw UsageError("--device " + spec + ": expected cuda or cuda:<index>");
      try {
        index = std::stoi(spec.substr(5));
      } catch (const std::exception&) {
        throw UsageError("--device " + spec + ": bad CUDA index");
      }
    }
    if (index < 0 || index >= static_cast<int>(torch::cuda::device_count()))
      throw UsageError(Msg("--device ", spec, ": no such GPU (", torch::cuda::device_count(), " found)"));
    return torch::Device(torch::kCUDA, static_cast<c10::DeviceIndex>(index));
  }
  throw UsageError("--device " + spec + ": expected auto, cpu, cuda or cuda:<index>");
}

}  // namespace mlfd
