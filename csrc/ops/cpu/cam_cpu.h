// CPU building blocks shared by the whole-image kernel (cam_overlay.cpp) and the box kernel
// (cam_overlay_boxes.cpp): resize tables, threading, the 7x7 CAM, the per-map heat
// normalisation and the blended output row. A "map" is the H x W area one CAM is resized to: a
// whole image for cam_overlay, a face's box for cam_overlay_boxes.
#pragma once

#include <algorithm>
#include <atomic>
#include <cstdint>
#include <cstring>
#include <thread>
#include <vector>

#include "ops/cam_overlay.h"
#include "ops/jet.h"

#if defined(MASKRT_HAVE_OPENMP)
#include <omp.h>
#endif

namespace maskrt {
namespace cpu {

struct AxisTable {
  std::vector<AxisSample> samples;
  std::vector<std::int64_t> candidates;  // indices that can hold the map's extremes
};

inline AxisTable make_axis(std::int64_t size, bool clamp_weights) {
  AxisTable t;
  const double scale = resize_scale(size);
  t.samples.reserve(static_cast<std::size_t>(size));
  for (std::int64_t i = 0; i < size; ++i) {
    t.samples.push_back(axis_sample(i, scale, clamp_weights));
    if (is_candidate(i, size, scale, clamp_weights)) t.candidates.push_back(i);
  }
  return t;
}

// Calls fn(begin, end) on consecutive chunks of [0, n) of `grain` items, handed out dynamically
// to `threads` workers: a worker that the OS deschedules (a busy machine) delays only its current
// chunk, not a fixed share of the work.
template <typename Fn>
void parallel_chunks(std::int64_t n, std::int64_t grain, int threads, Fn fn) {
  const std::int64_t chunks = (n + grain - 1) / grain;
  threads = static_cast<int>(std::max<std::int64_t>(1, std::min<std::int64_t>(threads, chunks)));
  auto run_chunk = [n, grain, &fn](std::int64_t c) { fn(c * grain, std::min(n, (c + 1) * grain)); };
  if (threads == 1) {
    for (std::int64_t c = 0; c < chunks; ++c) run_chunk(c);
    return;
  }
#if defined(MASKRT_HAVE_OPENMP)
#pragma omp parallel for num_threads(threads) schedule(dynamic, 1)
  for (std::int64_t c = 0; c < chunks; ++c) run_chunk(c);
#else
  std::atomic<std::int64_t> next{0};
  auto worker = [&] {
    for (std::int64_t c = next++; c < chunks; c = next++) run_chunk(c);
  };
  std::vector<std::thread> pool;
  pool.reserve(static_cast<std::size_t>(threads - 1));
  for (int t = 1; t < threads; ++t) pool.emplace_back(worker);
  worker();
  for (auto& th : pool) th.join();
#endif
}

// At most one thread per ~32K output pixels: a thread start costs tens of microseconds.
inline int threads_for(std::int64_t pixels, int num_threads, int default_threads) {
  const std::int64_t by_work = std::max<std::int64_t>(1, pixels / (std::int64_t{1} << 15));
  return static_cast<int>(std::min<std::int64_t>(num_threads > 0 ? num_threads : default_threads, by_work));
}

// Output rows per parallel chunk: about 64K pixels, big enough to amortise the scheduling and the
// scratch buffers, small enough to balance the load.
inline std::int64_t row_grain(std::int64_t width) { return std::max<std::int64_t>(1, (std::int64_t{1} << 16) / width); }

// Step 1: cam[p] = sum_k W[c, k] * F[item, k, p], accumulated in float32 in increasing k (the CUDA
// kernels use the same order). The loops over the 49 positions vectorise; float16 rows are first
// widened into a small buffer so that the accumulation loop is the same in both cases.
inline void accumulate(float wk, const float* f, float* cam) {
  for (int p = 0; p < kCamCells; ++p) cam[p] = add_rn(cam[p], mul_rn(wk, f[p]));
}

// Steps 1-3 for one item of `features`, with `w` the class's 512 weights.
inline void compute_cam(const void* features, FeatureType type, std::int64_t item, const float* w, float* cam) {
  const std::int64_t offset = item * kFeatureChannels * kCamCells;
  std::fill(cam, cam + kCamCells, 0.f);
  if (type == FeatureType::kFloat16) {
    const auto* f = static_cast<const std::uint16_t*>(features) + offset;
    float row[kCamCells];
    for (int k = 0; k < kFeatureChannels; ++k, f += kCamCells) {
      for (int p = 0; p < kCamCells; ++p) row[p] = half_bits_to_float(f[p]);
      accumulate(w[k], row, cam);
    }
  } else {
    const auto* f = static_cast<const float*>(features) + offset;
    for (int k = 0; k < kFeatureChannels; ++k, f += kCamCells) accumulate(w[k], f, cam);
  }
  normalise_cam(cam);
}

// Per map: the 7 source rows resized along x, and the heat normalisation (lo, 1 / range).
struct MapState {
  std::vector<float> rows;  // [7, W]
  float lo = 0.f, inv_range = 0.f;
};

// Step 4's horizontal pass and step 5's extremes for a normalised 7x7 cam resized to
// ys.samples.size() x xs.samples.size().
inline void prepare_map(const float* cam, const AxisTable& ys, const AxisTable& xs, MapState& st) {
  const auto W = static_cast<std::int64_t>(xs.samples.size());
  st.rows.resize(static_cast<std::size_t>(kCamSide * W));
  for (int s = 0; s < kCamSide; ++s) {
    float* row = st.rows.data() + s * W;
    for (std::int64_t j = 0; j < W; ++j) {
      const AxisSample& x = xs.samples[j];
      row[j] = interp_x(cam, s, x.s0, x.s1, x.w0, x.w1);
    }
  }
  // Step 5's min/max over the whole map, read off the candidate rows x candidate columns.
  float lo = 0.f, hi = 0.f;
  bool first = true;
  for (std::int64_t i : ys.candidates) {
    const AxisSample& y = ys.samples[i];
    const float* r0 = st.rows.data() + y.s0 * W;
    const float* r1 = st.rows.data() + y.s1 * W;
    for (std::int64_t j : xs.candidates) {
      const float m = interp_y(r0[j], r1[j], y.w0, y.w1);
      lo = first || m < lo ? m : lo;
      hi = first || m > hi ? m : hi;
      first = false;
    }
  }
  st.lo = lo;
  st.inv_range = div_rn(1.f, add_rn(sub_rn(hi, lo), kNormEps));
}

// Blend colour terms: (1 - alpha) * colour + 0.5 per level and channel (in the requested order),
// padded to 4 floats so the row gather below moves one 16-byte block per pixel.
struct BlendTables {
  float colour[256][4];
};

inline BlendTables make_blend_tables(float alpha, bool rgb) {
  BlendTables t;
  for (int v = 0; v < 256; ++v) {
    for (int c = 0; c < 3; ++c) t.colour[v][c] = colour_term(alpha, kJetBgr[v][rgb ? 2 - c : c]);
    t.colour[v][3] = 0.f;
  }
  return t;
}

// Per-thread row buffers for rows up to `w` pixels.
struct RowScratch {
  std::vector<float> heat;    // [W], used when no heat map is requested
  std::vector<int> level;     // [W]
  std::vector<float> colour;  // [3W + 1] colour terms per output byte (+1: the padded last copy)
  explicit RowScratch(std::int64_t w)
      : heat(static_cast<std::size_t>(w)), level(static_cast<std::size_t>(w)),
        colour(static_cast<std::size_t>(3 * w + 1)) {}
};

// Steps 5-7 for one output row of a map `width` pixels wide, in three passes so that the two
// arithmetic passes vectorise and only the colour-table gather stays scalar.
inline void write_row(const MapState& st, std::int64_t width, const AxisSample& y, const BlendTables& bt,
                      float alpha, const std::uint8_t* __restrict__ src, std::uint8_t* __restrict__ dst,
                      float* __restrict__ heat, RowScratch& rs) {
  const std::int64_t W = width;
  const float* __restrict__ r0 = st.rows.data() + y.s0 * W;
  const float* __restrict__ r1 = st.rows.data() + y.s1 * W;
  int* __restrict__ level = rs.level.data();
  float* __restrict__ colour = rs.colour.data();
  for (std::int64_t j = 0; j < W; ++j) {
    const float h = heat_value(interp_y(r0[j], r1[j], y.w0, y.w1), st.lo, st.inv_range);
    heat[j] = h;
    level[j] = heat_level(h);
  }
  // Overlapping 16-byte copies: pixel j's 4th float is overwritten by pixel j + 1.
  for (std::int64_t j = 0; j < W; ++j) std::memcpy(colour + 3 * j, bt.colour[level[j]], 4 * sizeof(float));
  for (std::int64_t k = 0; k < 3 * W; ++k) dst[k] = blend(pixel_term(alpha, src[k]), colour[k]);
}

}  // namespace cpu
}  // namespace maskrt
