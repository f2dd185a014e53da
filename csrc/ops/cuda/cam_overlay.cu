// CUDA kernel for the fused CAM + JET overlay: two launches for the whole batch, on the caller's
// stream, with a caller-owned workspace between them (cam_overlay_workspace_bytes).
//
// 1. cam_rows_kernel, one block per image: stages the image's 512 x 49 features in shared memory
//    in two tiles of 256 channels with 16-byte loads (a whole tile's loads in flight at once),
//    and threads 0..48 run the 49 dot products in increasing k (the CPU kernel's order, so the
//    bits agree), the 7x7 min-max normalisation runs in parallel, the heat extremes come from the
//    <= 16 x 16 candidate samples, and the block writes its 7 source rows resized along x
//    ([7, W] floats, step 4's horizontal pass, as the CPU kernel's prepare_map) and (lo, 1/range).
//    The blocks also write the two per-call tables: blend colour terms per JET level and the
//    y resize samples per output row.
// 2. blend_rows_kernel, blocks of even row chunks (many more blocks than the GPU holds at once):
//    a thread takes kPix consecutive pixels of a row (16 where the row allows 16-byte loads and
//    stores of the interleaved bytes, else 4 or 1), reads its two resized source rows (L2/L1
//    resident), interpolates along y and blends. Byte <-> float conversions use exact float
//    tricks (2^23 + b) instead of the quarter-rate conversion instructions.
//
// All arithmetic is cam_overlay.h's explicitly rounded helpers (no FMA), so the results are
// bit-identical to the CPU kernel's.
#include <cuda_fp16.h>

#include <algorithm>
#include <climits>
#include <cmath>
#include <stdexcept>
#include <string>

#include "cuda_check.h"
#include "ops/cam_overlay.h"
#include "ops/cuda/cam_cuda.cuh"

