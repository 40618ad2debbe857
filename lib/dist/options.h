// The options of a data-parallel run (docs/distributed.md), apart from the rest of dist/ so that
// the training options can hold them without including LibTorch's distributed headers.
#pragma once

#include <boost/program_options.hpp>
#include <string>

namespace mlfd {
namespace dist {

// The options of a data-parallel run (training stages).
struct Options {
  std::string backend = "auto";  // auto | gloo | nccl (auto: NCCL on a CUDA device, else Gloo)
  double timeout_seconds = 300;  // a collective waiting longer fails (a rank died or hangs)
  bool sync_bn = false;          // BatchNorm statistics over the global batch (SyncBatchNorm)
  bool log_all_ranks = false;    // ranks other than 0 log at -v 0 (warnings, errors) unless set
  bool find_unused = false;      // DDP's find_unused_parameters: some parameters may get no gradient
  void Register(boost::program_options::options_description& d, const std::string& prefix = "");
  void Check(const std::string& prefix = "") const;
};

}  // namespace dist
}  // namespace mlfd
