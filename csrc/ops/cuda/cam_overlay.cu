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
// The prologue and all arithmetic are shared with the box kernel (cam_cuda.cuh, built on
// cam_overlay.h's explicitly rounded helpers, no FMA), so the results are bit-identical to the CPU
// kernel's.
#include <cuda_fp16.h>

#include <algorithm>
#include <climits>
#include <stdexcept>
#include <string>

#include "cuda_check.h"
#include "ops/cam_overlay.h"
#include "ops/cuda/cam_cuda.cuh"

namespace maskrt {
namespace {

using namespace cuda;  // the shared kernel building blocks

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

// 4 pixels = 12 bytes = three aligned 32-bit words per thread, one float4 heat store.
__device__ void write_rows_vec(const KernelParams& p, const BlockState& s, const Tables& t, int rows, float inv,
                               const std::uint8_t* src, std::uint8_t* dst, float* heat_out) {
  const int W = p.width, quads = W / 4;
  const long long items = static_cast<long long>(rows) * quads;
  for (long long item = threadIdx.x; item < items; item += kThreads) {
    const int r = static_cast<int>(item / quads), j0 = static_cast<int>(item % quads) * 4;
    const long long px = static_cast<long long>(r) * W + j0;
    const unsigned* in = reinterpret_cast<const unsigned*>(src + px * 3);
    const unsigned words[3] = {in[0], in[1], in[2]};
    unsigned out[3] = {0u, 0u, 0u};
    float h[4];
#pragma unroll
    for (int k = 0; k < 4; ++k) {
      h[k] = pixel_heat(s.cam, t, r, j0 + k, s.lo, inv);
      const float* col = s.colour + 3 * heat_level(h[k]);
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
}

// One pixel per thread, for widths or buffers that do not allow the 4-pixel path.
__device__ void write_rows_scalar(const KernelParams& p, const BlockState& s, const Tables& t, int rows, float inv,
                                  const std::uint8_t* src, std::uint8_t* dst, float* heat_out) {
  const int W = p.width;
  const long long items = static_cast<long long>(rows) * W;
  for (long long px = threadIdx.x; px < items; px += kThreads) {
    const int r = static_cast<int>(px / W), j = static_cast<int>(px % W);
    const float h = pixel_heat(s.cam, t, r, j, s.lo, inv);
    blend_pixel(s, p.alpha, h, src + px * 3, dst + px * 3);
    if (heat_out) heat_out[px] = h;
  }
}

template <typename FeatT, bool kVec>
__global__ void __launch_bounds__(kThreads) cam_overlay_kernel(const KernelParams p) {
  extern __shared__ float4 smem_raw[];
  __shared__ BlockState s;

  const int n = blockIdx.x / p.chunks;
  const int row_begin = (blockIdx.x % p.chunks) * p.rows_per_block;
  const int rows = min(p.rows_per_block, p.height - row_begin);
  const long long first_pixel = (static_cast<long long>(n) * p.height + row_begin) * p.width;

  const long long c = index_at(p.classes, p.classes_int32, n);
  if (c < 0 || c >= p.num_classes) {  // uniform over the block
    write_invalid(p, first_pixel, static_cast<long long>(rows) * p.width);
    return;
  }
  const MapJob job{p.features, p.weights, n, c, p.height, p.width, row_begin, rows, p.scale_y, p.scale_x,
                   p.alpha, p.rgb};
  const Tables t = carve_tables(reinterpret_cast<char*>(smem_raw), p.width, rows);
  const float inv = prepare_block<FeatT>(job, t, s);

  const std::uint8_t* src = p.images + first_pixel * 3;
  std::uint8_t* dst = p.overlays + first_pixel * 3;
  float* heat_out = p.heatmaps ? p.heatmaps + first_pixel : nullptr;
  if constexpr (kVec) {
    write_rows_vec(p, s, t, rows, inv, src, dst, heat_out);
  } else {
    write_rows_scalar(p, s, t, rows, inv, src, dst, heat_out);
  }
}

bool aligned(const void* ptr, std::size_t bytes) { return reinterpret_cast<std::uintptr_t>(ptr) % bytes == 0; }

template <typename FeatT, bool kVec>
void launch(const KernelParams& p, unsigned blocks, std::size_t smem, const DeviceInfo& info, cudaStream_t stream) {
  auto kernel = cam_overlay_kernel<FeatT, kVec>;
  allow_shared_memory(kernel, smem, p.width, info);
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
  check_frame_size(a.height, a.width);
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
  // A pixel moves 6 bytes (read and write) plus 4 when the heat map is written.
  p.rows_per_block = choose_rows_per_block(a.n, a.height, a.width, a.feature_type == FeatureType::kFloat16,
                                           a.heatmaps ? 10 : 6, info.sms);
  p.chunks = static_cast<int>((a.height + p.rows_per_block - 1) / p.rows_per_block);
  p.scale_y = resize_scale(a.height);
  p.scale_x = resize_scale(a.width);
  p.alpha = a.alpha;
  p.rgb = a.rgb;
  p.classes_int32 = a.classes_int32;

  const long long blocks = a.n * p.chunks;
  if (blocks > INT_MAX) throw std::invalid_argument("batch too large for one launch: " + std::to_string(a.n) + " images");
  const std::size_t smem = tables_smem(p.width, p.rows_per_block);
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
