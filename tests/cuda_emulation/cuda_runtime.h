// CUDA-on-CPU emulation, for testing the CUDA kernels' logic on machines without a GPU.
//
// The kernels in csrc/ops/cuda are compiled as ordinary C++ with this header standing in for the
// CUDA runtime (tests/cuda_emulation.py builds them; it rewrites `extern __shared__` and the
// `<<<...>>>` launches first). A launch runs its blocks one after another, each block's threads
// as real std::threads, so __syncthreads and warp shuffles are real barriers; __shared__
// variables become function statics (one block at a time shares them). Device intrinsics get
// their documented semantics (round-toward-zero derived exactly with TwoSum). What this cannot show:
// timing, memory-model races that only a GPU's scheduling exposes, device memory limits.
#pragma once

#include <atomic>
#include <barrier>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <functional>
#include <map>
#include <memory>
#include <stdexcept>
#include <string>
#include <thread>
#include <type_traits>
#include <vector>

#include <math.h>

#define __global__
#define __device__
#define __host__
#define __forceinline__ inline
#define __constant__
#define __shared__ static
#define __launch_bounds__(...)

// ---- vector types ---------------------------------------------------------------------------
struct float2 { float x, y; };
struct alignas(16) float4 { float x, y, z, w; };
struct alignas(16) uint4 { unsigned x, y, z, w; };
struct alignas(16) int4 { int x, y, z, w; };
struct dim3 { unsigned x = 1, y = 1, z = 1; };
inline float2 make_float2(float x, float y) { return {x, y}; }
inline float4 make_float4(float x, float y, float z, float w) { return {x, y, z, w}; }
inline uint4 make_uint4(unsigned x, unsigned y, unsigned z, unsigned w) { return {x, y, z, w}; }
inline int4 make_int4(int x, int y, int z, int w) { return {x, y, z, w}; }

// CUDA's global integer min/max (by value: decltype of a conditional on lvalues is a reference).
template <class A, class B>
inline std::common_type_t<A, B> min(A a, B b) { return a < b ? a : b; }
template <class A, class B>
inline std::common_type_t<A, B> max(A a, B b) { return a < b ? b : a; }

// ---- runtime API ------------------------------------------------------------------------------
enum cudaError_t { cudaSuccess = 0, cudaErrorInvalidValue = 1, cudaErrorInvalidConfiguration = 9 };
using cudaStream_t = struct CUstream_st*;
enum cudaMemcpyKind { cudaMemcpyDeviceToDevice = 3 };
enum cudaDeviceAttr { cudaDevAttrMultiProcessorCount = 16, cudaDevAttrMaxSharedMemoryPerBlockOptin = 97 };
enum cudaFuncAttribute { cudaFuncAttributeMaxDynamicSharedMemorySize = 8 };

namespace emu {
constexpr int kSms = 4;
constexpr int kDefaultSmem = 48 * 1024;
inline int max_smem_optin = 64 * 1024;  // sm_75's limit, the smallest the kernels support
inline cudaError_t last_error = cudaSuccess;
inline std::map<const void*, int>& smem_optin() {
  static std::map<const void*, int> m;
  return m;
}
inline int launches = 0;  // counted, so tests can see how many launches a call made
}  // namespace emu

inline const char* cudaGetErrorName(cudaError_t e) { return e == cudaSuccess ? "cudaSuccess" : "cudaErrorEmulated"; }
inline const char* cudaGetErrorString(cudaError_t e) { return e == cudaSuccess ? "no error" : "emulated launch error"; }
inline cudaError_t cudaGetLastError() {
  const cudaError_t e = emu::last_error;
  emu::last_error = cudaSuccess;
  return e;
}
inline cudaError_t cudaGetDevice(int* d) { *d = 0; return cudaSuccess; }
inline cudaError_t cudaGetDeviceCount(int* c) { *c = 1; return cudaSuccess; }
inline cudaError_t cudaDeviceGetAttribute(int* v, cudaDeviceAttr a, int) {
  *v = a == cudaDevAttrMultiProcessorCount ? emu::kSms : emu::max_smem_optin;
  return cudaSuccess;
}
template <class F>
cudaError_t cudaFuncSetAttribute(F* f, cudaFuncAttribute, int value) {
  if (value > emu::max_smem_optin) return cudaErrorInvalidValue;
  emu::smem_optin()[reinterpret_cast<const void*>(f)] = value;
  return cudaSuccess;
}
inline cudaError_t cudaMemcpyAsync(void* dst, const void* src, std::size_t n, cudaMemcpyKind, cudaStream_t) {
  std::memmove(dst, src, n);
  return cudaSuccess;
}

