// LibTorch tensors in HDF5 datasets: the dtype mapping (uint8, int64, float16, float32, float64)
// and whole/row-range reads and writes on top of io/h5.h.
#pragma once

#include <torch/types.h>

#include "io/h5.h"

namespace mlfd {

h5::DType ToH5(torch::ScalarType t);  // throws Error for unsupported types
torch::ScalarType ToTorch(h5::DType t);

// Writes a CPU-contiguous copy of `t` (any device) as a new dataset of the same dtype.
void WriteTensor(h5::File& f, const std::string& name, const torch::Tensor& t,
                 const h5::DatasetOptions& opts = {});
// Writes `t` as rows [row, row + t.size(0)) of an existing dataset; dtype and trailing shape
// must match.
void WriteTensorRows(h5::File& f, const std::string& name, int64_t row, const torch::Tensor& t);
// Reads a whole dataset in its stored dtype.
torch::Tensor ReadTensor(const h5::File& f, const std::string& name);
// Reads rows [row, row + n) in the stored dtype without loading the rest.
torch::Tensor ReadTensorRows(const h5::File& f, const std::string& name, int64_t row, int64_t n);

}  // namespace mlfd
