// CPU kernel for the CAM overlay of face boxes in full-size frames (cam_overlay_boxes).
//
// Plan: per face (threaded), the 7x7 CAM, the resize tables for its box size and the map state
// (cam_cpu.h, the same code as the whole-image kernel, so a box covering the frame gives the same
// bytes). Then one pass over the frames' rows (threaded): copy the row, then, for each face of
// that frame in increasing index whose box spans the row, overwrite the box's segment with the
// blended colours, computed from the input row. Overwriting in index order makes the face with
// the highest index win where boxes overlap, and keeps the result independent of the threading.
#include <stdexcept>
#include <string>
#include <vector>

#include "ops/cam_overlay.h"
#include "ops/cpu/cam_cpu.h"

namespace maskrt {
namespace {

struct FacePlan {
  FaceBox box{};
  std::int64_t frame = 0;
  cpu::AxisTable ys, xs;
  cpu::MapState map;
};

std::string box_text(const FaceBox& b) {
  return "[" + std::to_string(b.x0) + ", " + std::to_string(b.y0) + ", " + std::to_string(b.x1) + ", " +
         std::to_string(b.y1) + "]";
}

// The binding's second line of defence: nothing out of range reaches the row pass.
void check_face(const CamBoxesArgs& a, std::int64_t r) {
  const std::int64_t c = index_at(a.classes, a.classes_int32, r);
  const std::int64_t n = index_at(a.frame_index, a.frame_index_int32, r);
  const FaceBox b = box_at(a.boxes, a.boxes_int32, r);
  if (face_in_range(a, c, n, b)) return;
  const std::string at = " at position " + std::to_string(r);
  if (c < 0 || c >= a.num_classes) {
    throw std::invalid_argument("classes: expected indices in [0, " + std::to_string(a.num_classes) + "), got " +
                                std::to_string(c) + at);
  }
  if (n < 0 || n >= a.n) {
    throw std::invalid_argument("frame_index: expected indices in [0, " + std::to_string(a.n) + "), got " +
                                std::to_string(n) + at);
  }
  throw std::invalid_argument("boxes: expected [x0, y0, x1, y1] with 0 <= x0 < x1 <= " + std::to_string(a.width) +
                              " and 0 <= y0 < y1 <= " + std::to_string(a.height) + ", got " + box_text(b) + at);
}

void plan_face(const CamBoxesArgs& a, std::int64_t r, FacePlan& f) {
  f.box = box_at(a.boxes, a.boxes_int32, r);
  f.frame = index_at(a.frame_index, a.frame_index_int32, r);
  f.ys = cpu::make_axis(f.box.y1 - f.box.y0, /*clamp_weights=*/false);
  f.xs = cpu::make_axis(f.box.x1 - f.box.x0, /*clamp_weights=*/true);
  float cam[kCamCells];
  const std::int64_t c = index_at(a.classes, a.classes_int32, r);
  cpu::compute_cam(a.features, a.feature_type, r, a.weights + c * kFeatureChannels, cam);
  cpu::prepare_map(cam, f.ys, f.xs, f.map);
}

// Faces of each frame, in increasing index: the order in which they are drawn.
std::vector<std::vector<std::int64_t>> faces_by_frame(const std::vector<FacePlan>& faces, std::int64_t n) {
  std::vector<std::vector<std::int64_t>> by_frame(static_cast<std::size_t>(n));
  for (std::size_t r = 0; r < faces.size(); ++r) by_frame[faces[r].frame].push_back(static_cast<std::int64_t>(r));
  return by_frame;
}

}  // namespace

void cam_overlay_boxes_cpu(const CamBoxesArgs& a, int num_threads) {
  if (a.n <= 0 || a.height <= 0 || a.width <= 0) {
    if (a.faces > 0) check_face(a, 0);  // every face is out of range of an empty frame batch
    return;
  }
  for (std::int64_t r = 0; r < a.faces; ++r) check_face(a, r);
  const std::int64_t H = a.height, W = a.width;
  const int threads = cpu::threads_for(a.n * H * W, num_threads, cpu_default_num_threads());
  const cpu::BlendTables bt = cpu::make_blend_tables(a.alpha, a.rgb);

  std::vector<FacePlan> faces(static_cast<std::size_t>(a.faces));
  cpu::parallel_chunks(a.faces, 1, threads, [&](std::int64_t b, std::int64_t e) {
    for (std::int64_t r = b; r < e; ++r) plan_face(a, r, faces[r]);
  });
  const auto by_frame = faces_by_frame(faces, a.n);

  cpu::parallel_chunks(a.n * H, cpu::row_grain(W), threads, [&](std::int64_t b, std::int64_t e) {
    cpu::RowScratch rs(W);
    for (std::int64_t row = b; row < e; ++row) {
      const std::int64_t n = row / H, y = row % H;
      const std::uint8_t* src = a.frames + row * W * 3;
      std::uint8_t* dst = a.overlays + row * W * 3;
      std::memcpy(dst, src, static_cast<std::size_t>(W * 3));
      for (std::int64_t r : by_frame[n]) {
        const FacePlan& f = faces[r];
        if (y < f.box.y0 || y >= f.box.y1) continue;
        const std::int64_t x0 = f.box.x0 * 3;
        cpu::write_row(f.map, f.box.x1 - f.box.x0, f.ys.samples[y - f.box.y0], bt, a.alpha, src + x0, dst + x0,
                       rs.heat.data(), rs);
      }
    }
  });
}

}  // namespace maskrt
