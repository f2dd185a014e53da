// CPU kernel for the fused CAM + JET overlay (ARCHITECTURE.md, "CAM and overlay: the exact arithmetic").
//
// Plan: per call, tabulate the x and y sampling of the 7 -> W and 7 -> H bilinear resize and the
// blend terms; per image, compute the normalised 7x7 CAM, its 7 horizontally resized source rows
// (7 x W floats) and the heat min/max from the candidate rows/columns; then one pass over the
// pixels, threaded over (image, row) ranges, writing the overlay (and the heat map when asked).
// The building blocks live in cam_cpu.h, shared with the box kernel.
#include "ops/cam_overlay.h"

#include <algorithm>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

#include "ops/cpu/cam_cpu.h"

#if defined(__linux__)
#include <sched.h>
#endif

namespace maskrt {
namespace {

std::int64_t class_of(const CamOverlayArgs& a, std::int64_t n) { return index_at(a.classes, a.classes_int32, n); }

void check_classes(const CamOverlayArgs& a) {
  for (std::int64_t n = 0; n < a.n; ++n) {
    const std::int64_t c = class_of(a, n);
    if (c < 0 || c >= a.num_classes) {
      throw std::invalid_argument("classes: expected indices in [0, " + std::to_string(a.num_classes) +
                                  "), got " + std::to_string(c) + " at position " + std::to_string(n));
    }
  }
}

void prepare_image(const CamOverlayArgs& a, std::int64_t n, const cpu::AxisTable& ys, const cpu::AxisTable& xs,
                   cpu::MapState& st) {
  float cam[kCamCells];
  cpu::compute_cam(a.features, a.feature_type, n, a.weights + class_of(a, n) * kFeatureChannels, cam);
  cpu::prepare_map(cam, ys, xs, st);
}

}  // namespace

int cpu_default_num_threads() {
#if defined(MASKRT_HAVE_OPENMP)
  return omp_get_max_threads();
#else
#if defined(__linux__)
  // The CPUs this process may run on (taskset, container cpusets), not all the machine's.
  cpu_set_t set;
  if (sched_getaffinity(0, sizeof set, &set) == 0) return std::max(1, CPU_COUNT(&set));
#endif
  return static_cast<int>(std::max(1u, std::thread::hardware_concurrency()));
#endif
}

void cam_overlay_cpu(const CamOverlayArgs& a, int num_threads) {
  if (a.n <= 0 || a.height <= 0 || a.width <= 0) return;
  check_classes(a);
  const int threads = cpu::threads_for(a.n * a.height * a.width, num_threads, cpu_default_num_threads());
  const cpu::AxisTable ys = cpu::make_axis(a.height, /*clamp_weights=*/false);
  const cpu::AxisTable xs = cpu::make_axis(a.width, /*clamp_weights=*/true);
  const cpu::BlendTables bt = cpu::make_blend_tables(a.alpha, a.rgb);

  std::vector<cpu::MapState> states(static_cast<std::size_t>(a.n));
  cpu::parallel_chunks(a.n, 1, threads, [&](std::int64_t b, std::int64_t e) {
    for (std::int64_t n = b; n < e; ++n) prepare_image(a, n, ys, xs, states[n]);
  });

  const std::int64_t H = a.height, W = a.width;
  cpu::parallel_chunks(a.n * H, cpu::row_grain(W), threads, [&](std::int64_t b, std::int64_t e) {
    cpu::RowScratch rs(W);
    for (std::int64_t r = b; r < e; ++r) {
      const std::int64_t n = r / H, i = r % H;
      float* heat = a.heatmaps ? a.heatmaps + r * W : rs.heat.data();
      cpu::write_row(states[n], W, ys.samples[i], bt, a.alpha, a.images + r * W * 3, a.overlays + r * W * 3, heat, rs);
    }
  });
}

}  // namespace maskrt