// ---- the executing thread's coordinates and its block's barriers ------------------------------
namespace emu {
struct Block {
  explicit Block(int threads)
      : all(threads), warps(static_cast<std::size_t>((threads + 31) / 32)), lanes(static_cast<std::size_t>(threads)) {
    for (std::size_t w = 0; w < warps.size(); ++w) {
      const int n = std::min(32, threads - static_cast<int>(w) * 32);
      warps[w] = std::make_unique<std::barrier<>>(n);
    }
  }
  std::barrier<> all;
  std::vector<std::unique_ptr<std::barrier<>>> warps;
  std::vector<float> lanes;  // shuffle exchange, one slot per thread
  std::vector<unsigned char> dynamic_smem;
};
inline thread_local dim3 t_thread, t_block, t_grid, t_dim;
inline thread_local Block* t_current = nullptr;
}  // namespace emu

#define threadIdx emu::t_thread
#define blockIdx emu::t_block
#define gridDim emu::t_grid
#define blockDim emu::t_dim

inline void __syncthreads() { emu::t_current->all.arrive_and_wait(); }

inline float __shfl_xor_sync(unsigned, float v, int lane_mask) {
  emu::Block& b = *emu::t_current;
  const unsigned t = emu::t_thread.x, warp = t / 32;
  b.lanes[t] = v;
  b.warps[warp]->arrive_and_wait();
  const float other = b.lanes[warp * 32 + ((t % 32) ^ static_cast<unsigned>(lane_mask))];
  b.warps[warp]->arrive_and_wait();
  return other;
}

inline int atomicAdd(int* address, int v) { return std::atomic_ref<int>(*address).fetch_add(v); }

template <class T>
inline T __ldg(const T* p) { return *p; }

// ---- intrinsics -------------------------------------------------------------------------------
inline float __uint_as_float(unsigned u) { float f; std::memcpy(&f, &u, 4); return f; }
inline unsigned __float_as_uint(float f) { unsigned u; std::memcpy(&u, &f, 4); return u; }
inline float __int_as_float(int i) { float f; std::memcpy(&f, &i, 4); return f; }

// Round-to-nearest is the host's default; round-toward-zero is derived exactly from it with
// TwoSum (fesetround is not reliably honoured by optimised code).
inline float __fadd_rn(float a, float b) { volatile float x = a; return x + b; }
inline float __fsub_rn(float a, float b) { volatile float x = a; return x - b; }
inline float __fadd_rz(float a, float b) {
  const float s = __fadd_rn(a, b);
  if (!std::isfinite(s)) return s;
  const float bb = s - a;
  const float err = (a - (s - bb)) + (b - bb);  // exact: a + b == s + err
  if (err != 0.f && (err < 0.f) != (s < 0.f)) return std::nextafter(s, 0.f);  // s overshot away from 0
  return s;
}
inline float __fmul_rn(float a, float b) { volatile float x = a; return x * b; }
inline float __fdiv_rn(float a, float b) { volatile float x = a; return x / b; }

// CUDA's __byte_perm: result byte i = byte (s >> 4i) & 7 of the 8-byte value {y, x}.
inline unsigned __byte_perm(unsigned x, unsigned y, unsigned s) {
  const std::uint64_t v = (static_cast<std::uint64_t>(y) << 32) | x;
  unsigned r = 0;
  for (int i = 0; i < 4; ++i) r |= static_cast<unsigned>((v >> (8 * ((s >> (4 * i)) & 7))) & 0xffu) << (8 * i);
  return r;
}

// ---- launches: `k<<<grid, block, smem, stream>>>(args)` is rewritten to emu::launch(...) -----------
namespace emu {
template <class... P, class... A>
void launch(void (*kernel)(P...), unsigned grid, int block, std::size_t smem, cudaStream_t, A&&... args) {
  ++launches;
  const auto it = smem_optin().find(reinterpret_cast<const void*>(kernel));
  const int allowed = it == smem_optin().end() ? kDefaultSmem : it->second;
  if (grid == 0 || block <= 0 || block > 1024 || smem > static_cast<std::size_t>(allowed)) {
    last_error = cudaErrorInvalidConfiguration;
    return;
  }
  for (unsigned b = 0; b < grid; ++b) {
    Block state(block);
    state.dynamic_smem.assign(smem + 16, 0xcd);  // garbage, as uninitialised shared memory is
    std::vector<std::thread> threads;
    threads.reserve(static_cast<std::size_t>(block));
    for (int t = 0; t < block; ++t) {
      threads.emplace_back([&, t] {
        t_thread = dim3{static_cast<unsigned>(t), 1, 1};
        t_block = dim3{b, 1, 1};
        t_grid = dim3{grid, 1, 1};
        t_dim = dim3{static_cast<unsigned>(block), 1, 1};
        t_current = &state;
        kernel(args...);
        // A returned thread no longer takes part in the block's or its warp's barriers.
        state.all.arrive_and_drop();
        state.warps[static_cast<std::size_t>(t / 32)]->arrive_and_drop();
      });
    }
    for (auto& th : threads) th.join();
  }
}

// The block's dynamic shared memory, 16-byte aligned.
template <class T>
T* dynamic_smem() {
  auto addr = reinterpret_cast<std::uintptr_t>(t_current->dynamic_smem.data());
  return reinterpret_cast<T*>((addr + 15) / 16 * 16);
}
}  // namespace emu
