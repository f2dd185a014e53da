"""Choose the tracker's association settings on camera clips: detect once, track many ways.

    python benchmarks/tune_tracks.py clips/train clips/val --grid high_score=0.5,0.6,0.7,0.8
    python benchmarks/tune_tracks.py clips/val --grid camera_motion=0,1 --grid max_lost=10,30,60

Each CLIPS_DIR is a clip set of ``../shared/tools/make_clips.py`` made from scenes train or val
(never tune on anything else). The faces of every frame are found once with the default preset
(as ``maskrt score`` finds them) and the camera's motion estimated once; then every combination
of ``--grid`` values is tracked with :class:`maskrt.track.bytetrack.ByteTracker` and scored with
the identity metrics of ``../shared/tools/README.md`` (``maskrt.train.clips``). Decisions need the
classifier: measure those with ``maskrt eval CLIPS_DIR``.
"""

from __future__ import annotations

import argparse
import itertools
import json
import time
from pathlib import Path
from typing import Any

import cv2
import numpy as np

KEYS = ("mota", "idf1", "id_switches", "det_recall", "det_precision", "pred_tracks_per_person")


def detect_clips(clip_dir: Path) -> dict[str, list[tuple[np.ndarray, np.ndarray, Any]]]:
    """Per clip, per frame: the face boxes and scores (default preset) and the camera motion."""
    from maskrt.detect import face_stage
    from maskrt.track.motion import CameraMotion

    stage = face_stage("default")
    out: dict[str, list[tuple[np.ndarray, np.ndarray, Any]]] = {}
    motion_s: list[float] = []  # what the camera-motion estimate costs per frame
    for avi in sorted(clip_dir.glob("*.avi")):
        capture, motion, frames = cv2.VideoCapture(str(avi)), CameraMotion(), []
        while True:
            ok, image = capture.read()
            if not ok:
                break
            regions, _ = stage.regions(stage.detector.detect([image])[0], image.shape)
            t0 = time.perf_counter()
            moved = motion.estimate(image)
            motion_s.append(time.perf_counter() - t0)
            frames.append((np.array([r.box for r in regions], np.float64).reshape(-1, 4),
                           np.array([r.score for r in regions], np.float64), moved))
        capture.release()
        out[str(avi)] = frames
        print(f"{avi.name}: {len(frames)} frames", flush=True)
    stage.close()
    print(f"camera motion: median {1000 * float(np.median(motion_s)):.1f} ms a frame", flush=True)
    return out


def track_metrics(detections: dict[str, list[Any]], clip_set: Any, options: dict[str, Any]) -> dict[str, Any]:
    from maskrt.track.bytetrack import ByteTracker
    from maskrt.track.settings import TrackSettings
    from maskrt.train.clips import clip_metrics

    settings = TrackSettings().with_options(options)
    records = []
    for avi, frames in detections.items():
        tracker = ByteTracker(settings)
        for index, (boxes, scores, motion) in enumerate(frames):
            update = tracker.update(boxes, scores, index,
                                    motion if settings.camera_motion else None)
            records += [{"source_id": avi, "frame_index": index, "status": "scored",
                         "region_index": i, "box": [int(v) for v in box],
                         "face_score": float(score), "track_id": track.track_id,
                         "label": "with_mask", "track_label": "with_mask"}
                        for i, (box, score, track) in enumerate(zip(boxes, scores, update.tracks))]
    report = clip_metrics(records, clip_set)
    return {k: round(report[k], 4) if isinstance(report[k], float) else report[k] for k in KEYS}


def parse_grid(items: list[str]) -> list[dict[str, Any]]:
    from maskrt.track.settings import parse_track_options

    axes = []
    for item in items:
        key, _, values = item.partition("=")
        axes.append([parse_track_options([f"{key}={v}"]) for v in values.split(",")])
    return [{k: v for part in combo for k, v in part.items()} for combo in itertools.product(*axes)]


def main() -> None:
    from maskrt.train.clips import load_clip_set

    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("clips", nargs="+", type=Path, help="clip sets (make_clips.py)")
    parser.add_argument("--grid", action="append", default=[], metavar="KEY=V1,V2,...")
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()
    grid = parse_grid(args.grid) or [{}]
    rows = []
    for clip_dir in args.clips:
        clip_set, detections = load_clip_set(clip_dir), detect_clips(clip_dir)
        for options in grid:
            rows.append({"clips": str(clip_dir), "options": options,
                         **track_metrics(detections, clip_set, options)})
            print(json.dumps(rows[-1]), flush=True)
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
