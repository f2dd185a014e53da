// CUDA building blocks shared by the whole-image kernel (cam_overlay.cu) and the box kernel
// (cam_overlay_boxes.cu).
//
// A block draws rows [row_begin, row_begin + rows) of one map (a whole image, or a face's box)
// of height x width pixels. prepare_block() is the common prologue: threads 0..48 compute the 49
// CAM values (512-long float32 dot products in increasing k, as the CPU kernel does) while the
// others tabulate the x/y resize samples and blend terms in shared memory; then the heat min/max
// from at most 16 x 16 candidate samples. All arithmetic goes through cam_overlay.h's explicitly
// rounded helpers, so the results are bit-identical to the CPU kernels'.
#pragma once

#include <cuda_fp16.h>

#include <algorithm>
#include <climits>
#include <cstdint>
#include <stdexcept>
#include <string>

#include "cuda_check.h"
#include "ops/cam_overlay.h"
#include "ops/jet.h"

namespace maskrt {
namespace cuda {

// static: each .cu file (compiled without relocatable device code) gets its own constant copy.
static __constant__ std::uint8_t kJetDev[256][3] = MASKRT_JET_BGR_INIT;

constexpr int kThreads = 256;
constexpr int kWarps = kThreads / 32;
constexpr int kMaxRowsPerBlock = 1024;  // bounds the per-block y table in shared memory
static_assert(kMaxCandidates * kMaxCandidates <= kThreads, "one candidate sample per thread");

__device__ __forceinline__ float load_feature(const float* f, int i) { return f[i]; }
__device__ __forceinline__ float load_feature(const __half* f, int i) { return __half2float(f[i]); }

// Shared-memory views: the x table covers the map's full width, the y table only this block's rows.
struct Tables {
  float* xw0;
  float* xw1;
  float* yw0;
  float* yw1;
  std::uint8_t* xs0;
  std::uint8_t* ys0;
  std::uint8_t* ys1;
};

__host__ __device__ inline std::size_t tables_bytes(int width, int rows) {
  return static_cast<std::size_t>(width) * (2 * sizeof(float) + 1) +
         static_cast<std::size_t>(rows) * (2 * sizeof(float) + 2);
}

// Dynamic shared memory for a block of `rows` rows of maps up to `width` wide, in 16-byte units.
inline std::size_t tables_smem(int width, int rows) { return (tables_bytes(width, rows) + 15) / 16 * 16; }

__device__ inline Tables carve_tables(char* smem, int width, int rows) {
  Tables t;
  t.xw0 = reinterpret_cast<float*>(smem);
  t.xw1 = t.xw0 + width;
  t.yw0 = t.xw1 + width;
  t.yw1 = t.yw0 + rows;
  t.xs0 = reinterpret_cast<std::uint8_t*>(t.yw1 + rows);
  t.ys0 = t.xs0 + width;
  t.ys1 = t.ys0 + rows;
  return t;
}

// The statically sized shared state of a block (declared __shared__ by each kernel).
struct BlockState {
  float cam[kCamCells];
  float colour[256 * 3];  // colour_term per level and channel, in the requested channel order
  int cand_y[kMaxCandidates], cand_x[kMaxCandidates];
  int n_cand_y, n_cand_x;
  float red_lo[kWarps], red_hi[kWarps];
  float lo, hi;
};

// What one block draws: rows [row_begin, row_begin + rows) of the CAM of features[item] for
// class c, resized to height x width.
struct MapJob {
  const void* features;
  const float* weights;
  long long item, c;
  int height, width, row_begin, rows;
  double scale_y, scale_x;
  float alpha;
  bool rgb;
};

// Step 1 for position `pos`: float32 accumulation in increasing k, as on the CPU.
template <typename FeatT>
__device__ float cam_sum(const MapJob& job, int pos) {
  const FeatT* f = static_cast<const FeatT*>(job.features) + job.item * kFeatureChannels * kCamCells;
  const float* w = job.weights + job.c * kFeatureChannels;
  float acc = 0.f;
#pragma unroll 8
  for (int k = 0; k < kFeatureChannels; ++k) acc = add_rn(acc, mul_rn(w[k], load_feature(f, k * kCamCells + pos)));
  return acc;
}

// Block-wide min and max; every thread passes a value (use +-inf for "none").
__device__ inline void block_min_max(float lo, float hi, BlockState& s) {
  for (int off = 16; off > 0; off >>= 1) {
    lo = fminf(lo, __shfl_xor_sync(0xffffffffu, lo, off));
    hi = fmaxf(hi, __shfl_xor_sync(0xffffffffu, hi, off));
  }
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  if (lane == 0) {
    s.red_lo[warp] = lo;
    s.red_hi[warp] = hi;
  }
  __syncthreads();
  if (threadIdx.x == 0) {
    for (int i = 1; i < kWarps; ++i) {
      lo = fminf(lo, s.red_lo[i]);
      hi = fmaxf(hi, s.red_hi[i]);
    }
    s.lo = lo;
    s.hi = hi;
  }
  __syncthreads();
}

// Collects up to kMaxCandidates candidate indices of a `size`-long axis into `out`.
__device__ inline void collect_candidates(int size, double scale, bool clamp_weights, int* out, int* count) {
  for (int i = threadIdx.x; i < size; i += kThreads) {
    if (is_candidate(i, size, scale, clamp_weights)) {
      const int slot = atomicAdd(count, 1);
      if (slot < kMaxCandidates) out[slot] = i;
    }
  }
}

__device__ inline void fill_tables(const MapJob& job, const Tables& t, BlockState& s) {
  for (int j = threadIdx.x; j < job.width; j += kThreads) {
    const AxisSample x = axis_sample(j, job.scale_x, /*clamp_weights=*/true);
    t.xw0[j] = x.w0;
    t.xw1[j] = x.w1;
    t.xs0[j] = static_cast<std::uint8_t>(x.s0);
  }
  collect_candidates(job.width, job.scale_x, true, s.cand_x, &s.n_cand_x);
  collect_candidates(job.height, job.scale_y, false, s.cand_y, &s.n_cand_y);
  for (int r = threadIdx.x; r < job.rows; r += kThreads) {
    const AxisSample y = axis_sample(job.row_begin + r, job.scale_y, /*clamp_weights=*/false);
    t.yw0[r] = y.w0;
    t.yw1[r] = y.w1;
    t.ys0[r] = static_cast<std::uint8_t>(y.s0);
    t.ys1[r] = static_cast<std::uint8_t>(y.s1);
  }
  for (int e = threadIdx.x; e < 256 * 3; e += kThreads) {
    const int v = e / 3, ch = e % 3;
    s.colour[e] = colour_term(job.alpha, kJetDev[v][job.rgb ? 2 - ch : ch]);
  }
}

// The common prologue (see the file comment). Leaves the normalised CAM, the tables and s.lo in
// shared memory and returns step 5's 1 / (max - min + eps). Every thread of the block must call it.
template <typename FeatT>
__device__ float prepare_block(const MapJob& job, const Tables& t, BlockState& s) {
  const int tid = threadIdx.x;
  if (tid == 0) s.n_cand_y = s.n_cand_x = 0;
  __syncthreads();
  // Threads 0..48 start the dot products; everyone then fills the tables.
  if (tid < kCamCells) s.cam[tid] = cam_sum<FeatT>(job, tid);
  fill_tables(job, t, s);
  __syncthreads();
  if (tid == 0) normalise_cam(s.cam);
  __syncthreads();

  // Step 5's extremes: one candidate (row, column) sample per thread.
  const int ncy = min(s.n_cand_y, kMaxCandidates), ncx = min(s.n_cand_x, kMaxCandidates);
  float lo = INFINITY, hi = -INFINITY;
  if (tid < ncy * ncx) {
    const AxisSample y = axis_sample(s.cand_y[tid / ncx], job.scale_y, false);
    const AxisSample x = axis_sample(s.cand_x[tid % ncx], job.scale_x, true);
    const float m = interp_y(interp_x(s.cam, y.s0, x.s0, x.s1, x.w0, x.w1),
                             interp_x(s.cam, y.s1, x.s0, x.s1, x.w0, x.w1), y.w0, y.w1);
    lo = hi = m;
  }
  block_min_max(lo, hi, s);
  return div_rn(1.f, add_rn(sub_rn(s.hi, s.lo), kNormEps));
}

// Steps 4-6 for pixel (row r of this block, column j of the map): the heat value.
__device__ __forceinline__ float pixel_heat(const float* cam, const Tables& t, int r, int j, float lo, float inv) {
  const int sx0 = t.xs0[j];
  const int sx1 = sx0 + 1 < kCamSide ? sx0 + 1 : kCamSide - 1;
  const float top = interp_x(cam, t.ys0[r], sx0, sx1, t.xw0[j], t.xw1[j]);
  const float bottom = interp_x(cam, t.ys1[r], sx0, sx1, t.xw0[j], t.xw1[j]);
  return heat_value(interp_y(top, bottom, t.yw0[r], t.yw1[r]), lo, inv);
}

// Step 7 for one pixel given its heat: three blended bytes from `src` to `dst`.
__device__ __forceinline__ void blend_pixel(const BlockState& s, float alpha, float heat, const std::uint8_t* src,
                                            std::uint8_t* dst) {
  const float* col = s.colour + 3 * heat_level(heat);
  for (int ch = 0; ch < 3; ++ch) dst[ch] = blend(pixel_term(alpha, src[ch]), col[ch]);
}

// ---- host side --------------------------------------------------------------------------------

struct DeviceInfo {
  int sms = 0;
  int max_smem_optin = 0;
};

inline DeviceInfo device_info(int device) {
  DeviceInfo info;
  MASKRT_CUDA_CHECK(cudaDeviceGetAttribute(&info.sms, cudaDevAttrMultiProcessorCount, device));
  MASKRT_CUDA_CHECK(cudaDeviceGetAttribute(&info.max_smem_optin, cudaDevAttrMaxSharedMemoryPerBlockOptin, device));
  return info;
}

inline void check_frame_size(std::int64_t height, std::int64_t width) {
  if (height > INT_MAX / 4 || width > INT_MAX / 4) {
    throw std::invalid_argument("images: expected height and width below 2^29, got " + std::to_string(height) + "x" +
                                std::to_string(width));
  }
}

// Rows per block for `items` maps of up to height x width: enough blocks to give every SM several
// (latency hiding), but no fewer rows than it takes for a block's pixel bytes to match the feature
// bytes its CAM recompute reads, so that at large maps the kernel streams pixels rather than
// re-reading features. `pixel_bytes` is what a pixel costs in memory traffic.
inline int choose_rows_per_block(std::int64_t items, std::int64_t height, std::int64_t width, bool fp16,
                                 int pixel_bytes, int sms) {
  const long long total_rows = items * height;
  const long long fill = (total_rows + 4LL * sms - 1) / (4LL * sms);
  const long long feature_bytes = static_cast<long long>(kFeatureChannels) * kCamCells * (fp16 ? 2 : 4);
  const long long row_bytes = width * static_cast<long long>(pixel_bytes);
  const long long amortise = std::min<long long>(height, (feature_bytes + row_bytes - 1) / row_bytes);
  const long long rows = std::max(fill, amortise);
  return static_cast<int>(std::max(1LL, std::min<long long>({rows, height, kMaxRowsPerBlock})));
}

// Opts a kernel into `smem` bytes of dynamic shared memory when it needs more than the default.
// The kernels' static shared arrays take up to ~8 KiB on top of the dynamic tables.
template <typename Kernel>
void allow_shared_memory(Kernel kernel, std::size_t smem, int width, const DeviceInfo& info) {
  if (smem <= 40 * 1024) return;
  if (smem + 8 * 1024 > static_cast<std::size_t>(info.max_smem_optin)) {
    throw std::invalid_argument("images: width " + std::to_string(width) +
                                " is too large for the CUDA kernel's shared-memory tables (" + std::to_string(smem) +
                                " bytes needed, device allows " + std::to_string(info.max_smem_optin) + ")");
  }
  MASKRT_CUDA_CHECK(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, static_cast<int>(smem)));
}

}  // namespace cuda
}  // namespace maskrt
