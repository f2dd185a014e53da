"""Choose the face settings on the scene splits, and measure how they hold up.

Default mode, a grid on one split (``--data``, default ``scenes/val``): mAP (IoU 0.5 and 0.3)
and without_mask recall for upscale x widen x score threshold. Detection runs once per upscale
at the lowest threshold (NMS in score order means a higher threshold only filters: boxes under
it never suppress boxes over it), classification once per (upscale, widen); thresholds then
only filter. Prints a table sorted by mAP@0.5.

``--cv K``: the detector-scale rule (``upscale=auto``) chosen by K-fold cross-validation over
scenes train+val, folds by photo: every candidate (``--face-target`` x ``--max-scale``) and
the fixed ``--upscale`` factors (baselines, never chosen) score every photo once; each fold's
held-out photos are scored with the candidate that has the best mAP@0.5 on the other folds,
and the pooled held-out figure is the one to quote (beside each candidate's on all photos).
``--cv K --grid KEY=V1,V2,...`` (repeatable) cross-validates any face options the same way
(every combination of the grids' values over the default preset; no baselines), e.g.
``--grid widen=1.0,1.2,1.4 --grid score_threshold=0.1,0.2``.

``--report-threshold --cv K``: the default ``report_threshold`` (the least face score of a face
reported to people) by K-fold cross-validation over scenes train+val, folds by photo, for the
best F1 of reported faces (class-aware, IoU 0.5): every photo is scored once with the default
preset, then the ``--report-thresholds`` only filter. Prints precision, recall, F1 and false
without_mask alarms per 100 photos for each threshold, the folds' choices and the pooled
held-out figures (the ones to quote).

``--annotated-labels``: the default preset on ``--data`` as classified and with each detection
given its annotated face's label (a perfect classifier on the same detections): how much of
what is missing is the classifier's.

``--robustness``: the default preset (and ``--compare`` option sets) on ``--data`` with the
photos resized 0.5x, 2x and 3x, JPEG quality 30, a mild blur and a brightness change:
mAP@0.5, mAP@0.3 and face recall at IoU 0.5 for each, and the loss against the unchanged photos.

    python benchmarks/tune_faces.py [--data ../shared/data/scenes/val]
    python benchmarks/tune_faces.py --cv 5
    python benchmarks/tune_faces.py --cv 5 --cv-splits val --grid widen=1.1,1.2,1.3,1.4
    python benchmarks/tune_faces.py --report-threshold --cv 5
    python benchmarks/tune_faces.py --robustness --compare upscale=2.0
    python benchmarks/tune_faces.py --annotated-labels
"""

from __future__ import annotations

import argparse
import itertools
import sys
import time
from pathlib import Path
from typing import Any


REPO = Path(__file__).resolve().parents[1]


