// C entry points of the emulated CUDA kernels (tests/cuda_emulation.py loads them with ctypes).
// "Device" pointers are host pointers here. Returns "" or the exception's message.
#include <cstdint>
#include <cstring>
#include <exception>
#include <string>

#include "cuda_runtime.h"
#include "ops/cam_overlay.h"

namespace {
thread_local std::string g_error;

const char* run(void (*fn)(const void*, void*), const void* args) {
  g_error.clear();
  try {
    fn(args, nullptr);
  } catch (const std::exception& e) {
    g_error = e.what();
  }
  return g_error.c_str();
}
}  // namespace

#define EMU_EXPORT __attribute__((visibility("default")))

extern "C" {

EMU_EXPORT const char* emu_cam_overlay(const void* features, int fp16, const float* weights, std::int64_t num_classes,
                            const void* classes, int classes_int32, const std::uint8_t* images,
                            std::uint8_t* overlays, float* heatmaps, std::int64_t n, std::int64_t height,
                            std::int64_t width, float alpha, int rgb, void* workspace, std::int64_t workspace_bytes) {
  maskrt::CamOverlayArgs a;
  a.features = features;
  a.feature_type = fp16 ? maskrt::FeatureType::kFloat16 : maskrt::FeatureType::kFloat32;
  a.weights = weights;
  a.num_classes = num_classes;
  a.classes = classes;
  a.classes_int32 = classes_int32 != 0;
  a.images = images;
  a.overlays = overlays;
  a.heatmaps = heatmaps;
  a.n = n;
  a.height = height;
  a.width = width;
  a.alpha = alpha;
  a.rgb = rgb != 0;
  a.workspace = workspace;
  a.workspace_bytes = workspace_bytes;
  return run([](const void* p, void* s) { maskrt::cam_overlay_cuda(*static_cast<const maskrt::CamOverlayArgs*>(p), s); },
             &a);
}

EMU_EXPORT const char* emu_cam_overlay_boxes(const void* features, int fp16, const float* weights, std::int64_t num_classes,
                                  const void* classes, const void* frame_index, const void* boxes,
                                  std::int64_t faces, const std::uint8_t* frames, std::uint8_t* overlays,
                                  std::int64_t n, std::int64_t height, std::int64_t width, float alpha, int rgb) {
  maskrt::CamBoxesArgs a;
  a.features = features;
  a.feature_type = fp16 ? maskrt::FeatureType::kFloat16 : maskrt::FeatureType::kFloat32;
  a.weights = weights;
  a.num_classes = num_classes;
  a.classes = classes;
  a.frame_index = frame_index;
  a.boxes = boxes;
  a.faces = faces;
  a.frames = frames;
  a.overlays = overlays;
  a.n = n;
  a.height = height;
  a.width = width;
  a.alpha = alpha;
  a.rgb = rgb != 0;
  return run([](const void* p, void* s) { maskrt::cam_overlay_boxes_cuda(*static_cast<const maskrt::CamBoxesArgs*>(p), s); },
             &a);
}

EMU_EXPORT int emu_launches() { return emu::launches; }
EMU_EXPORT void emu_set_max_smem_optin(int bytes) { emu::max_smem_optin = bytes; }
}