namespace maskrt {
namespace {

using namespace cuda;  // kThreads, kJetDev, collect_candidates, device_info, check_frame_size

constexpr float kTwo23 = 8388608.f;  // 2^23: from there on a float's ulp is 1

// The workspace's parts (cam_overlay_workspace_bytes gives the layout's size).
struct YSample {
  float w0, w1;
  int s0, s1;
};

struct Workspace {
  float4* colour;  // [256]: colour_term per JET level for the 3 output channels, then 0
  YSample* ys;     // [H]
  float2* norm;    // [N]: (lo, 1 / range) of step 5; lo = NaN marks an out-of-range class
  float* rows;     // [N, 7, W]: the normalised cam's source rows resized along x
};

__host__ __device__ inline Workspace carve_workspace(void* base, std::int64_t n, std::int64_t h) {
  char* p = static_cast<char*>(base);
  Workspace ws;
  ws.colour = reinterpret_cast<float4*>(p);
  p += workspace_part(256 * 16);
  ws.ys = reinterpret_cast<YSample*>(p);
  p += workspace_part(h * 16);
  ws.norm = reinterpret_cast<float2*>(p);
  p += workspace_part(n * 8);
  ws.rows = reinterpret_cast<float*>(p);
  return ws;
}

struct RowsParams {
  const void* features;
  const float* weights;
  const void* classes;
  long long num_classes;
  int n, height, width;
  double scale_y, scale_x;
  float alpha;
  bool rgb, classes_int32, features_vec;  // features_vec: 16-byte aligned, so uint4 staging
  Workspace ws;
};

// ---- 1. per image: CAM, normalisation, heat extremes, rows resized along x -------------------

// Shared state of a cam_rows_kernel block besides the staged features.
struct RowsShared {
  float w[kFeatureChannels];
  float cam[kCamCells];
  float red_lo[kThreads / 32], red_hi[kThreads / 32];
  int cand_y[kMaxCandidates], cand_x[kMaxCandidates];
  int n_cand_y, n_cand_x;
};

// Block-wide (min, max); every thread passes a value (+-inf for none) and gets the result.
__device__ __forceinline__ float2 block_min_max(float lo, float hi, RowsShared& s) {
  for (int off = 16; off > 0; off >>= 1) {
    lo = fminf(lo, __shfl_xor_sync(0xffffffffu, lo, off));
    hi = fmaxf(hi, __shfl_xor_sync(0xffffffffu, hi, off));
  }
  const int warp = threadIdx.x / 32;
  if (threadIdx.x % 32 == 0) {
    s.red_lo[warp] = lo;
    s.red_hi[warp] = hi;
  }
  __syncthreads();
  lo = s.red_lo[0];
  hi = s.red_hi[0];
  for (int i = 1; i < kThreads / 32; ++i) {
    lo = fminf(lo, s.red_lo[i]);
    hi = fmaxf(hi, s.red_hi[i]);
  }
  __syncthreads();  // the scratch may be reused by the next reduction
  return make_float2(lo, hi);
}

// The per-call tables, spread over all blocks: colour terms, then the y samples of every row.
__device__ __forceinline__ void write_tables(const RowsParams& p) {
  const int total = 256 + p.height;
  for (int e = blockIdx.x * kThreads + threadIdx.x; e < total; e += gridDim.x * kThreads) {
    if (e < 256) {
      const std::uint8_t* jet = kJetDev[e];  // BGR; channel ch of the output is jet[rgb ? 2 - ch : ch]
      p.ws.colour[e] = make_float4(colour_term(p.alpha, jet[p.rgb ? 2 : 0]), colour_term(p.alpha, jet[1]),
                                   colour_term(p.alpha, jet[p.rgb ? 0 : 2]), 0.f);
    } else {
      const AxisSample y = axis_sample(e - 256, p.scale_y, /*clamp_weights=*/false);
      p.ws.ys[e - 256] = YSample{y.w0, y.w1, y.s0, y.s1};
    }
  }
}

// Channels staged in shared memory at a time: 256 x 49 features are 25 KB in half, 50 KB in
// float, which fits every supported GPU's per-block limit (64 KB on sm_75).
constexpr int kTileChannels = 256;
constexpr int kTileElems = kTileChannels * kCamCells;
static_assert(kFeatureChannels % kTileChannels == 0, "whole tiles");

// Copies channels [tile * 256, tile * 256 + 256) of the image's features into shared memory.
template <typename FeatT>
__device__ __forceinline__ void stage_tile(const RowsParams& p, int tile, FeatT* feat) {
  const FeatT* src = static_cast<const FeatT*>(p.features) +
                     static_cast<long long>(blockIdx.x) * kFeatureChannels * kCamCells + tile * kTileElems;
  if (p.features_vec) {  // kTileElems * sizeof(FeatT) is a multiple of 16
    constexpr int kVecs = kTileElems * static_cast<int>(sizeof(FeatT)) / 16;
    const uint4* from = reinterpret_cast<const uint4*>(src);
    uint4* to = reinterpret_cast<uint4*>(feat);
    for (int i = threadIdx.x; i < kVecs; i += kThreads) to[i] = from[i];
  } else {
    for (int i = threadIdx.x; i < kTileElems; i += kThreads) feat[i] = src[i];
  }
}

// Steps 1-3: thread p < 49 accumulates position p in increasing k (tile by tile), then the block
// normalises the 49 values in parallel.
template <typename FeatT>
__device__ __forceinline__ void cam_values(const RowsParams& p, long long c, FeatT* feat, RowsShared& s) {
  const int tid = threadIdx.x;
  for (int k = tid; k < kFeatureChannels; k += kThreads) s.w[k] = p.weights[c * kFeatureChannels + k];
  float v = 0.f;
  for (int tile = 0; tile < kFeatureChannels / kTileChannels; ++tile) {
    stage_tile<FeatT>(p, tile, feat);
    __syncthreads();
    if (tid < kCamCells) {
      const float* w = s.w + tile * kTileChannels;
#pragma unroll 16
      for (int k = 0; k < kTileChannels; ++k) v = add_rn(v, mul_rn(w[k], load_feature(feat, k * kCamCells + tid)));
    }
    __syncthreads();  // the next tile overwrites the staged features
  }
  if (tid < kCamCells) v = v > 0.f ? v : 0.f;  // ReLU, as normalise_cam
  const float2 ext = block_min_max(tid < kCamCells ? v : INFINITY, tid < kCamCells ? v : -INFINITY, s);
  const float range = add_rn(sub_rn(ext.y, ext.x), kNormEps);
  if (tid < kCamCells) s.cam[tid] = div_rn(sub_rn(v, ext.x), range);
  __syncthreads();
}

// Step 5's extremes over the candidate rows x columns, as the CPU's prepare_map; (lo, 1/range).
__device__ __forceinline__ float2 heat_extremes(const RowsParams& p, RowsShared& s) {
  collect_candidates(p.width, p.scale_x, true, s.cand_x, &s.n_cand_x);
  collect_candidates(p.height, p.scale_y, false, s.cand_y, &s.n_cand_y);
  __syncthreads();
  const int ncy = min(s.n_cand_y, kMaxCandidates), ncx = min(s.n_cand_x, kMaxCandidates);
  float lo = INFINITY, hi = -INFINITY;
  if (threadIdx.x < ncy * ncx) {
    const AxisSample y = axis_sample(s.cand_y[threadIdx.x / ncx], p.scale_y, false);
    const AxisSample x = axis_sample(s.cand_x[threadIdx.x % ncx], p.scale_x, true);
    lo = hi = interp_y(interp_x(s.cam, y.s0, x.s0, x.s1, x.w0, x.w1), interp_x(s.cam, y.s1, x.s0, x.s1, x.w0, x.w1),
                       y.w0, y.w1);
  }
  const float2 ext = block_min_max(lo, hi, s);
  return make_float2(ext.x, div_rn(1.f, add_rn(sub_rn(ext.y, ext.x), kNormEps)));
}

template <typename FeatT>
__global__ void __launch_bounds__(kThreads) cam_rows_kernel(const RowsParams p) {
  extern __shared__ float4 smem_raw[];
  __shared__ RowsShared s;
  const int n = blockIdx.x;
  if (threadIdx.x == 0) s.n_cand_y = s.n_cand_x = 0;
  write_tables(p);
  const long long c = index_at(p.classes, p.classes_int32, n);
  if (c < 0 || c >= p.num_classes) {  // uniform over the block
    if (threadIdx.x == 0) p.ws.norm[n] = make_float2(NAN, NAN);
    return;
  }
  cam_values<FeatT>(p, c, reinterpret_cast<FeatT*>(smem_raw), s);
  const float2 norm = heat_extremes(p, s);
  if (threadIdx.x == 0) p.ws.norm[n] = norm;
  float* rows = p.ws.rows + static_cast<long long>(n) * kCamSide * p.width;
  for (int j = threadIdx.x; j < p.width; j += kThreads) {
    const AxisSample x = axis_sample(j, p.scale_x, /*clamp_weights=*/true);
#pragma unroll
    for (int r = 0; r < kCamSide; ++r) rows[r * p.width + j] = interp_x(s.cam, r, x.s0, x.s1, x.w0, x.w1);
  }
}

// ---- 2. pixels --------------------------------------------------------------------------------

struct BlendParams {
  const std::uint8_t* images;
  std::uint8_t* overlays;
  float* heatmaps;  // nullptr when not requested
  Workspace ws;
  int height, width, rows_per_block, chunks;
  float alpha;
};

// Byte `b` of `word` as a float, exactly: the float with bits 0x4B0000bb is 2^23 + b.
__device__ __forceinline__ float byte_value(unsigned word, int b) {
  return __fsub_rn(__uint_as_float(__byte_perm(word, 0x4B000000u, 0x7540u | b)), kTwo23);
}

// floor(v) for v in [0, 2^23), in the low bits: rounding 2^23 + v toward zero keeps the integer part.
__device__ __forceinline__ unsigned floor_bits(float v) { return __float_as_uint(__fadd_rz(v, kTwo23)); }

// The low bytes of four floor_bits values as one little-endian word.
__device__ __forceinline__ unsigned pack4(unsigned a, unsigned b, unsigned c, unsigned d) {
  return __byte_perm(__byte_perm(a, b, 0x0040u), __byte_perm(c, d, 0x0040u), 0x5410u);
}

template <int kPix>
__device__ __forceinline__ void load_floats(const float* src, float (&out)[kPix]) {
  if constexpr (kPix % 4 == 0) {
#pragma unroll
    for (int q = 0; q < kPix / 4; ++q) {
      const float4 v = __ldg(reinterpret_cast<const float4*>(src) + q);
      out[4 * q] = v.x;
      out[4 * q + 1] = v.y;
      out[4 * q + 2] = v.z;
      out[4 * q + 3] = v.w;
    }
  } else {
#pragma unroll
    for (int k = 0; k < kPix; ++k) out[k] = __ldg(src + k);
  }
}

// 3 * kPix interleaved bytes as words (kPix = 16: three 16-byte loads; 4: three 32-bit; 1: bytes).
template <int kPix>
__device__ __forceinline__ void load_bytes(const std::uint8_t* src, unsigned (&w)[(3 * kPix + 3) / 4]) {
  if constexpr (kPix == 16) {
#pragma unroll
    for (int q = 0; q < 3; ++q) {
      const uint4 v = reinterpret_cast<const uint4*>(src)[q];
      w[4 * q] = v.x;
      w[4 * q + 1] = v.y;
      w[4 * q + 2] = v.z;
      w[4 * q + 3] = v.w;
    }
  } else if constexpr (kPix == 4) {
#pragma unroll
    for (int q = 0; q < 3; ++q) w[q] = reinterpret_cast<const unsigned*>(src)[q];
  } else {
    w[0] = src[0] | (static_cast<unsigned>(src[1]) << 8) | (static_cast<unsigned>(src[2]) << 16);
  }
}

template <int kPix>
__device__ __forceinline__ void store_bytes(std::uint8_t* dst, const unsigned (&w)[(3 * kPix + 3) / 4]) {
  if constexpr (kPix == 16) {
#pragma unroll
    for (int q = 0; q < 3; ++q) {
      reinterpret_cast<uint4*>(dst)[q] = make_uint4(w[4 * q], w[4 * q + 1], w[4 * q + 2], w[4 * q + 3]);
    }
  } else if constexpr (kPix == 4) {
#pragma unroll
    for (int q = 0; q < 3; ++q) reinterpret_cast<unsigned*>(dst)[q] = w[q];
  } else {
#pragma unroll
    for (int b = 0; b < 3; ++b) dst[b] = static_cast<std::uint8_t>(w[0] >> (8 * b));
  }
}

template <int kPix>
__device__ __forceinline__ void store_heat(float* dst, const float (&h)[kPix]) {
  if constexpr (kPix % 4 == 0) {
#pragma unroll
    for (int q = 0; q < kPix / 4; ++q) {
      reinterpret_cast<float4*>(dst)[q] = make_float4(h[4 * q], h[4 * q + 1], h[4 * q + 2], h[4 * q + 3]);
    }
  } else {
#pragma unroll
    for (int k = 0; k < kPix; ++k) dst[k] = h[k];
  }
}

// Steps 4-7 for kPix consecutive pixels: heat from the two resized source rows, JET level,
// blended bytes. `in` and `out` hold the pixels' 3 * kPix bytes.
template <int kPix>
__device__ __forceinline__ void blend_pixels(const float (&top)[kPix], const float (&bottom)[kPix], const YSample& y,
                                             float2 norm, float alpha, const float4* colour,
                                             const unsigned (&in)[(3 * kPix + 3) / 4],
                                             unsigned (&out)[(3 * kPix + 3) / 4], float (&heat)[kPix]) {
  unsigned bytes[3 * kPix];
#pragma unroll
  for (int k = 0; k < kPix; ++k) {
    heat[k] = heat_value(interp_y(top[k], bottom[k], y.w0, y.w1), norm.x, norm.y);
    const float4 c = colour[floor_bits(mul_rn(heat[k], 255.f)) & 0xffu];  // heat_level
    const float terms[3] = {c.x, c.y, c.z};
#pragma unroll
    for (int ch = 0; ch < 3; ++ch) {
      const int b = 3 * k + ch;
      bytes[b] = floor_bits(add_rn(mul_rn(alpha, byte_value(in[b / 4], b % 4)), terms[ch]));  // blend
    }
  }
  if constexpr (kPix == 1) {
    out[0] = __byte_perm(__byte_perm(bytes[0], bytes[1], 0x0040u), bytes[2], 0x0410u);
  } else {
#pragma unroll
    for (int q = 0; q < 3 * kPix / 4; ++q) out[q] = pack4(bytes[4 * q], bytes[4 * q + 1], bytes[4 * q + 2], bytes[4 * q + 3]);
  }
}

// Rows of an image whose class index is out of range: NaN heat, untouched image (documented).
__device__ void copy_invalid(const BlendParams& p, long long first_pixel, int pixels) {
  for (int i = threadIdx.x; i < pixels; i += kThreads) {
    const long long px = first_pixel + i;
    for (int c = 0; c < 3; ++c) p.overlays[px * 3 + c] = p.images[px * 3 + c];
    if (p.heatmaps) p.heatmaps[px] = __int_as_float(0x7fffffff);
  }
}

template <int kPix>
__global__ void __launch_bounds__(kThreads) blend_rows_kernel(const BlendParams p) {
  __shared__ float4 colour[256];
  colour[threadIdx.x] = p.ws.colour[threadIdx.x];  // kThreads == 256
  const int n = blockIdx.x / p.chunks;
  const int row_begin = (blockIdx.x - n * p.chunks) * p.rows_per_block;
  const int rows = min(p.rows_per_block, p.height - row_begin);
  const int W = p.width;
  const long long first_pixel = (static_cast<long long>(n) * p.height + row_begin) * W;
  const float2 norm = p.ws.norm[n];
  __syncthreads();
  if (isnan(norm.x)) {  // uniform over the block
    copy_invalid(p, first_pixel, rows * W);
    return;
  }
  const float* image_rows = p.ws.rows + static_cast<long long>(n) * kCamSide * W;
  const int per_row = W / kPix, items = rows * per_row;
  for (int item = threadIdx.x; item < items; item += kThreads) {
    const int r = item / per_row, j0 = (item - r * per_row) * kPix;
    const YSample y = p.ws.ys[row_begin + r];
    float top[kPix], bottom[kPix], heat[kPix];
    load_floats<kPix>(image_rows + y.s0 * W + j0, top);
    load_floats<kPix>(image_rows + y.s1 * W + j0, bottom);
    const long long px = first_pixel + static_cast<long long>(r) * W + j0;
    unsigned in[(3 * kPix + 3) / 4], out[(3 * kPix + 3) / 4];
    load_bytes<kPix>(p.images + px * 3, in);
    blend_pixels<kPix>(top, bottom, y, norm, p.alpha, colour, in, out, heat);
    store_bytes<kPix>(p.overlays + px * 3, out);
    if (p.heatmaps) store_heat<kPix>(p.heatmaps + px, heat);
  }
}

// ---- host side --------------------------------------------------------------------------------

bool aligned(const void* ptr, std::size_t bytes) { return reinterpret_cast<std::uintptr_t>(ptr) % bytes == 0; }

template <typename FeatT>
void launch_rows(const RowsParams& p, const DeviceInfo& info, cudaStream_t stream) {
  auto kernel = cam_rows_kernel<FeatT>;
  const std::size_t smem = sizeof(FeatT) * kTileElems;  // 25 or 50 KB
  if (smem + sizeof(RowsShared) > static_cast<std::size_t>(info.max_smem_optin)) {
    throw std::runtime_error("cam_overlay_cuda: the device allows " + std::to_string(info.max_smem_optin) +
                             " bytes of shared memory per block; the CAM stage needs " + std::to_string(smem));
  }
  MASKRT_CUDA_CHECK(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, static_cast<int>(smem)));
  kernel<<<static_cast<unsigned>(p.n), kThreads, smem, stream>>>(p);
  MASKRT_CUDA_CHECK_LAUNCH("cam_rows_kernel");
}

// Even row chunks of about kThreads * 4 work items each: many more blocks than fit at once at
// large batches (the GPU balances them), and a block's setup (the colour table) stays small.
void size_chunks(BlendParams& p, int pix) {
  const int per_row = p.width / pix;
  const int rows_target = std::max(1, kThreads * 4 / per_row);
  p.chunks = (p.height + rows_target - 1) / rows_target;
  p.rows_per_block = (p.height + p.chunks - 1) / p.chunks;
  p.chunks = (p.height + p.rows_per_block - 1) / p.rows_per_block;
}

template <int kPix>
void launch_blend(BlendParams p, long long n, cudaStream_t stream) {
  size_chunks(p, kPix);
  const long long blocks = n * p.chunks;
  if (blocks > INT_MAX) throw std::invalid_argument("batch too large for one launch: " + std::to_string(n) + " images");
  blend_rows_kernel<kPix><<<static_cast<unsigned>(blocks), kThreads, 0, stream>>>(p);
  MASKRT_CUDA_CHECK_LAUNCH("blend_rows_kernel");
}

void check_workspace(const CamOverlayArgs& a) {
  const std::int64_t need = cam_overlay_workspace_bytes(a.n, a.height, a.width);
  if (a.workspace == nullptr || a.workspace_bytes < need || !aligned(a.workspace, 16)) {
    throw std::invalid_argument("workspace: expected a 16-byte aligned device buffer of at least " +
                                std::to_string(need) + " bytes (cam_overlay_workspace_bytes), got " +
                                std::to_string(a.workspace_bytes) + " bytes at " +
                                std::to_string(reinterpret_cast<std::uintptr_t>(a.workspace)));
  }
}

}  // namespace

