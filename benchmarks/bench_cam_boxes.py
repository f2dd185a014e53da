"""CAM overlay of detected faces in full-size frames: maskrt's C++ box kernel vs the NumPy/OpenCV reference.

What is timed, per call (inputs prepared beforehand, the output allocated inside):

* ``maskrt``: ``maskrt.cam.cam_overlay_boxes`` on NumPy arrays (C++ kernel, all cores): copy of
  the frames, then every face's CAM, resized to its box, coloured and blended into it.
* ``reference``: ``maskrt.cam.cam_reference_boxes``: the same steps in NumPy + OpenCV, one face
  at a time (``frames.copy()``, then ``cv2.resize`` / ``cv2.applyColorMap`` / blend per box).

The contenders run in turn within each iteration (maskrt.tools.bench.time_interleaved), so a
shared machine's speed drifts hit both alike. Prints the machine, medians, IQRs and the ratio.
Default: one 1080p frame with 8 non-overlapping faces of about 100 pixels. Example:

    python benchmarks/bench_cam_boxes.py --iterations 30 --json out/bench_cam_boxes.json
"""

from __future__ import annotations

import argparse

import numpy as np

from maskrt.tools.bench import machine_info, time_interleaved


def face_boxes(rng: np.random.Generator, faces: int, size: int, h: int, w: int) -> np.ndarray:
    """`faces` boxes of size +-10% in a grid of cells over the frame, so they never overlap."""
    cols = int(np.ceil(np.sqrt(faces * w / h)))
    rows = int(np.ceil(faces / cols))
    cell_h, cell_w = h // rows, w // cols
    boxes = []
    for k in range(faces):
        bh, bw = (int(size * rng.uniform(0.9, 1.1)) for _ in range(2))
        bh, bw = min(bh, cell_h), min(bw, cell_w)
        y0 = (k // cols) * cell_h + int(rng.integers(0, cell_h - bh + 1))
        x0 = (k % cols) * cell_w + int(rng.integers(0, cell_w - bw + 1))
        boxes.append([x0, y0, x0 + bw, y0 + bh])
    return np.array(boxes, np.int64)


def make_inputs(frames: int, faces: int, size: int, h: int, w: int, seed: int = 0):
    """Post-ReLU-like features, small weights, faces spread evenly over the frames."""
    rng = np.random.default_rng(seed)
    r = frames * faces
    features = np.maximum(rng.normal(0.3, 1.0, size=(r, 512, 7, 7)), 0).astype(np.float32)
    weights = (rng.normal(size=(2, 512)) * 0.05).astype(np.float32)
    classes = rng.integers(0, 2, size=r).astype(np.int64)
    frame_index = np.repeat(np.arange(frames, dtype=np.int64), faces)
    boxes = np.concatenate([face_boxes(rng, faces, size, h, w) for _ in range(frames)])
    images = rng.integers(0, 256, size=(frames, h, w, 3), dtype=np.uint8)
    return features, weights, classes, frame_index, boxes, images


def run(args: argparse.Namespace) -> dict:
    from maskrt import _C
    from maskrt.cam import cam_overlay_boxes, cam_reference_boxes

    inputs = make_inputs(args.frames, args.faces, args.face_size, args.height, args.width)
    # Time only contenders that agree: within 1 level except at rare JET level boundaries.
    off = np.mean(np.abs(cam_overlay_boxes(*inputs).astype(np.int16) - cam_reference_boxes(*inputs)) > 1)
    if off > 1e-3:
        raise SystemExit(f"maskrt and the reference disagree on {off:.2%} of the output bytes")
    machine = {**machine_info(), "maskrt_threads": _C.num_threads()}
    print(f"machine: {machine['cpu']}, {machine['cores']} cores, load {machine['load_1min']}; "
          f"maskrt threads {machine['maskrt_threads']}")
    print(f"{args.frames} frame(s) {args.height}x{args.width}, {args.faces} faces of ~{args.face_size} px each; "
          f"{args.iterations} interleaved iterations after {args.warmup} warm-up")
    seconds = time_interleaved({"maskrt": lambda: cam_overlay_boxes(*inputs),
                                "reference": lambda: cam_reference_boxes(*inputs)},
                               iterations=args.iterations, warmup=args.warmup)
    stats = {name: summary(s) for name, s in seconds.items()}
    ratio = stats["reference"]["median_ms"] / stats["maskrt"]["median_ms"]
    for name, s in stats.items():
        print(f"  {name:10s} median {s['median_ms']:8.3f} ms  IQR {s['iqr_ms']:7.3f} ms  min {s['min_ms']:8.3f} ms")
    print(f"  maskrt is x{ratio:.1f} faster than the reference (ratio of medians)")
    return {"machine": machine, "config": vars(args), "results": stats, "speedup_vs_reference": ratio}


def summary(seconds: np.ndarray) -> dict[str, float]:
    q1, median, q3 = np.percentile(seconds, [25, 50, 75]) * 1e3
    return {"median_ms": median, "iqr_ms": q3 - q1, "min_ms": float(seconds.min()) * 1e3, "iterations": len(seconds)}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--frames", type=int, default=1)
    parser.add_argument("--faces", type=int, default=8, help="faces per frame")
    parser.add_argument("--face-size", type=int, default=100, help="box side in pixels (+-10%%)")
    parser.add_argument("--height", type=int, default=1080)
    parser.add_argument("--width", type=int, default=1920)
    parser.add_argument("--iterations", type=int, default=30)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--json", help="write the results to this file")
    args = parser.parse_args(argv)
    from maskrt.tools.bench import write_results

    write_results(args.json, run(args))


if __name__ == "__main__":
    main()
