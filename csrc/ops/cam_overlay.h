// Fused CAM + JET overlay: declarations shared by the CPU kernel, the CUDA kernel and the bindings.
//
// The arithmetic is ARCHITECTURE.md "CAM and overlay: the exact arithmetic". Every floating-point step
// that both kernels perform lives here as a __host__ __device__ function built from explicitly
// rounded operations (no fused multiply-add: the CPU sources are compiled with -ffp-contract=off
// and the device side uses __fmul_rn/__fadd_rn), so the CPU and CUDA kernels produce the same bits
// from the same inputs.
#pragma once

#include <cmath>
#include <cstdint>

#if defined(__CUDACC__)
#define MASKRT_HD __host__ __device__ __forceinline__
#else
#define MASKRT_HD inline
#endif

namespace maskrt {

constexpr int kFeatureChannels = 512;  // ResNet-18 layer4 channels
constexpr int kCamSide = 7;            // layer4 spatial size at 224x224 input
constexpr int kCamCells = kCamSide * kCamSide;
constexpr float kNormEps = 1e-7f;      // the +1e-7 of both min-max normalisations
// At most two samples (first and last) per source interval: 8 row groups (source rows -1..6,
// see AxisSample) and 7 column groups.
constexpr int kMaxCandidates = 16;

enum class FeatureType : int { kFloat32 = 0, kFloat16 = 1 };

// One call over a batch. All pointers are C-contiguous buffers in the memory space of the kernel
// that receives them (host for the CPU kernel, device for the CUDA kernel).
struct CamOverlayArgs {
  const void* features = nullptr;  // [N, 512, 7, 7], float32 or float16 (IEEE binary16 bits)
  FeatureType feature_type = FeatureType::kFloat32;
  const float* weights = nullptr;  // [C, 512]
  std::int64_t num_classes = 0;    // C
  const void* classes = nullptr;   // [N] int64 (or int32 when classes_int32)
  bool classes_int32 = false;
  const std::uint8_t* images = nullptr;  // [N, H, W, 3]
  std::uint8_t* overlays = nullptr;      // [N, H, W, 3] output
  float* heatmaps = nullptr;             // [N, H, W] output, or nullptr
  std::int64_t n = 0, height = 0, width = 0;
  float alpha = 0.5f;
  bool rgb = false;
  // CUDA only: scratch of at least cam_overlay_workspace_bytes(n, height, width) bytes, 16-byte
  // aligned, in device memory that the caller owns (and may reuse for the next batch once this
  // call's work on the stream is done). The CPU kernel ignores it.
  void* workspace = nullptr;
  std::int64_t workspace_bytes = 0;
};

// The CUDA kernel's scratch for one call: the JET blend terms, the y resize table, per image the
// heat normalisation and the 7 source rows resized along x. Each part starts 256-byte aligned.
MASKRT_HD constexpr std::int64_t workspace_part(std::int64_t bytes) { return (bytes + 255) / 256 * 256; }
MASKRT_HD constexpr std::int64_t cam_overlay_workspace_bytes(std::int64_t n, std::int64_t height, std::int64_t width) {
  return workspace_part(256 * 16) + workspace_part(height * 16) + workspace_part(n * 8) +
         workspace_part(n * 7 * width * 4);
}

// One call drawing the CAM of R faces into their boxes of N full-size frames
// (cam_overlay_boxes). Same memory-space rule as CamOverlayArgs. Its first fields repeat
// CamOverlayArgs' on purpose: a flat struct per kernel keeps each launch's argument list plain
// (and the shared device helpers take the fields, not either struct).
struct CamBoxesArgs {
  const void* features = nullptr;  // [R, 512, 7, 7], float32 or float16 (IEEE binary16 bits)
  FeatureType feature_type = FeatureType::kFloat32;
  const float* weights = nullptr;  // [C, 512]
  std::int64_t num_classes = 0;    // C
  const void* classes = nullptr;   // [R] int64 (or int32 when classes_int32)
  bool classes_int32 = false;
  const void* frame_index = nullptr;  // [R] int64 (or int32): the frame each face is in
  bool frame_index_int32 = false;
  const void* boxes = nullptr;  // [R, 4] int64 (or int32): x0, y0, x1, y1, end-exclusive
  bool boxes_int32 = false;
  std::int64_t faces = 0;                // R
  const std::uint8_t* frames = nullptr;  // [N, H, W, 3]
  std::uint8_t* overlays = nullptr;      // [N, H, W, 3] output: frames with the boxes overlaid
  std::int64_t n = 0, height = 0, width = 0;
  float alpha = 0.5f;
  bool rgb = false;
};

// CPU kernel. num_threads <= 0 uses cpu_default_num_threads() (the CPUs this process may run on).
// Throws std::invalid_argument on a class index outside [0, C).
void cam_overlay_cpu(const CamOverlayArgs& args, int num_threads);
int cpu_default_num_threads();

// CUDA kernel: two launches for the whole batch on `stream` (a cudaStream_t), no synchronisation:
// the per-image CAM rows into args.workspace, then the pixels. A class index outside [0, C)
// yields a NaN heat map and the unmodified image for that item.
// Throws std::runtime_error when built without CUDA or when a CUDA call fails.
void cam_overlay_cuda(const CamOverlayArgs& args, void* stream);
bool cuda_compiled();
int cuda_device_count();  // 0 when there is no driver or device; never throws

// Box kernels: overlays = frames, then each face's box blended with the JET colour of its CAM
// (steps 1-7 with H x W = the box's size); where boxes of one frame overlap, the face with the
// highest index wins. The CPU kernel throws std::invalid_argument on a class, frame index or box
// out of range. The CUDA one (a device-to-device copy and one launch on `stream`, no
// synchronisation) skips such a face: its box keeps the copied pixels and hides no other face.
void cam_overlay_boxes_cpu(const CamBoxesArgs& args, int num_threads);
void cam_overlay_boxes_cuda(const CamBoxesArgs& args, void* stream);

// ---------------------------------------------------------------------------------------------
// Arithmetic shared by both kernels.

MASKRT_HD float mul_rn(float a, float b) {
#if defined(__CUDA_ARCH__)
  return __fmul_rn(a, b);
#else
  return a * b;
#endif
}

MASKRT_HD float add_rn(float a, float b) {
#if defined(__CUDA_ARCH__)
  return __fadd_rn(a, b);
#else
  return a + b;
#endif
}

MASKRT_HD float sub_rn(float a, float b) {
#if defined(__CUDA_ARCH__)
  return __fsub_rn(a, b);
#else
  return a - b;
#endif
}

MASKRT_HD float div_rn(float a, float b) {
#if defined(__CUDA_ARCH__)
  return __fdiv_rn(a, b);
#else
  return a / b;
#endif
}

// IEEE binary16 bits -> float, exact, for the CPU path (the device uses __half2float). F. Giesen's
// half_to_float written with selects instead of branches so the CAM loop still vectorises;
// subnormals are renormalised by an exact float subtraction.
inline float half_bits_to_float(std::uint16_t h) {
  constexpr std::uint32_t kShiftedExp = 0x7c00u << 13;
  constexpr float kMagic = 6.103515625e-05f;  // 2^-14, the float with bits 113 << 23
  const std::uint32_t magnitude = static_cast<std::uint32_t>(h & 0x7fffu) << 13;
  const std::uint32_t exp = magnitude & kShiftedExp;
  std::uint32_t bits = magnitude + ((127u - 15u) << 23);
  bits += exp == kShiftedExp ? (128u - 16u) << 23 : 0u;  // Inf / NaN
  bits += exp == 0 ? 1u << 23 : 0u;                        // zero / subnormal
  float f;
  __builtin_memcpy(&f, &bits, sizeof f);
  f = exp == 0 ? f - kMagic : f;
  __builtin_memcpy(&bits, &f, sizeof bits);
  bits |= static_cast<std::uint32_t>(h & 0x8000u) << 16;
  __builtin_memcpy(&f, &bits, sizeof f);
  return f;
}

// OpenCV's resize scale for a 7 -> `size` axis: 1 / (size / 7) in double, as cv::resize computes
// it (not 7 / size, which can differ in the last bit).
// Host and device: the box kernels compute it per box on the GPU, and IEEE double division gives
// the same bits on both.
MASKRT_HD double resize_scale(std::int64_t size) {
#if defined(__CUDA_ARCH__)
  return __ddiv_rn(1.0, __ddiv_rn(static_cast<double>(size), kCamSide));
#else
  return 1.0 / (static_cast<double>(size) / kCamSide);
#endif
}

// Where output index i samples the 7-long source axis under cv::resize INTER_LINEAR:
// value = src[s0] * w0 + src[s1] * w1.
struct AxisSample {
  int group;  // interval index before clamping: floor((i + 0.5) * scale - 0.5)
  int s0, s1;
  float w0, w1;
};

// OpenCV clamps differently along the two axes (resize.cpp): along x an out-of-range sample
// gets weight (1, 0) on the border column; along y the weights stay (1 - f, f) and only the
// row indices are clipped. Mirroring both keeps us within an ulp of cv2.resize.
MASKRT_HD AxisSample axis_sample(std::int64_t i, double scale, bool clamp_weights) {
#if defined(__CUDA_ARCH__)
  const float f = static_cast<float>(__dadd_rn(__dmul_rn(static_cast<double>(i) + 0.5, scale), -0.5));
#else
  const float f = static_cast<float>((static_cast<double>(i) + 0.5) * scale - 0.5);
#endif
  AxisSample a;
  a.group = static_cast<int>(floorf(f));
  float frac = sub_rn(f, static_cast<float>(a.group));
  int s = a.group;
  if (clamp_weights) {
    if (s < 0) { s = 0; frac = 0.f; }
    if (s >= kCamSide - 1) { s = kCamSide - 1; frac = 0.f; }
    a.s0 = s;
    a.s1 = s + 1 < kCamSide ? s + 1 : kCamSide - 1;
  } else {
    a.s0 = s < 0 ? 0 : (s >= kCamSide ? kCamSide - 1 : s);
    a.s1 = s + 1 < 0 ? 0 : (s + 1 >= kCamSide ? kCamSide - 1 : s + 1);
  }
  a.w0 = sub_rn(1.f, frac);
  a.w1 = frac;
  return a;
}

// Whether index i is the first or last of its source interval: for a fixed interval the
// interpolated value is linear in the weight, which grows with i, so the extremes of the whole
// H x W map lie on these rows and columns (at most kMaxCandidates per axis).
MASKRT_HD bool is_candidate(std::int64_t i, std::int64_t size, double scale, bool clamp_weights) {
  if (i == 0 || i == size - 1) return true;
  const int g = axis_sample(i, scale, clamp_weights).group;
  return axis_sample(i - 1, scale, clamp_weights).group != g ||
         axis_sample(i + 1, scale, clamp_weights).group != g;
}

// Steps 2 and 3 in place: ReLU, then (cam - min) / (max - min + 1e-7) over the 49 values.
// A constant map becomes all zeros (0 / 1e-7), never NaN.
MASKRT_HD void normalise_cam(float* cam) {
  float lo = cam[0] > 0.f ? cam[0] : 0.f;
  float hi = lo;
  for (int p = 0; p < kCamCells; ++p) {
    cam[p] = cam[p] > 0.f ? cam[p] : 0.f;
    lo = cam[p] < lo ? cam[p] : lo;
    hi = cam[p] > hi ? cam[p] : hi;
  }
  const float range = add_rn(sub_rn(hi, lo), kNormEps);
  for (int p = 0; p < kCamCells; ++p) cam[p] = div_rn(sub_rn(cam[p], lo), range);
}

// Horizontal pass of cv::resize for source row `row` of the normalised 7x7 cam.
MASKRT_HD float interp_x(const float* cam, int row, int sx0, int sx1, float wx0, float wx1) {
  return add_rn(mul_rn(cam[row * kCamSide + sx0], wx0), mul_rn(cam[row * kCamSide + sx1], wx1));
}

// Vertical pass: combine the two horizontally interpolated source rows.
MASKRT_HD float interp_y(float top, float bottom, float wy0, float wy1) {
  return add_rn(mul_rn(top, wy0), mul_rn(bottom, wy1));
}

// Step 5 as a multiply by 1 / (max - min + eps), computed once per image; clamped so an
// interpolated value an ulp outside the candidate extremes cannot leave [0, 1].
MASKRT_HD float heat_value(float m, float lo, float inv_range) {
  float t = mul_rn(sub_rn(m, lo), inv_range);
  t = t > 0.f ? t : 0.f;  // two flat selects: the form compilers turn into max/min instructions
  t = t < 1.f ? t : 1.f;
  return t;
}

// Step 6: floor(255 * heat) for heat in [0, 1].
MASKRT_HD int heat_level(float heat) { return static_cast<int>(mul_rn(heat, 255.f)); }

// Step 7 split in two: (1 - alpha) * colour + 0.5 is tabulated per level, alpha * pixel is added
// per pixel, and truncation of the non-negative sum rounds half up.
MASKRT_HD float colour_term(float alpha, std::uint8_t colour) {
  return add_rn(mul_rn(sub_rn(1.f, alpha), static_cast<float>(colour)), 0.5f);
}

MASKRT_HD float pixel_term(float alpha, std::uint8_t pixel) {
  return mul_rn(alpha, static_cast<float>(pixel));
}

MASKRT_HD std::uint8_t blend(float pixel_term_value, float colour_term_value) {
  return static_cast<std::uint8_t>(add_rn(pixel_term_value, colour_term_value));
}

// ---------------------------------------------------------------------------------------------
// Reading the per-face index arrays, which may be int32 or int64 (no host-side conversion, so the
// CUDA path stays copy-free and asynchronous).

MASKRT_HD std::int64_t index_at(const void* values, bool int32, std::int64_t i) {
  return int32 ? static_cast<const std::int32_t*>(values)[i] : static_cast<const std::int64_t*>(values)[i];
}

struct FaceBox {
  std::int64_t x0, y0, x1, y1;  // end-exclusive
};

MASKRT_HD FaceBox box_at(const void* boxes, bool int32, std::int64_t r) {
  return {index_at(boxes, int32, 4 * r), index_at(boxes, int32, 4 * r + 1), index_at(boxes, int32, 4 * r + 2),
          index_at(boxes, int32, 4 * r + 3)};
}

// A face can be drawn when its class and frame exist and its box is non-empty inside the frame.
MASKRT_HD bool face_in_range(const CamBoxesArgs& a, std::int64_t cls, std::int64_t frame, const FaceBox& b) {
  return cls >= 0 && cls < a.num_classes && frame >= 0 && frame < a.n && b.x0 >= 0 && b.x0 < b.x1 &&
         b.x1 <= a.width && b.y0 >= 0 && b.y0 < b.y1 && b.y1 <= a.height;
}

}  // namespace maskrt
