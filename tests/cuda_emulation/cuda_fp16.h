// CUDA-on-CPU emulation (see cuda_runtime.h): IEEE binary16 as its bits.
#pragma once

#include <cstdint>

namespace maskrt {
inline float half_bits_to_float(std::uint16_t h);  // csrc/ops/cam_overlay.h: exact conversion
}

struct __half {
  std::uint16_t bits;
};

inline float __half2float(__half h) { return maskrt::half_bits_to_float(h.bits); }
