// CUDA kernel for the fused CAM + JET overlay: one launch for the whole batch.
//
// Block b covers rows [r0, r0 + R) of image n (b = n * chunks + chunk). Each block recomputes its
// image's 49 CAM values (threads 0..48, each a 512-long float32 dot product in increasing k, as
// the CPU kernel does) and the heat min/max from at most 16 x 16 candidate samples, while the
// other threads tabulate the x/y resize samples and blend terms in shared memory; then the whole
// block streams its rows: 4 pixels per thread (three 32-bit loads and stores of the interleaved
// BGR bytes, one float4 heat store) where alignment allows, one pixel per thread otherwise.
// R is chosen on the host so that the per-block CAM recompute (reading 49 x 512 features, mostly
// from L2) stays small next to the block's pixel traffic, while still giving every SM work.
//
// All arithmetic goes through the shared helpers of cam_overlay.h (explicitly rounded, no FMA), so
// the results are bit-identical to the CPU kernel's.
#include <cuda_fp16.h>

#include <algorithm>
#include <climits>
#include <stdexcept>
#include <string>

#include "cuda_check.h"
#include "ops/cam_overlay.h"
#include "ops/jet.h"

namespace maskrt {
namespace {

__constant__ std::uint8_t kJetDev[256][3] = MASKRT_JET_BGR_INIT;

constexpr int kThreads = 256;
constexpr int kWarps = kThreads / 32;
constexpr int kMaxRowsPerBlock = 1024;  // bounds the per-block y table in shared memory
static_assert(kMaxCandidates * kMaxCandidates <= kThreads, "one candidate sample per thread");

struct KernelParams {
  const void* features;
  const float* weights;
  const void* classes;
  const std::uint8_t* images;
  std::uint8_t* overlays;
  float* heatmaps;  // nullptr when not requested
  long long num_classes;
  int height, width;
  int rows_per_block, chunks;
  double scale_y, scale_x;
  float alpha;
  bool rgb, classes_int32;
};

__device__ __forceinline__ float load_feature(const float* f, int i) { return f[i]; }
__device__ __forceinline__ float load_feature(const __half* f, int i) { return __half2float(f[i]); }

// Shared-memory views: the x table covers the full width, the y table only this block's rows.
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

__device__ Tables carve_tables(char* smem, int width, int rows) {
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

__device__ __forceinline__ long long class_at(const KernelParams& p, int n) {
  return p.classes_int32 ? static_cast<long long>(static_cast<const int*>(p.classes)[n])
                         : static_cast<const long long*>(p.classes)[n];
}

// Step 1 for position `pos`: float32 accumulation in increasing k, as on the CPU.
template <typename FeatT>
__device__ float cam_sum(const KernelParams& p, int n, long long c, int pos) {
  const FeatT* f = static_cast<const FeatT*>(p.features) + static_cast<long long>(n) * kFeatureChannels * kCamCells;
  const float* w = p.weights + c * kFeatureChannels;
  float acc = 0.f;
#pragma unroll 8
  for (int k = 0; k < kFeatureChannels; ++k) acc = add_rn(acc, mul_rn(w[k], load_feature(f, k * kCamCells + pos)));
  return acc;
}

// Block-wide min and max; every thread passes a value (use +-inf for "none").
__device__ void block_min_max(float lo, float hi, float* red_lo, float* red_hi, float* out_lo, float* out_hi) {
  for (int off = 16; off > 0; off >>= 1) {
    lo = fminf(lo, __shfl_xor_sync(0xffffffffu, lo, off));
    hi = fmaxf(hi, __shfl_xor_sync(0xffffffffu, hi, off));
  }
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  if (lane == 0) {
    red_lo[warp] = lo;
    red_hi[warp] = hi;
  }
  __syncthreads();
  if (threadIdx.x == 0) {
    for (int i = 1; i < kWarps; ++i) {
      lo = fminf(lo, red_lo[i]);
      hi = fmaxf(hi, red_hi[i]);
    }
    *out_lo = lo;
    *out_hi = hi;
  }
  __syncthreads();
}

// Steps 4-6 for pixel (row r of this block, column j): the heat value.
__device__ __forceinline__ float pixel_heat(const float* cam, const Tables& t, int r, int j, float lo, float inv) {
  const int sx0 = t.xs0[j];
  const int sx1 = sx0 + 1 < kCamSide ? sx0 + 1 : kCamSide - 1;
  const float top = interp_x(cam, t.ys0[r], sx0, sx1, t.xw0[j], t.xw1[j]);
  const float bottom = interp_x(cam, t.ys1[r], sx0, sx1, t.xw0[j], t.xw1[j]);
  return heat_value(interp_y(top, bottom, t.yw0[r], t.yw1[r]), lo, inv);
}

__device__ __forceinline__ std::uint8_t byte_of(const unsigned (&w)[3], int b) {
  return static_cast<std::uint8_t>(w[b >> 2] >> (8 * (b & 3)));
}

// Rows of a block whose class index is out of range: NaN heat, untouched image (documented).
__device__ void write_invalid(const KernelParams& p, long long first_pixel, long long pixels) {
  for (long long i = threadIdx.x; i < pixels; i += kThreads) {
    const long long px = first_pixel + i;
    for (int c = 0; c < 3; ++c) p.overlays[px * 3 + c] = p.images[px * 3 + c];
    if (p.heatmaps) p.heatmaps[px] = __int_as_float(0x7fffffff);
  }
}

template <typename FeatT, bool kVec>
__global__ void __launch_bounds__(kThreads) cam_overlay_kernel(const KernelParams p) {
  extern __shared__ float4 smem_raw[];
  __shared__ float cam[kCamCells];
  __shared__ float colour[256 * 3];
  __shared__ int cand_y[kMaxCandidates], cand_x[kMaxCandidates];
  __shared__ int n_cand_y, n_cand_x;
  __shared__ float red_lo[kWarps], red_hi[kWarps];
  __shared__ float s_lo, s_hi;

  const int tid = threadIdx.x;
  const int n = blockIdx.x / p.chunks;
  const int row_begin = (blockIdx.x % p.chunks) * p.rows_per_block;
  const int rows = min(p.rows_per_block, p.height - row_begin);
  const int W = p.width;
  const long long first_pixel = (static_cast<long long>(n) * p.height + row_begin) * W;

  const long long c = class_at(p, n);
  if (c < 0 || c >= p.num_classes) {  // uniform over the block
    write_invalid(p, first_pixel, static_cast<long long>(rows) * W);
    return;
  }
  if (tid == 0) n_cand_y = n_cand_x = 0;
  __syncthreads();

  // Threads 0..48 start the dot products; everyone then fills the tables.
  if (tid < kCamCells) cam[tid] = cam_sum<FeatT>(p, n, c, tid);
  const Tables t = carve_tables(reinterpret_cast<char*>(smem_raw), W, rows);
  for (int j = tid; j < W; j += kThreads) {
    const AxisSample x = axis_sample(j, p.scale_x, /*clamp_weights=*/true);
    t.xw0[j] = x.w0;
    t.xw1[j] = x.w1;
    t.xs0[j] = static_cast<std::uint8_t>(x.s0);
    if (is_candidate(j, W, p.scale_x, true)) {
      const int slot = atomicAdd(&n_cand_x, 1);
      if (slot < kMaxCandidates) cand_x[slot] = j;
    }
  }
  for (int i = tid; i < p.height; i += kThreads) {
    if (is_candidate(i, p.height, p.scale_y, false)) {
      const int slot = atomicAdd(&n_cand_y, 1);
      if (slot < kMaxCandidates) cand_y[slot] = i;
    }
  }
  for (int r = tid; r < rows; r += kThreads) {
    const AxisSample y = axis_sample(row_begin + r, p.scale_y, /*clamp_weights=*/false);
    t.yw0[r] = y.w0;
    t.yw1[r] = y.w1;
    t.ys0[r] = static_cast<std::uint8_t>(y.s0);
    t.ys1[r] = static_cast<std::uint8_t>(y.s1);
  }
  for (int e = tid; e < 256 * 3; e += kThreads) {
    const int v = e / 3, ch = e % 3;
    colour[e] = colour_term(p.alpha, kJetDev[v][p.rgb ? 2 - ch : ch]);
  }
  __syncthreads();
  if (tid == 0) normalise_cam(cam);
  __syncthreads();

  // Step 5's extremes: one candidate (row, column) sample per thread.
  const int ncy = min(n_cand_y, kMaxCandidates), ncx = min(n_cand_x, kMaxCandidates);
  float lo = INFINITY, hi = -INFINITY;
  if (tid < ncy * ncx) {
    const AxisSample y = axis_sample(cand_y[tid / ncx], p.scale_y, false);
    const AxisSample x = axis_sample(cand_x[tid % ncx], p.scale_x, true);
    const float m = interp_y(interp_x(cam, y.s0, x.s0, x.s1, x.w0, x.w1),
                             interp_x(cam, y.s1, x.s0, x.s1, x.w0, x.w1), y.w0, y.w1);
    lo = hi = m;
  }
  block_min_max(lo, hi, red_lo, red_hi, &s_lo, &s_hi);
  lo = s_lo;
  const float inv = div_rn(1.f, add_rn(sub_rn(s_hi, lo), kNormEps));

  const std::uint8_t* src = p.images + first_pixel * 3;
  std::uint8_t* dst = p.overlays + first_pixel * 3;
  float* heat_out = p.heatmaps ? p.heatmaps + first_pixel : nullptr;
  if constexpr (kVec) {
    // 4 pixels = 12 bytes = three aligned 32-bit words per thread.
    const int quads = W / 4;
    const long long items = static_cast<long long>(rows) * quads;
    for (long long item = tid; item < items; item += kThreads) {
      const int r = static_cast<int>(item / quads), j0 = static_cast<int>(item % quads) * 4;
      const long long px = static_cast<long long>(r) * W + j0;
      const unsigned* in = reinterpret_cast<const unsigned*>(src + px * 3);
      const unsigned words[3] = {in[0], in[1], in[2]};
      unsigned out[3] = {0u, 0u, 0u};
      float h[4];
#pragma unroll
      for (int k = 0; k < 4; ++k) {
        h[k] = pixel_heat(cam, t, r, j0 + k, lo, inv);
        const float* col = colour + 3 * heat_level(h[k]);
#pragma unroll
        for (int ch = 0; ch < 3; ++ch) {
          const int b = 3 * k + ch;
          const std::uint8_t o = blend(pixel_term(p.alpha, byte_of(words, b)), col[ch]);
          out[b >> 2] |= static_cast<unsigned>(o) << (8 * (b & 3));
        }
      }
      unsigned* o = reinterpret_cast<unsigned*>(dst + px * 3);
      o[0] = out[0];
      o[1] = out[1];
      o[2] = out[2];
      if (heat_out) *reinterpret_cast<float4*>(heat_out + px) = make_float4(h[0], h[1], h[2], h[3]);
    }
  } else {
    const long long items = static_cast<long long>(rows) * W;
    for (long long px = tid; px < items; px += kThreads) {
      const int r = static_cast<int>(px / W), j = static_cast<int>(px % W);
      const float h = pixel_heat(cam, t, r, j, lo, inv);
      const float* col = colour + 3 * heat_level(h);
      for (int ch = 0; ch < 3; ++ch) dst[px * 3 + ch] = blend(pixel_term(p.alpha, src[px * 3 + ch]), col[ch]);
      if (heat_out) heat_out[px] = h;
    }
  }
}

struct DeviceInfo {
  int sms = 0;
  int max_smem_optin = 0;
};

DeviceInfo device_info(int device) {
  DeviceInfo info;
  MASKRT_CUDA_CHECK(cudaDeviceGetAttribute(&info.sms, cudaDevAttrMultiProcessorCount, device));
  MASKRT_CUDA_CHECK(cudaDeviceGetAttribute(&info.max_smem_optin, cudaDevAttrMaxSharedMemoryPerBlockOptin, device));
  return info;
}

// Rows per block: enough blocks to give every SM several (latency hiding), but no fewer rows than
// it takes for a block's pixel bytes to match the feature bytes its CAM recompute reads, so that
// at large frames the kernel streams pixels rather than re-reading features.
int choose_rows_per_block(const CamOverlayArgs& a, int sms) {
  const long long total_rows = a.n * a.height;
  const long long fill = (total_rows + 4LL * sms - 1) / (4LL * sms);
  const long long feature_bytes =
      static_cast<long long>(kFeatureChannels) * kCamCells * (a.feature_type == FeatureType::kFloat16 ? 2 : 4);
  const long long row_bytes = a.width * (6LL + (a.heatmaps ? 4 : 0));
  const long long amortise = std::min<long long>(a.height, (feature_bytes + row_bytes - 1) / row_bytes);
  const long long rows = std::max(fill, amortise);
  return static_cast<int>(std::max(1LL, std::min<long long>({rows, a.height, kMaxRowsPerBlock})));
}

bool aligned(const void* ptr, std::size_t bytes) { return reinterpret_cast<std::uintptr_t>(ptr) % bytes == 0; }

template <typename FeatT, bool kVec>
void launch(const KernelParams& p, unsigned blocks, std::size_t smem, const DeviceInfo& info, cudaStream_t stream) {
  auto kernel = cam_overlay_kernel<FeatT, kVec>;
  // Static shared arrays take ~4 KiB on top of the dynamic tables.
  if (smem > 40 * 1024) {
    if (smem + 8 * 1024 > static_cast<std::size_t>(info.max_smem_optin)) {
      throw std::invalid_argument("images: width " + std::to_string(p.width) +
                                  " is too large for the CUDA kernel's shared-memory tables (" +
                                  std::to_string(smem) + " bytes needed, device allows " +
                                  std::to_string(info.max_smem_optin) + ")");
    }
    MASKRT_CUDA_CHECK(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, static_cast<int>(smem)));
  }
  kernel<<<blocks, kThreads, smem, stream>>>(p);
  MASKRT_CUDA_CHECK_LAUNCH("cam_overlay_kernel");
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
  if (a.height > INT_MAX / 4 || a.width > INT_MAX / 4) {
    throw std::invalid_argument("images: expected height and width below 2^29, got " + std::to_string(a.height) +
                                "x" + std::to_string(a.width));
  }
  int device = 0;
  MASKRT_CUDA_CHECK(cudaGetDevice(&device));
  const DeviceInfo info = device_info(device);

  KernelParams p;
  p.features = a.features;
  p.weights = a.weights;
  p.classes = a.classes;
  p.images = a.images;
  p.overlays = a.overlays;
  p.heatmaps = a.heatmaps;
  p.num_classes = a.num_classes;
  p.height = static_cast<int>(a.height);
  p.width = static_cast<int>(a.width);
  p.rows_per_block = choose_rows_per_block(a, info.sms);
  p.chunks = static_cast<int>((a.height + p.rows_per_block - 1) / p.rows_per_block);
  p.scale_y = resize_scale(a.height);
  p.scale_x = resize_scale(a.width);
  p.alpha = a.alpha;
  p.rgb = a.rgb;
  p.classes_int32 = a.classes_int32;

  const long long blocks = a.n * p.chunks;
  if (blocks > INT_MAX) throw std::invalid_argument("batch too large for one launch: " + std::to_string(a.n) + " images");
  const std::size_t smem = (tables_bytes(p.width, p.rows_per_block) + 15) / 16 * 16;
  const bool vec = a.width % 4 == 0 && aligned(a.images, 4) && aligned(a.overlays, 4) &&
                   (a.heatmaps == nullptr || aligned(a.heatmaps, 16));
  auto s = static_cast<cudaStream_t>(stream);
  const auto nb = static_cast<unsigned>(blocks);
  const bool half = a.feature_type == FeatureType::kFloat16;
  if (half && vec) launch<__half, true>(p, nb, smem, info, s);
  else if (half) launch<__half, false>(p, nb, smem, info, s);
  else if (vec) launch<float, true>(p, nb, smem, info, s);
  else launch<float, false>(p, nb, smem, info, s);
}

}  // namespace maskrt
