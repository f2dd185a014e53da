// Error checking for CUDA runtime calls and kernel launches: every failure becomes a
// std::runtime_error naming the call, file, line and cudaGetErrorString (pybind11 turns it into
// a Python RuntimeError).
#pragma once

#include <cuda_runtime.h>

#include <stdexcept>
#include <string>

namespace maskrt {

inline void cuda_check(cudaError_t err, const char* what, const char* file, int line) {
  if (err == cudaSuccess) return;
  throw std::runtime_error(std::string("CUDA error at ") + file + ":" + std::to_string(line) + ": " + what +
                           " failed: " + cudaGetErrorName(err) + " (" + cudaGetErrorString(err) + ")");
}

}  // namespace maskrt

// Wrap every CUDA runtime call.
#define MASKRT_CUDA_CHECK(expr) ::maskrt::cuda_check((expr), #expr, __FILE__, __LINE__)

// Right after every kernel launch: configuration errors (bad grid, too much shared memory...)
// only show up through cudaGetLastError.
#define MASKRT_CUDA_CHECK_LAUNCH(kernel_name) \
  ::maskrt::cuda_check(cudaGetLastError(), "launch of " kernel_name, __FILE__, __LINE__)
