// maskrt._C: the pybind11 module over the CAM overlay kernels.
//
// The Python wrapper (maskrt/cam.py) validates inputs and allocates outputs; the checks here are
// a cheap second line so that a direct call cannot make a kernel read or write out of bounds.
// Kernels take raw pointers, so this module links neither libtorch nor OpenCV.
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>

#include <cstdint>
#include <stdexcept>
#include <string>

#include "ops/cam_overlay.h"
#include "ops/jet.h"

namespace py = pybind11;

namespace maskrt {

#if !defined(MASKRT_WITH_CUDA)
bool cuda_compiled() { return false; }
int cuda_device_count() { return 0; }
void cam_overlay_cuda(const CamOverlayArgs&, void*) {
  throw std::runtime_error("maskrt was built without CUDA (MASKRT_CUDA=off or no nvcc)");
}
void cam_overlay_boxes_cuda(const CamBoxesArgs&, void*) { cam_overlay_cuda(CamOverlayArgs{}, nullptr); }
#endif

namespace {

std::string shape_of(const py::array& a) {
  std::string s = "[";
  for (py::ssize_t i = 0; i < a.ndim(); ++i) s += (i ? ", " : "") + std::to_string(a.shape(i));
  return s + "]";
}

void require(bool ok, const std::string& message) {
  if (!ok) throw std::invalid_argument(message);
}

std::string dtype_name(const py::array& a) { return py::str(a.dtype()).cast<std::string>(); }

// `dtype` is NumPy's name ("float32"...); a byte-swapped array prints differently and is refused.
void require_array(const py::array& a, const char* name, int ndim, const std::string& dtype) {
  require(a.ndim() == ndim, std::string(name) + ": expected " + std::to_string(ndim) + " dimensions, got " +
                                std::to_string(a.ndim()));
  require(dtype_name(a) == dtype, std::string(name) + ": expected dtype " + dtype + ", got " + dtype_name(a));
  require((a.flags() & py::array::c_style) != 0, std::string(name) + ": expected a C-contiguous array");
}

// Both entry points describe a batch the same way; only where the pointers come from differs.
void fill_args(CamOverlayArgs& args, const void* features, bool fp16, const float* weights, std::int64_t num_classes,
               const void* classes, bool classes_int32, const std::uint8_t* images, std::uint8_t* overlays,
               std::int64_t n, std::int64_t height, std::int64_t width, float alpha, bool rgb) {
  args.features = features;
  args.feature_type = fp16 ? FeatureType::kFloat16 : FeatureType::kFloat32;
  args.weights = weights;
  args.num_classes = num_classes;
  args.classes = classes;
  args.classes_int32 = classes_int32;
  args.images = images;
  args.overlays = overlays;
  args.n = n;
  args.height = height;
  args.width = width;
  args.alpha = alpha;
  args.rgb = rgb;
}

void cam_overlay_cpu_py(const py::array& features, const py::array& weights, const py::array& classes,
                        const py::array& images, py::array& overlays, py::object heatmaps, float alpha, bool rgb,
                        int num_threads) {
  const bool half = dtype_name(features) == "float16";
  require_array(features, "features", 4, half ? "float16" : "float32");
  require_array(weights, "weights", 2, "float32");
  require_array(classes, "classes", 1, "int64");
  require_array(images, "images", 4, "uint8");
  require_array(overlays, "overlays", 4, "uint8");
  require(overlays.writeable(), "overlays: expected a writeable array");
  const py::ssize_t n = images.shape(0), h = images.shape(1), w = images.shape(2);
  require(features.shape(0) == n && features.shape(1) == kFeatureChannels && features.shape(2) == kCamSide &&
              features.shape(3) == kCamSide,
          "features: expected shape [" + std::to_string(n) + ", 512, 7, 7], got " + shape_of(features));
  require(weights.shape(1) == kFeatureChannels, "weights: expected shape [C, 512], got " + shape_of(weights));
  require(classes.shape(0) == n, "classes: expected shape [" + std::to_string(n) + "], got " + shape_of(classes));
  require(images.shape(3) == 3, "images: expected shape [N, H, W, 3], got " + shape_of(images));
  require(overlays.shape(0) == n && overlays.shape(1) == h && overlays.shape(2) == w && overlays.shape(3) == 3,
          "overlays: expected shape " + shape_of(images) + ", got " + shape_of(overlays));
  require(alpha >= 0.f && alpha <= 1.f, "alpha: expected a value in [0, 1], got " + std::to_string(alpha));

  CamOverlayArgs args;
  if (!heatmaps.is_none()) {
    auto hm = heatmaps.cast<py::array>();
    require_array(hm, "heatmaps", 3, "float32");
    require(hm.writeable(), "heatmaps: expected a writeable array");
    require(hm.shape(0) == n && hm.shape(1) == h && hm.shape(2) == w,
            "heatmaps: expected shape [" + std::to_string(n) + ", " + std::to_string(h) + ", " + std::to_string(w) +
                "], got " + shape_of(hm));
    args.heatmaps = static_cast<float*>(hm.mutable_data());
  }
  fill_args(args, features.data(), half, static_cast<const float*>(weights.data()), weights.shape(0), classes.data(),
            false, static_cast<const std::uint8_t*>(images.data()), static_cast<std::uint8_t*>(overlays.mutable_data()),
            n, h, w, alpha, rgb);
  py::gil_scoped_release release;
  cam_overlay_cpu(args, num_threads);
}

void cam_overlay_cuda_py(std::uintptr_t features, bool features_fp16, std::uintptr_t weights, std::int64_t num_classes,
                         std::uintptr_t classes, bool classes_int32, std::uintptr_t images, std::uintptr_t overlays,
                         std::uintptr_t heatmaps, std::int64_t n, std::int64_t height, std::int64_t width, float alpha,
                         bool rgb, std::uintptr_t workspace, std::int64_t workspace_bytes, std::uintptr_t stream) {
  if (!cuda_compiled()) cam_overlay_cuda(CamOverlayArgs{}, nullptr);  // throws the "built without CUDA" error
  require(n >= 0 && height >= 0 && width >= 0 && num_classes > 0, "cam_overlay_cuda: expected n, height, width >= 0 "
                                                                  "and num_classes > 0");
  require(alpha >= 0.f && alpha <= 1.f, "alpha: expected a value in [0, 1], got " + std::to_string(alpha));
  require(n == 0 || (features && weights && classes && images && overlays),
          "cam_overlay_cuda: expected non-null device pointers");
  CamOverlayArgs args;
  args.heatmaps = reinterpret_cast<float*>(heatmaps);
  fill_args(args, reinterpret_cast<const void*>(features), features_fp16, reinterpret_cast<const float*>(weights),
            num_classes, reinterpret_cast<const void*>(classes), classes_int32,
            reinterpret_cast<const std::uint8_t*>(images), reinterpret_cast<std::uint8_t*>(overlays), n, height, width,
            alpha, rgb);
  args.workspace = reinterpret_cast<void*>(workspace);
  args.workspace_bytes = workspace_bytes;
  py::gil_scoped_release release;
  cam_overlay_cuda(args, reinterpret_cast<void*>(stream));
}

// Per-face index arrays may be int64 or int32; returns whether it is int32.
bool require_index_array(const py::array& a, const char* name, int ndim) {
  const bool int32 = dtype_name(a) == "int32";
  require_array(a, name, ndim, int32 ? "int32" : "int64");
  return int32;
}

void require_face_count(const py::array& a, const char* name, py::ssize_t faces, const std::string& tail) {
  require(a.shape(0) == faces, std::string(name) + ": expected shape [" + std::to_string(faces) + tail + "], got " +
                                   shape_of(a));
}

void cam_overlay_boxes_cpu_py(const py::array& features, const py::array& weights, const py::array& classes,
                              const py::array& frame_index, const py::array& boxes, const py::array& frames,
                              py::array& overlays, float alpha, bool rgb, int num_threads) {
  const bool half = dtype_name(features) == "float16";
  require_array(features, "features", 4, half ? "float16" : "float32");
  require_array(weights, "weights", 2, "float32");
  CamBoxesArgs args;
  args.classes_int32 = require_index_array(classes, "classes", 1);
  args.frame_index_int32 = require_index_array(frame_index, "frame_index", 1);
  args.boxes_int32 = require_index_array(boxes, "boxes", 2);
  require_array(frames, "frames", 4, "uint8");
  require_array(overlays, "overlays", 4, "uint8");
  require(overlays.writeable(), "overlays: expected a writeable array");
  const py::ssize_t r = features.shape(0);
  require(features.shape(1) == kFeatureChannels && features.shape(2) == kCamSide && features.shape(3) == kCamSide,
          "features: expected shape [R, 512, 7, 7], got " + shape_of(features));
  require(weights.shape(1) == kFeatureChannels, "weights: expected shape [C, 512], got " + shape_of(weights));
  require_face_count(classes, "classes", r, "");
  require_face_count(frame_index, "frame_index", r, "");
  require_face_count(boxes, "boxes", r, ", 4");
  require(boxes.shape(1) == 4, "boxes: expected shape [" + std::to_string(r) + ", 4], got " + shape_of(boxes));
  require(frames.shape(3) == 3, "frames: expected shape [N, H, W, 3], got " + shape_of(frames));
  require(overlays.shape(0) == frames.shape(0) && overlays.shape(1) == frames.shape(1) &&
              overlays.shape(2) == frames.shape(2) && overlays.shape(3) == 3,
          "overlays: expected shape " + shape_of(frames) + ", got " + shape_of(overlays));
  require(alpha >= 0.f && alpha <= 1.f, "alpha: expected a value in [0, 1], got " + std::to_string(alpha));

  args.features = features.data();
  args.feature_type = half ? FeatureType::kFloat16 : FeatureType::kFloat32;
  args.weights = static_cast<const float*>(weights.data());
  args.num_classes = weights.shape(0);
  args.classes = classes.data();
  args.frame_index = frame_index.data();
  args.boxes = boxes.data();
  args.faces = r;
  args.frames = static_cast<const std::uint8_t*>(frames.data());
  args.overlays = static_cast<std::uint8_t*>(overlays.mutable_data());
  args.n = frames.shape(0);
  args.height = frames.shape(1);
  args.width = frames.shape(2);
  args.alpha = alpha;
  args.rgb = rgb;
  py::gil_scoped_release release;
  cam_overlay_boxes_cpu(args, num_threads);
}

void cam_overlay_boxes_cuda_py(std::uintptr_t features, bool features_fp16, std::uintptr_t weights,
                               std::int64_t num_classes, std::uintptr_t classes, bool classes_int32,
                               std::uintptr_t frame_index, bool frame_index_int32, std::uintptr_t boxes,
                               bool boxes_int32, std::int64_t faces, std::uintptr_t frames, std::uintptr_t overlays,
                               std::int64_t n, std::int64_t height, std::int64_t width, float alpha, bool rgb,
                               std::uintptr_t stream) {
  if (!cuda_compiled()) cam_overlay_boxes_cuda(CamBoxesArgs{}, nullptr);  // throws the "built without CUDA" error
  require(faces >= 0 && n >= 0 && height >= 0 && width >= 0 && num_classes > 0,
          "cam_overlay_boxes_cuda: expected faces, n, height, width >= 0 and num_classes > 0");
  require(alpha >= 0.f && alpha <= 1.f, "alpha: expected a value in [0, 1], got " + std::to_string(alpha));
  require(n * height * width == 0 || (frames && overlays), "cam_overlay_boxes_cuda: expected non-null frame pointers");
  require(faces == 0 || (features && weights && classes && frame_index && boxes),
          "cam_overlay_boxes_cuda: expected non-null face pointers");
  CamBoxesArgs args;
  args.features = reinterpret_cast<const void*>(features);
  args.feature_type = features_fp16 ? FeatureType::kFloat16 : FeatureType::kFloat32;
  args.weights = reinterpret_cast<const float*>(weights);
  args.num_classes = num_classes;
  args.classes = reinterpret_cast<const void*>(classes);
  args.classes_int32 = classes_int32;
  args.frame_index = reinterpret_cast<const void*>(frame_index);
  args.frame_index_int32 = frame_index_int32;
  args.boxes = reinterpret_cast<const void*>(boxes);
  args.boxes_int32 = boxes_int32;
  args.faces = faces;
  args.frames = reinterpret_cast<const std::uint8_t*>(frames);
  args.overlays = reinterpret_cast<std::uint8_t*>(overlays);
  args.n = n;
  args.height = height;
  args.width = width;
  args.alpha = alpha;
  args.rgb = rgb;
  py::gil_scoped_release release;
  cam_overlay_boxes_cuda(args, reinterpret_cast<void*>(stream));
}

py::array_t<std::uint8_t> jet_colormap() {
  py::array_t<std::uint8_t> table({256, 3});
  auto* out = table.mutable_data();
  for (int v = 0; v < 256; ++v)
    for (int c = 0; c < 3; ++c) out[v * 3 + c] = kJetBgr[v][c];
  return table;
}

}  // namespace
}  // namespace maskrt

