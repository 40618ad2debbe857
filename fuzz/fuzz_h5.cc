// libFuzzer target: the HDF5 readers of every file kind the stages exchange (h5_readers.h: image
// store, checkpoint, feature cache), on raw bytes. The input is a whole .h5 file; the seeds are
// files written by prepare_data, train_teacher and extract_features, and the same objects
// rewritten in HDF5's earliest format (no metadata checksums, so byte mutations get past the
// superblock and object headers). Most failures found here are inside libhdf5 itself
// (docs/fuzzing.md); fuzz_h5_struct builds well-formed files instead, to reach our own checks.
#include <torch/torch.h>

#include <cstdint>

#include "fuzz_util.h"
#include "h5_readers.h"
#include "util/log.h"

extern "C" int LLVMFuzzerInitialize(int*, char***) {
  mlfd::SetVerbosity(0);
  torch::set_num_threads(1);
  return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  mlfd_fuzz::ReadAllKinds(mlfd_fuzz::WriteFile("in.h5", data, size));
  return 0;
}
