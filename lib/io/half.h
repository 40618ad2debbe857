// IEEE half-precision (float16) to float32, exact, for the feature cache's reads: rows are stored
// as float16 and the training stages use float32. With the x86 F16C instructions (checked at run
// time) eight values convert in one instruction, several times faster than a per-element loop.
#pragma once

#include <cstddef>
#include <cstdint>

namespace mlfd {

// out[i] = the float32 value of the float16 bit pattern in[i] (zeros, subnormals, infinities
// exact; a NaN stays a NaN).
void HalfToFloat(const uint16_t* in, float* out, size_t n);
// The same, one element at a time without F16C (what HalfToFloat falls back to).
float HalfBitsToFloat(uint16_t h);

}  // namespace mlfd
