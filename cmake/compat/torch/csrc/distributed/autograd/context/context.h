// Debian's libtorch-dev 1.13.1 ships c10d's reducer.hpp (PyTorch's DDP reducer) but not the
// distributed-autograd headers it includes. This file declares the two names reducer.hpp uses from
// it, as LibTorch 1.13.1 defines them: the gradient-callback type (reducer.hpp's own static_assert
// checks it against its copy) and the context pointer (a shared_ptr, so Reducer's layout does not
// depend on the context's definition, which the toolkit never uses). It is on the include path
// after the system's (-idirafter, lib/dist only), so a LibTorch that ships the real header wins.
#pragma once

#include <ATen/core/Tensor.h>

#include <functional>
#include <memory>

namespace torch {
namespace distributed {
namespace autograd {

class DistAutogradContext {
 public:
  using GradCallback = std::function<bool(at::Tensor&)>;
};
using ContextPtr = std::shared_ptr<DistAutogradContext>;

}  // namespace autograd
}  // namespace distributed
}  // namespace torch