bool cuda_compiled() { return true; }

int cuda_device_count() {
  int count = 0;
  if (cudaGetDeviceCount(&count) != cudaSuccess) {
    (void)cudaGetLastError();  // clear the (non-sticky) error so later calls start clean
    return 0;
  }
  return count;
}

void cam_overlay_cuda(const CamOverlayArgs& a, void* stream) {
  if (a.n <= 0 || a.height <= 0 || a.width <= 0) return;
  check_frame_size(a.height, a.width);
  if (a.n > INT_MAX) throw std::invalid_argument("batch too large for one launch: " + std::to_string(a.n) + " images");
  int device = 0;
  MASKRT_CUDA_CHECK(cudaGetDevice(&device));
  check_workspace(a);
  const DeviceInfo info = device_info(device);
  const Workspace ws = carve_workspace(a.workspace, a.n, a.height);
  auto s = static_cast<cudaStream_t>(stream);

  const bool half = a.feature_type == FeatureType::kFloat16;
  const RowsParams rp{a.features, a.weights, a.classes, a.num_classes, static_cast<int>(a.n),
                      static_cast<int>(a.height), static_cast<int>(a.width), resize_scale(a.height),
                      resize_scale(a.width), a.alpha, a.rgb, a.classes_int32, aligned(a.features, 16), ws};
  if (half) launch_rows<__half>(rp, info, s);
  else launch_rows<float>(rp, info, s);

  BlendParams bp{a.images, a.overlays, a.heatmaps, ws, static_cast<int>(a.height), static_cast<int>(a.width), 0, 0,
                 a.alpha};
  const bool heat16 = a.heatmaps == nullptr || aligned(a.heatmaps, 16);
  if (a.width % 16 == 0 && aligned(a.images, 16) && aligned(a.overlays, 16) && heat16) {
    launch_blend<16>(bp, a.n, s);
  } else if (a.width % 4 == 0 && aligned(a.images, 4) && aligned(a.overlays, 4) && heat16) {
    launch_blend<4>(bp, a.n, s);
  } else {
    launch_blend<1>(bp, a.n, s);
  }
}

}  // namespace maskrt
