// Device selection, done once per binary (--device auto|cpu|cuda[:i]) and passed down.
#pragma once

#include <torch/types.h>

#include <string>

namespace mlfd {

// "auto" picks CUDA when available, else CPU. Throws UsageError for an unknown or unavailable
// device.
torch::Device ParseDevice(const std::string& spec);

}  // namespace mlfd
