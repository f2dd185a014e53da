// CUDA kernel for the CAM overlay of face boxes in full-size frames (cam_overlay_boxes).
//
// On `stream`: a device-to-device copy of the frames into the overlays (the pixels outside every
// box), then one launch that overwrites the boxes. Block b draws rows [r0, r0 + R) of face f's
// box (b = f * chunks + chunk, chunks covering the frame height, since the box sizes are on the
// device and unknown to the host without a synchronisation; blocks past their box's height
// return at once). The prologue (CAM, resize tables, heat extremes for the box's size) is the
// whole-image kernel's (cam_cuda.cuh), so a box covering the frame gives the same bytes as
// cam_overlay and as the CPU box kernel.
//
// Overlaps: the face with the highest index wins. Before drawing, a block lists the later faces of
// the same frame whose boxes meet its rows (at most kMaxOccluders in shared memory, else it scans
// them in global memory per pixel) and skips the pixels they cover; the later face's blocks draw
// those. Every overlay pixel is thus written by exactly one block, whatever the block order.
#include <cuda_fp16.h>

#include <climits>
#include <stdexcept>
#include <string>

#include "cuda_check.h"
#include "ops/cam_overlay.h"
#include "ops/cuda/cam_cuda.cuh"

namespace maskrt {
namespace {

using namespace cuda;  // the shared kernel building blocks

constexpr int kMaxOccluders = 128;  // 2 KiB of shared memory; R is tens to hundreds per call

struct BoxParams {
  CamBoxesArgs args;  // device pointers and sizes
  int rows_per_block, chunks;
};

struct Face {
  long long cls, frame;
  FaceBox box;
  bool drawn;  // class, frame and box in range (only unchecked calls can break this)
};

__device__ Face face_at(const CamBoxesArgs& a, long long r) {
  Face f;
  f.cls = index_at(a.classes, a.classes_int32, r);
  f.frame = index_at(a.frame_index, a.frame_index_int32, r);
  f.box = box_at(a.boxes, a.boxes_int32, r);
  f.drawn = face_in_range(a, f.cls, f.frame, f.box);
  return f;
}

__device__ __forceinline__ bool inside(long long x0, long long y0, long long x1, long long y1, int x, int y) {
  return x >= x0 && x < x1 && y >= y0 && y < y1;
}

// Later drawn faces of the same frame whose boxes meet rows [y_begin, y_end) of face f's box.
struct Occluders {
  int4 box[kMaxOccluders];  // x0, y0, x1, y1 (frames are below 2^29 pixels a side)
  int count;
};

__device__ void collect_occluders(const CamBoxesArgs& a, long long r, const Face& f, int y_begin, int y_end,
                                  Occluders& occ) {
  if (threadIdx.x == 0) occ.count = 0;
  __syncthreads();
  for (long long q = r + 1 + threadIdx.x; q < a.faces; q += kThreads) {
    const Face g = face_at(a, q);
    if (!g.drawn || g.frame != f.frame) continue;
    if (g.box.y0 < y_end && g.box.y1 > y_begin && g.box.x0 < f.box.x1 && g.box.x1 > f.box.x0) {
      const int slot = atomicAdd(&occ.count, 1);
      if (slot < kMaxOccluders) {
        occ.box[slot] = make_int4(static_cast<int>(g.box.x0), static_cast<int>(g.box.y0), static_cast<int>(g.box.x1),
                                  static_cast<int>(g.box.y1));
      }
    }
  }
  __syncthreads();
}

// Whether a later face of the same frame covers pixel (x, y); `count` is the number of occluders
// found, which may exceed what the shared list holds.
__device__ bool occluded(const CamBoxesArgs& a, long long r, long long frame, const Occluders& occ, int count, int x,
                         int y) {
  if (count <= kMaxOccluders) {
    for (int i = 0; i < count; ++i) {
      const int4 b = occ.box[i];
      if (inside(b.x, b.y, b.z, b.w, x, y)) return true;
    }
    return false;
  }
  for (long long q = r + 1; q < a.faces; ++q) {
    const Face g = face_at(a, q);
    if (g.drawn && g.frame == frame && inside(g.box.x0, g.box.y0, g.box.x1, g.box.y1, x, y)) return true;
  }
  return false;
}

// Steps 4-7 for this block's rows of face f's box, reading the input frame.
__device__ void draw_rows(const CamBoxesArgs& a, long long r, const Face& f, const BlockState& s, const Tables& t,
                          const Occluders& occ, int row_begin, int rows, float inv) {
  const int bw = static_cast<int>(f.box.x1 - f.box.x0);
  const int y_begin = static_cast<int>(f.box.y0) + row_begin;
  const int count = occ.count;
  const long long frame_px = f.frame * a.height * a.width;
  const long long items = static_cast<long long>(rows) * bw;
  for (long long i = threadIdx.x; i < items; i += kThreads) {
    const int row = static_cast<int>(i / bw), j = static_cast<int>(i % bw);
    const int y = y_begin + row, x = static_cast<int>(f.box.x0) + j;
    if (count > 0 && occluded(a, r, f.frame, occ, count, x, y)) continue;
    const float h = pixel_heat(s.cam, t, row, j, s.lo, inv);
    const long long px = frame_px + static_cast<long long>(y) * a.width + x;
    blend_pixel(s, a.alpha, h, a.frames + px * 3, a.overlays + px * 3);
  }
}

template <typename FeatT>
__global__ void __launch_bounds__(kThreads) cam_boxes_kernel(const BoxParams p) {
  extern __shared__ float4 smem_raw[];
  __shared__ BlockState s;
  __shared__ Occluders occ;

  const CamBoxesArgs& a = p.args;
  const long long r = blockIdx.x / p.chunks;
  const int row_begin = (blockIdx.x % p.chunks) * p.rows_per_block;
  const Face f = face_at(a, r);
  // Uniform over the block: a face out of range keeps the copied pixels; rows past the box's end
  // belong to no one.
  if (!f.drawn || row_begin >= f.box.y1 - f.box.y0) return;
  const int bh = static_cast<int>(f.box.y1 - f.box.y0), bw = static_cast<int>(f.box.x1 - f.box.x0);
  const int rows = min(p.rows_per_block, bh - row_begin);

  const MapJob job{a.features, a.weights, r, f.cls, bh, bw, row_begin, rows, resize_scale(bh), resize_scale(bw),
                   a.alpha, a.rgb};
  const Tables t = carve_tables(reinterpret_cast<char*>(smem_raw), bw, rows);
  const float inv = prepare_block<FeatT>(job, t, s);
  const int y_begin = static_cast<int>(f.box.y0) + row_begin;
  collect_occluders(a, r, f, y_begin, y_begin + rows, occ);
  draw_rows(a, r, f, s, t, occ, row_begin, rows, inv);
}

template <typename FeatT>
void launch(const BoxParams& p, unsigned blocks, std::size_t smem, const DeviceInfo& info, cudaStream_t stream) {
  auto kernel = cam_boxes_kernel<FeatT>;
  allow_shared_memory(kernel, smem, static_cast<int>(p.args.width), info);
  kernel<<<blocks, kThreads, smem, stream>>>(p);
  MASKRT_CUDA_CHECK_LAUNCH("cam_boxes_kernel");
}

}  // namespace

// Its first lines are cam_overlay_cuda's entry checks (empty batch, frame size, the current
// device): four calls, kept inline so each entry point reads whole.
void cam_overlay_boxes_cuda(const CamBoxesArgs& a, void* stream) {
  if (a.n <= 0 || a.height <= 0 || a.width <= 0) return;
  check_frame_size(a.height, a.width);
  int device = 0;
  MASKRT_CUDA_CHECK(cudaGetDevice(&device));
  const DeviceInfo info = device_info(device);
  auto s = static_cast<cudaStream_t>(stream);
  const auto bytes = static_cast<std::size_t>(a.n * a.height * a.width * 3);
  MASKRT_CUDA_CHECK(cudaMemcpyAsync(a.overlays, a.frames, bytes, cudaMemcpyDeviceToDevice, s));
  if (a.faces <= 0) return;

  BoxParams p;
  p.args = a;
  // Box sizes are unknown here (on the device), so the rows are sized for the frame: an upper
  // bound on any box. A pixel moves 6 bytes (read and write).
  const bool half = a.feature_type == FeatureType::kFloat16;
  p.rows_per_block = choose_rows_per_block(a.faces, a.height, a.width, half, 6, info.sms);
  p.chunks = static_cast<int>((a.height + p.rows_per_block - 1) / p.rows_per_block);
  const long long blocks = a.faces * p.chunks;
  if (blocks > INT_MAX) {
    throw std::invalid_argument("too many faces for one launch: " + std::to_string(a.faces) + " faces in frames of " +
                                std::to_string(a.height) + " rows");
  }
  const std::size_t smem = tables_smem(static_cast<int>(a.width), p.rows_per_block);
  if (half) launch<__half>(p, static_cast<unsigned>(blocks), smem, info, s);
  else launch<float>(p, static_cast<unsigned>(blocks), smem, info, s);
}

}  // namespace maskrt
