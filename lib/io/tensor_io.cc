// Tensor <-> HDF5 dataset conversion.
#include "io/tensor_io.h"

#include <torch/torch.h>

#include "util/error.h"

namespace mlfd {

h5::DType ToH5(torch::ScalarType t) {
  switch (t) {
    case torch::kUInt8: return h5::DType::kUInt8;
    case torch::kInt64: return h5::DType::kInt64;
    case torch::kFloat16: return h5::DType::kFloat16;
    case torch::kFloat32: return h5::DType::kFloat32;
    case torch::kFloat64: return h5::DType::kFloat64;
    default: throw Error(Msg("tensor dtype ", c10::toString(t), " cannot be stored in HDF5"));
  }
}

torch::ScalarType ToTorch(h5::DType t) {
  switch (t) {
    case h5::DType::kUInt8: return torch::kUInt8;
    case h5::DType::kInt64: return torch::kInt64;
    case h5::DType::kFloat16: return torch::kFloat16;
    case h5::DType::kFloat32: return torch::kFloat32;
    case h5::DType::kFloat64: return torch::kFloat64;
  }
  return torch::kFloat32;
}

namespace {
h5::Shape ShapeOf(const torch::Tensor& t) { return h5::Shape(t.sizes().begin(), t.sizes().end()); }
}  // namespace

void WriteTensor(h5::File& f, const std::string& name, const torch::Tensor& t,
                 const h5::DatasetOptions& opts) {
  torch::Tensor c = t.detach().to(torch::kCPU).contiguous();
  f.Write(name, ToH5(c.scalar_type()), ShapeOf(c), c.data_ptr(), opts);
}

void WriteTensorRows(h5::File& f, const std::string& name, int64_t row, const torch::Tensor& t) {
  torch::Tensor c = t.detach().to(torch::kCPU).contiguous();
  h5::DatasetInfo info = f.Info(name);
  h5::Shape s = ShapeOf(c);
  bool ok = info.dtype == ToH5(c.scalar_type()) && s.size() == info.shape.size() && !s.empty();
  for (size_t i = 1; ok && i < s.size(); ++i) ok = s[i] == info.shape[i];
  if (!ok)
    throw Error(Msg(f.path(), ":", name, ": cannot write rows of ", h5::DTypeName(ToH5(c.scalar_type())),
                    " ", h5::ShapeStr(s), " into ", h5::DTypeName(info.dtype), " ",
                    h5::ShapeStr(info.shape)));
  f.WriteRows(name, row, s[0], c.data_ptr());
}

torch::Tensor ReadTensor(const h5::File& f, const std::string& name) {
  h5::DatasetInfo info = f.Info(name);
  torch::Tensor t = torch::empty(info.shape, torch::TensorOptions().dtype(ToTorch(info.dtype)));
  f.Read(name, t.data_ptr(), info.dtype);
  return t;
}

torch::Tensor ReadTensorRows(const h5::File& f, const std::string& name, int64_t row, int64_t n) {
  h5::DatasetInfo info = f.Info(name);
  if (info.shape.empty()) throw Error(Msg(f.path(), ":", name, ": scalar dataset has no rows"));
  h5::Shape s = info.shape;
  s[0] = n;
  torch::Tensor t = torch::empty(s, torch::TensorOptions().dtype(ToTorch(info.dtype)));
  f.ReadRows(name, row, n, t.data_ptr(), info.dtype);
  return t;
}

}  // namespace mlfd