def cv_candidates(args: argparse.Namespace, options: dict[str, Any]
                  ) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """--cv's candidates and baselines: with ``--grid``, every combination of its values over
    ``options`` (no baselines); else the scale rule's ``--face-target`` x ``--max-scale``, with
    the fixed ``--upscale`` factors as baselines."""
    from maskrt.detect import parse_face_options

    if not args.grid:
        return ([{**options, "upscale": "auto", "face_target": t, "max_scale": m}
                 for t in args.face_target for m in args.max_scale],
                [{**options, "upscale": u} for u in args.upscale])
    axes = []
    for text in args.grid:
        key, sep, values = text.partition("=")
        if not sep or not values.strip() or key.strip() == "box_fit":
            raise ValueError(f"--grid: expected KEY=V1,V2,... (KEY a face option other than "
                             f"box_fit), got {text!r}")
        try:
            axes.append([parse_face_options([f"{key}={v}"]) for v in values.split(",")])
        except ValueError as err:
            raise ValueError(f"--grid {text!r}: {err}") from None
    return [options | {k: v for part in combo for k, v in part.items()}
            for combo in itertools.product(*axes)], []


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, default=REPO.parent / "shared/data/scenes/val")
    parser.add_argument("--upscale", type=float, nargs="+", default=[1.0, 1.5, 2.0, 2.5])
    parser.add_argument("--widen", type=float, nargs="+", default=[1.0, 1.1, 1.2, 1.3])
    parser.add_argument("--threshold", type=float, nargs="+", default=[0.1, 0.2, 0.3, 0.4, 0.5])
    parser.add_argument("--min-face", type=float, nargs="+", default=[4.0])
    parser.add_argument("--cv", type=int, default=0, metavar="K",
                        help="choose the scale rule by K-fold cross-validation over train+val")
    parser.add_argument("--face-target", type=float, nargs="+", default=[24.0, 32.0, 40.0, 48.0])
    parser.add_argument("--max-scale", type=float, nargs="+", default=[2.5, 4.0])
    parser.add_argument("--grid", action="append", default=[], metavar="KEY=V1,V2,...",
                        help="--cv: cross-validate these values of a face option instead of the "
                             "scale rule (repeatable: the candidates are every combination)")
    parser.add_argument("--report-threshold", action="store_true",
                        help="with --cv K: choose the default report_threshold")
    parser.add_argument("--report-thresholds", type=float, nargs="+",
                        default=[round(0.1 + 0.02 * i, 2) for i in range(43)])
    parser.add_argument("--robustness", action="store_true",
                        help="the default preset on changed photos (sizes, JPEG, blur, light)")
    parser.add_argument("--annotated-labels", action="store_true",
                        help="the default preset with each detection given its face's label")
    parser.add_argument("--compare", action="append", default=[], metavar="KEY=VALUE[,...]",
                        help="--robustness: also these face options (repeatable)")
    parser.add_argument("--model", default=None,
                        help="--robustness: the classifier (a checkpoint or .onnx; default the "
                             "shipped one)")
    parser.add_argument("--cv-splits", default="train,val",
                        help="--cv: the scene splits the folds are cut from (val alone for a "
                             "detector fine-tuned on train)")
    parser.add_argument("--face-options", default="", metavar="KEY=VALUE[,...]",
                        help="--cv, --report-threshold: face options every candidate is scored "
                             "with (detector_model=...; --preset's: use detector_model=A+B)")
    args = parser.parse_args()
    sys.path.insert(0, str(REPO))
    scenes_root = REPO.parent / "shared/data/scenes"
    splits = [name.strip() for name in args.cv_splits.split(",") if name.strip()]
    missing = [name for name in splits if not (scenes_root / name / "images").is_dir()]
    if args.cv and (missing or not splits):
        available = sorted(p.name for p in scenes_root.iterdir() if (p / "images").is_dir()) \
            if scenes_root.is_dir() else []
        parser.error(f"--cv-splits: expected split names under {scenes_root} (of {available}), "
                     f"got {missing or args.cv_splits!r}")
    from maskrt.detect import parse_face_options

    try:
        options = parse_face_options(args.face_options.split(",")) if args.face_options else {}
    except ValueError as err:
        parser.error(str(err))
    if args.grid and (not args.cv or args.report_threshold):
        parser.error("--grid: expected --cv K with it (and not --report-threshold)")
    if args.report_threshold:
        from scene_study import report_threshold_cv

        if not args.cv:
            parser.error("--report-threshold: expected --cv K (K >= 2) with it")
        return report_threshold_cv(scenes_root, args.cv, args.report_thresholds, splits, options)
    if args.cv:
        from scene_study import cross_validate

        try:
            candidates, baselines = cv_candidates(args, options)
        except ValueError as err:
            parser.error(str(err))
        return cross_validate(scenes_root, args.cv, candidates, baselines, splits)
    if args.annotated_labels:
        from scene_study import annotated_labels

        return annotated_labels(args.data)
    if args.robustness:
        from scene_study import robustness

        return robustness(args.data, args.compare, args.model)
    from maskrt.detect.regions import face_regions
    from maskrt.detect.yunet import YuNetDetector
    from maskrt.engine import Engine
    from maskrt.image import decode_image
    from maskrt.train.scenes import index_scenes
    from maskrt.train.voc_metric import Detections, evaluate

    scenes = index_scenes(args.data)
    images = [decode_image(s.image) for s in scenes]
    truth = [s.truth for s in scenes]
    engine = Engine()
    rows = []
    for upscale in args.upscale:
        start = time.perf_counter()
        found = YuNetDetector(upscale=upscale, score_threshold=min(args.threshold)).detect(images)
        detect_s = (time.perf_counter() - start) / len(images)
        for widen, min_face in [(w, m) for w in args.widen for m in args.min_face]:
            regions = [face_regions(f, im.shape, widen=widen, min_face=min_face, max_faces=500)[0]
                       for f, im in zip(found, images)]
            crops = [r.crop(im) for im, rs in zip(images, regions) for r in rs]
            results = iter(engine.classify(crops) if crops else [])
            decided = [[next(results) for _ in rs] for rs in regions]
            for threshold in args.threshold:
                dets = []
                for rs, ds in zip(regions, decided):
                    keep = [(r, d) for r, d in zip(rs, ds) if r.score >= threshold]
                    dets.append(Detections.make(
                        [list(r.box) for r, _ in keep], [d.label for _, d in keep],
                        [r.score * float(d.probabilities[d.class_index]) for r, d in keep],
                        [r.score for r, _ in keep]))
                s50, s30 = evaluate(dets, truth, 0.5), evaluate(dets, truth, 0.3)
                faces = sum(len(d.labels) for d in dets) / len(dets)
                rows.append((s50.map, s30.map, s50.recall["without_mask"],
                             s50.recall["with_mask"], upscale, widen, threshold, faces, detect_s,
                             min_face))
    print(f"{len(images)} images of {args.data}; detection time is per image at the lowest "
          "threshold; faces = classified faces per image (each costs one classifier pass)")
    print(f"{'map50':>6} {'map30':>6} {'rec50 no':>8} {'rec50 mask':>10} {'upscale':>7} "
          f"{'widen':>5} {'thr':>4} {'faces':>6} {'detect s':>8} {'min_face':>8}")
    for row in sorted(rows, key=lambda r: -r[0]):
        print(f"{row[0]:6.3f} {row[1]:6.3f} {row[2]:8.3f} {row[3]:10.3f} {row[4]:7.2f} "
              f"{row[5]:5.2f} {row[6]:4.2f} {row[7]:6.2f} {row[8]:8.3f} {row[9]:8.0f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
