"""Choose the tracker's association settings on camera clips: detect once, track many ways.

    python benchmarks/tune_tracks.py clips/train clips/val --grid high_score=0.5,0.6,0.7,0.8
    python benchmarks/tune_tracks.py clips/val --grid camera_motion=0,1 --grid max_lost=10,30,60
    python benchmarks/tune_tracks.py clips/train clips/val --cache runs/dets --grid steady_hits=0,5

Each CLIPS_DIR is a clip set of ``../shared/tools/make_clips.py`` made from scenes train or val
(never tune on anything else). The faces of every frame are found once with the default preset
(as ``maskrt score`` finds them: every frame detected, at the source's scale; ``--face-option``
to change them) and the camera's motion estimated once; then every combination
of ``--grid`` values is tracked with :class:`maskrt.track.bytetrack.ByteTracker` and scored with
the identity metrics of ``../shared/tools/README.md`` (``maskrt.train.clips``) and
``people_tracked``: the share of the people the track decision accuracy counts that are in a
confirmed track (the accuracy a never-wrong classifier would give). Decisions need the
classifier: measure those with ``maskrt eval CLIPS_DIR``.
"""

from __future__ import annotations

import argparse
import itertools
import json
import time
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import cv2
import numpy as np

KEYS = ("mota", "idf1", "id_switches", "det_recall", "det_precision", "pred_tracks_per_person")


def detect_clips(clip_dir: Path, face_options: dict[str, Any] | None = None
                 ) -> dict[str, list[tuple[np.ndarray, np.ndarray, Any, bool]]]:
    """Per clip, per frame: the face boxes and scores (default preset with ``face_options``),
    the camera motion and whether a scene cut came before the frame."""
    from maskrt.detect import face_stage
    from maskrt.track.motion import CameraMotion

    stage = face_stage("default", **(face_options or {}))
    out: dict[str, list[tuple[np.ndarray, np.ndarray, Any, bool]]] = {}
    motion_s: list[float] = []  # what the camera-motion estimate costs per frame
    for avi in sorted(clip_dir.glob("*.avi")):
        capture, motion, frames = cv2.VideoCapture(str(avi)), CameraMotion(), []
        while True:
            ok, image = capture.read()
            if not ok:
                break
            # as the face stage detects a video's frame: the source's scale, probed now and
            # then (FaceStage._detect reads only a task's image and sequence key)
            image = stage.sharpened(image)
            frame = SimpleNamespace(image=image, sequence_key=(avi.name, None))
            regions, _ = stage.regions(stage._detect([frame])[0], image.shape)
            t0 = time.perf_counter()
            moved = motion.estimate(image)
            motion_s.append(time.perf_counter() - t0)
            frames.append((np.array([r.box for r in regions], np.float64).reshape(-1, 4),
                           np.array([r.score for r in regions], np.float64), moved, motion.cut))
        capture.release()
        out[str(avi)] = frames
        print(f"{avi.name}: {len(frames)} frames", flush=True)
    stage.close()
    print(f"camera motion: median {1000 * float(np.median(motion_s)):.1f} ms a frame", flush=True)
    return out


def cached_detections(clip_dir: Path, cache: Path | None, face_options: dict[str, Any]
                      ) -> dict[str, list[Any]]:
    """:func:`detect_clips`, read from ``cache`` when it holds this clip set's detections
    (one ``.npz`` per clip set and face options) and written there after detecting."""
    tag = "".join(f"-{k}={v}" for k, v in sorted(face_options.items()))
    path = None if cache is None else cache / f"{clip_dir.resolve().name}{tag}-detections-v2.npz"
    if path is not None and path.exists():
        saved = np.load(path)
        out = {}
        for name in saved["clips"]:
            counts, boxes, scores, motion, cuts = (saved[f"{name}/{k}"] for k in
                                                   ("counts", "boxes", "scores", "motion", "cut"))
            ends = np.cumsum(counts)
            out[str(clip_dir / name)] = [
                (boxes[e - n:e], scores[e - n:e], None if np.isnan(m).any() else m, bool(cut))
                for n, e, m, cut in zip(counts, ends, motion, cuts)]
        print(f"{clip_dir}: detections from {path}", flush=True)
        return out
    out = detect_clips(clip_dir, face_options)
    if path is not None:
        arrays: dict[str, Any] = {"clips": np.array([Path(k).name for k in out])}
        for key, frames in out.items():
            name = Path(key).name
            arrays[f"{name}/counts"] = np.array([len(f[0]) for f in frames])
            arrays[f"{name}/boxes"] = np.concatenate([f[0] for f in frames]).reshape(-1, 4)
            arrays[f"{name}/scores"] = np.concatenate([f[1] for f in frames])
            arrays[f"{name}/motion"] = np.stack([np.full((2, 3), np.nan) if f[2] is None else f[2]
                                                 for f in frames])
            arrays[f"{name}/cut"] = np.array([f[3] for f in frames], bool)
        path.parent.mkdir(parents=True, exist_ok=True)
        np.savez(path, **arrays)
    return out


def track_metrics(detections: dict[str, list[Any]], clip_set: Any, options: dict[str, Any]) -> dict[str, Any]:
    from maskrt.track.bytetrack import ByteTracker
    from maskrt.track.settings import TrackSettings
    from maskrt.train.clips import clip_metrics

    settings = TrackSettings().with_options(options)
    records = []
    for avi, frames in detections.items():
        tracker = ByteTracker(settings)
        for index, (boxes, scores, motion, cut) in enumerate(frames):
            if cut and settings.camera_motion and settings.scene_cut:
                tracker.finish()  # as SourceTracks does at a scene cut
            update = tracker.update(boxes, scores, index,
                                    motion if settings.camera_motion else None)
            records += [{"source_id": avi, "frame_index": index, "status": "scored",
                         "region_index": i, "box": [int(v) for v in box],
                         "face_score": float(score), "track_id": track.track_id,
                         "label": "with_mask", "track_label": "with_mask"}
                        for i, (box, score, track) in enumerate(zip(boxes, scores, update.tracks))]
    report = clip_metrics(records, clip_set)
    out = {k: round(report[k], 4) if isinstance(report[k], float) else report[k] for k in KEYS}
    # people (gt tracks the decision accuracy counts) in a confirmed track: the track decision
    # accuracy a classifier that is never wrong would give
    never = sum(w["predicted"] is None for w in report["wrong_decisions"])
    decided = report["counts"]["decided_tracks"]
    out["people_tracked"] = round(1.0 - never / decided, 4) if decided else float("nan")
    return out


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
    parser.add_argument("--face-option", action="append", default=[], metavar="KEY=VALUE",
                        help="detect with these face options (as maskrt score's)")
    parser.add_argument("--cache", type=Path, default=None, metavar="DIR",
                        help="keep each clip set's detections here and reuse them (delete the "
                             "file when the detector or its settings change)")
    args = parser.parse_args()
    from maskrt.detect import parse_face_options

    face_options = parse_face_options(args.face_option)
    grid = parse_grid(args.grid) or [{}]
    rows = []
    for clip_dir in args.clips:
        clip_set = load_clip_set(clip_dir)
        detections = cached_detections(clip_dir, args.cache, face_options)
        for options in grid:
            rows.append({"clips": str(clip_dir), "face_options": face_options, "options": options,
                         **track_metrics(detections, clip_set, options)})
            print(json.dumps(rows[-1]), flush=True)
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
