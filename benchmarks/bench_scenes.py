"""Faces in whole scenes, end to end, per preset, in one run.

For each preset (``default``, ``fast``):

* ``scenes``: the scene ``val`` photos through ``maskrt.Pipeline`` (read, decode, detect faces,
  crop, classify across frames, records), classify-only and with CAMs drawn into the frames,
  interleaved; images/s and faces/s (medians over ``--repeats``), explain/classify ratio, and the
  scene metric (mAP, AP per class and recall at IoU 0.5 and 0.3) from the pipeline's records.
* ``1080p``: an MJPG video of 1920x1080 frames, each a 2x2 mosaic of scene photos (about 15-20
  faces a frame), through the same pipeline: frames/s and faces/s.
* stage times: decode, detect, classify (the crops) and CAM (into the frames) measured one after
  another on one thread, ms per image: where the time goes.

    python benchmarks/bench_scenes.py [--repeats 2] [--precision fp32|int8] [--json out/bench_scenes.json]

On a GPU (benchmarks/gpu/run.sh does this): ``--backend torch --backend-option device=cuda
--face-option detector_device=cuda --face-option detector_backend=torch`` (or tensorrt), with
``--data`` pointing at a copy of the scene ``val`` split.

Don't run it while something else loads the CPU: the figures would mean nothing.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
import warnings
from pathlib import Path
from typing import Any

import cv2
import numpy as np

REPO = Path(__file__).resolve().parents[1]
SCENES = REPO.parent / "shared" / "data" / "scenes" / "val"


def run_pipeline(engine: Any, source: str, preset: str, explain: bool,
                 face_options: dict[str, Any]) -> tuple[float, list, dict]:
    from maskrt.stream.pipeline import Pipeline

    start = time.perf_counter()
    with Pipeline(engine, [source], regions="faces", preset=preset, explain=explain,
                  batch_size=32, max_wait_ms=20, face_options=face_options) as pipeline:
        records = list(pipeline)
    elapsed = time.perf_counter() - start
    counters = pipeline.counters()
    if counters["total"]["scored"] != counters["total"]["read"]:
        raise SystemExit(f"pipeline lost frames: {counters['total']}")
    return elapsed, records, counters


def scene_metric(records: list, scenes: list) -> dict[str, Any]:
    from maskrt.train.voc_metric import Detections, evaluate

    by_image: dict[str, list] = {}
    for record in records:
        if record.label is not None:
            by_image.setdefault(Path(record.uri).name, []).append(record)
    dets = []
    for scene in scenes:
        faces = by_image.get(scene.image.name, [])
        dets.append(Detections.make(
            [r.box for r in faces], [r.label for r in faces],
            [r.face_score * max(r.p_with_mask, r.p_without_mask) for r in faces],
            [r.face_score for r in faces]))
    truth = [s.truth for s in scenes]
    s50, s30 = evaluate(dets, truth, 0.5), evaluate(dets, truth, 0.3)
    return {"map50": s50.map, "map30": s30.map, "ap50": s50.ap, "ap30": s30.ap,
            "recall50": s50.recall, "recall30": s30.recall}


def mosaic_video(directory: Path, frames: int, scenes: list) -> Path:
    photos = [cv2.imread(str(s.image)) for s in scenes[:4 * frames]]
    path = directory / "mosaic_1080p.avi"
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), 25.0, (1920, 1080))
    for i in range(frames):
        tiles = [cv2.resize(photos[(4 * i + k) % len(photos)], (960, 540)) for k in range(4)]
        writer.write(np.vstack([np.hstack(tiles[:2]), np.hstack(tiles[2:])]))
    writer.release()
    return path


def stage_times(engine: Any, preset: str, paths: list[Path],
                face_options: dict[str, Any]) -> dict[str, float]:
    """ms per image of each step, one after another on this thread."""
    from maskrt.detect import face_stage
    from maskrt.image import decode_image, resize_to_input

    stage = face_stage(preset, None, engine.input_device, **face_options)
    times = dict.fromkeys(("decode", "detect", "classify", "cam"), 0.0)
    for path in paths:
        t0 = time.perf_counter()
        image = decode_image(path)
        t1 = time.perf_counter()
        image = stage.sharpened(image)
        (found,) = stage.detector.detect([image])
        regions = stage.regions(found, image.shape)[0]
        t2 = time.perf_counter()
        crops = [r.crop(image) for r in regions]
        if crops:
            batch = np.stack([resize_to_input(c) for c in crops])
            logits, features = engine.infer(batch)
            results = engine.results_from(logits)
        t3 = time.perf_counter()
        if crops:
            engine.explainer.draw_into_frames(features, np.array([r.class_index for r in results]),
                                              [0] * len(crops), [r.area for r in regions], [image])
        t4 = time.perf_counter()
        for key, seconds in zip(times, (t1 - t0, t2 - t1, t3 - t2, t4 - t3)):
            times[key] += seconds
    stage.close()
    return {key: 1000.0 * value / len(paths) for key, value in times.items()}


def bench_preset(engine: Any, preset: str, scenes: list, video: Path, repeats: int,
                 face_options: dict[str, Any]) -> dict:
    source = str(scenes[0].image.parent)
    runs: dict[bool, list[float]] = {False: [], True: []}
    faces: dict[bool, list[float]] = {False: [], True: []}
    metric = None
    for _ in range(repeats):
        for explain in (False, True):  # interleaved: machine drift hits both alike
            elapsed, records, _ = run_pipeline(engine, source, preset, explain, face_options)
            runs[explain].append(len(scenes) / elapsed)
            faces[explain].append(sum(1 for r in records if r.label) / elapsed)
            metric = metric or scene_metric(records, scenes)
    elapsed, records, _ = run_pipeline(engine, str(video), preset, False, face_options)
    frames_1080 = len({r.frame_index for r in records})
    return {
        "images_per_s": statistics.median(runs[False]),
        "images_per_s_explain": statistics.median(runs[True]),
        "explain_ratio": statistics.median(runs[True]) / statistics.median(runs[False]),
        "faces_per_s": statistics.median(faces[False]),
        "fps_1080p": frames_1080 / elapsed,
        "faces_per_s_1080p": sum(1 for r in records if r.label) / elapsed,
        "faces_per_frame_1080p": sum(1 for r in records if r.label) / max(1, frames_1080),
        "stage_ms": stage_times(engine, preset, [s.image for s in scenes], face_options),
        "metric": metric,
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--presets", nargs="+", default=["default", "fast"])
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--frames-1080p", type=int, default=12)
    parser.add_argument("--json", type=Path, default=None)
    parser.add_argument("--precision", choices=("fp32", "int8"), default=None,
                        help="the classifier's ONNX Runtime precision (default fp32; the detector "
                             "is unchanged)")
    parser.add_argument("--data", type=Path, default=SCENES, help=f"scene split (default {SCENES})")
    parser.add_argument("--backend", default="onnxruntime", help="the classifier's backend")
    parser.add_argument("--backend-option", action="append", default=[], metavar="KEY=VALUE")
    parser.add_argument("--face-option", action="append", default=[], metavar="KEY=VALUE",
                        help="detector settings over the presets', e.g. detector_device=cuda")
    args = parser.parse_args()
    sys.path.insert(0, str(REPO))
    from maskrt.backends.registry import parse_options
    from maskrt.detect import parse_face_options
    from maskrt.engine import Engine
    from maskrt.tools.bench import machine_info
    from maskrt.train.scenes import index_scenes

    options = parse_options(args.backend, args.backend_option)
    if args.backend == "onnxruntime":
        options.setdefault("precision", args.precision or "fp32")
    face_options = parse_face_options(args.face_option)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        engine = Engine(backend=args.backend, **options)
    scenes = index_scenes(args.data)
    machine = machine_info()
    results = {}
    with tempfile.TemporaryDirectory(prefix="maskrt-bench-scenes-") as tmp:
        video = mosaic_video(Path(tmp), args.frames_1080p, scenes)
        for preset in args.presets:
            results[preset] = bench_preset(engine, preset, scenes, video, args.repeats,
                                           face_options)
    print(f"machine: {machine['cpu']}, {machine['cores']} cores, load {machine['load_1min']}; "
          f"backend {engine.backend.describe()}; face options {face_options or 'the presets'};"
          f" {len(scenes)} scene photos ({args.data.name}); "
          f"{args.repeats} repeats, medians")
    print(f"{'preset':<8}{'img/s':>7}{'+CAM':>7}{'ratio':>7}{'faces/s':>9}{'1080p fr/s':>11}"
          f"{'faces/fr':>9}{'mAP50':>7}{'mAP30':>7}{'rec50 no':>9}  stage ms/img "
          "(decode/detect/classify/cam)")
    for preset, r in results.items():
        m, s = r["metric"], r["stage_ms"]
        print(f"{preset:<8}{r['images_per_s']:7.2f}{r['images_per_s_explain']:7.2f}"
              f"{r['explain_ratio']:7.2f}{r['faces_per_s']:9.1f}{r['fps_1080p']:11.2f}"
              f"{r['faces_per_frame_1080p']:9.1f}{m['map50']:7.3f}{m['map30']:7.3f}"
              f"{m['recall50']['without_mask']:9.3f}  {s['decode']:.1f}/{s['detect']:.1f}/"
              f"{s['classify']:.1f}/{s['cam']:.1f}")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps({"machine": machine, "backend": engine.backend.describe(),
                                         "face_options": face_options, "presets": results},
                                        indent=2, default=float) + "\n")
    engine.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