PYBIND11_MODULE(_C, m) {
  using namespace maskrt;
  m.doc() = "maskrt compiled kernels: fused CAM + JET overlay on the CPU and (when built with it) CUDA.";
  m.def("has_cuda", &cuda_compiled, "Whether the CUDA kernels were compiled into this build.");
  m.def("cuda_device_count", &cuda_device_count,
        "Number of usable CUDA devices right now; 0 without a driver, a device or CUDA support. Never raises.");
  m.def("num_threads", &cpu_default_num_threads, "Threads the CPU kernel uses at most (the CPUs this process may run on).");
  m.def("jet_colormap", &jet_colormap, "OpenCV COLORMAP_JET as uint8[256, 3], BGR order.");
  m.def("cam_overlay_cpu", &cam_overlay_cpu_py, py::arg("features"), py::arg("weights"), py::arg("classes"),
        py::arg("images"), py::arg("overlays"), py::arg("heatmaps") = py::none(), py::arg("alpha") = 0.5f,
        py::arg("rgb") = false, py::arg("num_threads") = 0,
        "CPU kernel on NumPy arrays: features float32|float16[N,512,7,7], weights float32[C,512], classes "
        "int64[N], images uint8[N,H,W,3]; writes overlays uint8[N,H,W,3] and optionally heatmaps float32[N,H,W]. "
        "Releases the GIL.");
  // Keyword-only: fifteen integers in a row are too easy to pass in the wrong order.
  m.def("cam_overlay_cuda", &cam_overlay_cuda_py, py::kw_only(), py::arg("features"), py::arg("features_fp16"), py::arg("weights"),
        py::arg("num_classes"), py::arg("classes"), py::arg("classes_int32"), py::arg("images"), py::arg("overlays"),
        py::arg("heatmaps"), py::arg("n"), py::arg("height"), py::arg("width"), py::arg("alpha"), py::arg("rgb"),
        py::arg("workspace"), py::arg("workspace_bytes"), py::arg("stream"),
        "CUDA kernel on device pointers (integers); two launches on `stream` (a cudaStream_t as an integer), no "
        "synchronisation. heatmaps = 0 for none. workspace: a 16-byte aligned device buffer of at least "
        "cam_overlay_workspace_bytes(n, height, width) bytes that the caller owns (reusable once the call's work on "
        "the stream is done). A class index outside [0, num_classes) gives that image a NaN heat map and an "
        "unmodified copy of the image.");
  m.def("cam_overlay_workspace_bytes", &cam_overlay_workspace_bytes, py::arg("n"), py::arg("height"), py::arg("width"),
        "Bytes of device scratch one cam_overlay_cuda call on n images of height x width needs.");
  m.def("cam_overlay_boxes_cpu", &cam_overlay_boxes_cpu_py, py::arg("features"), py::arg("weights"),
        py::arg("classes"), py::arg("frame_index"), py::arg("boxes"), py::arg("frames"), py::arg("overlays"),
        py::arg("alpha") = 0.5f, py::arg("rgb") = false, py::arg("num_threads") = 0,
        "CPU box kernel on NumPy arrays: features float32|float16[R,512,7,7], weights float32[C,512], classes, "
        "frame_index int64|int32[R], boxes int64|int32[R,4] (x0, y0, x1, y1, end-exclusive), frames uint8[N,H,W,3]; "
        "writes overlays uint8[N,H,W,3]: the frames with each face's CAM blended into its box (the highest face index "
        "wins where boxes overlap). Releases the GIL.");
  // Keyword-only, like cam_overlay_cuda: nineteen arguments, most of them integers.
  m.def("cam_overlay_boxes_cuda", &cam_overlay_boxes_cuda_py, py::kw_only(), py::arg("features"),
        py::arg("features_fp16"), py::arg("weights"), py::arg("num_classes"), py::arg("classes"),
        py::arg("classes_int32"), py::arg("frame_index"), py::arg("frame_index_int32"), py::arg("boxes"),
        py::arg("boxes_int32"), py::arg("faces"), py::arg("frames"), py::arg("overlays"), py::arg("n"),
        py::arg("height"), py::arg("width"), py::arg("alpha"), py::arg("rgb"), py::arg("stream"),
        "CUDA box kernel on device pointers (integers): a device-to-device copy and one launch on `stream`, no "
        "synchronisation. A face whose class, frame index or box is out of range is skipped (its box keeps the "
        "copied pixels).");
}
