"""The cross-validation, report-threshold and robustness modes of ``tune_faces.py`` (see its
docstring).

Each candidate face setting scores every photo once (detection by the face stage as
``maskrt score`` runs it, classification by the default Engine); folds and figures are then
computed from those per-photo detections.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any, Callable, Sequence

import cv2
import numpy as np

#: the photo changes --robustness applies: name -> (image -> image, box scale)
CHANGES: dict[str, tuple[Callable[[np.ndarray], np.ndarray], float]] = {
    "unchanged": (lambda im: im, 1.0),
    "resized 0.5x": (lambda im: _resize(im, 0.5), 0.5),
    "resized 2x": (lambda im: _resize(im, 2.0), 2.0),
    "resized 3x": (lambda im: _resize(im, 3.0), 3.0),
    "jpeg q30": (lambda im: _jpeg(im, 30), 1.0),
    "blur sigma 1": (lambda im: cv2.GaussianBlur(im, (0, 0), 1.0), 1.0),
    "brighter +40": (lambda im: cv2.convertScaleAbs(im, alpha=1.0, beta=40), 1.0),
    "darker x0.6": (lambda im: cv2.convertScaleAbs(im, alpha=0.6, beta=0), 1.0),
}


def _resize(image: np.ndarray, factor: float) -> np.ndarray:
    h, w = image.shape[:2]
    size = (max(1, round(w * factor)), max(1, round(h * factor)))
    return cv2.resize(image, size, interpolation=cv2.INTER_AREA if factor < 1 else cv2.INTER_LINEAR)


def _jpeg(image: np.ndarray, quality: int) -> np.ndarray:
    ok, data = cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, quality])
    if not ok:
        raise RuntimeError("JPEG encoding failed")
    return cv2.imdecode(data, cv2.IMREAD_COLOR)


def score_photos(images: Sequence[np.ndarray], options: dict[str, Any], engine: Any
                 ) -> tuple[list[Any], float]:
    """Per photo, the metric's Detections with face ``options`` (the default preset's
    otherwise); and the mean detection time per photo in seconds."""
    from maskrt.detect import face_stage
    from maskrt.train.voc_metric import Detections

    stage = face_stage("default", **options)
    start = time.perf_counter()
    images = [stage.sharpened(image) for image in images]
    found = stage.detect(images)
    detect_s = (time.perf_counter() - start) / max(1, len(images))
    stage.close()
    regions = [stage.regions(faces, image.shape)[0] for faces, image in zip(found, images)]
    crops = [r.crop(image) for image, rs in zip(images, regions) for r in rs]
    decided = iter(engine.classify(crops) if crops else [])
    detections = []
    for rs in regions:
        ds = [next(decided) for _ in rs]
        detections.append(Detections.make(
            [list(r.box) for r in rs], [d.label for d in ds],
            [r.score * float(d.probabilities[d.class_index]) for r, d in zip(rs, ds)],
            [r.score for r in rs]))
    return detections, detect_s


def figures(detections: Sequence[Any], truth: Sequence[Any]) -> dict[str, float]:
    from maskrt.train.voc_metric import evaluate

    s50, s30 = evaluate(detections, truth, 0.5), evaluate(detections, truth, 0.3)
    return {"map50": s50.map, "map30": s30.map, "face_recall50": s50.face_recall,
            "face_recall30": s30.face_recall, "without_mask_recall": s50.recall["without_mask"]}


def _load(folders: Sequence[Path]) -> tuple[list[np.ndarray], list[Any]]:
    from maskrt.image import decode_image
    from maskrt.train.scenes import index_scenes

    scenes = [scene for folder in folders for scene in index_scenes(folder)]
    return [decode_image(s.image) for s in scenes], [s.truth for s in scenes]


def cross_validate(scenes_root: Path, k: int, candidates: Sequence[dict[str, Any]],
                   baselines: Sequence[dict[str, Any]] = (),
                   splits: Sequence[str] = ("train", "val")) -> int:
    """Face settings chosen by K-fold cross-validation over the scene ``splits`` (folds by
    photo; val alone for a detector fine-tuned on train): every candidate (face options over the
    default preset's) and every baseline scores every photo once; each fold's held-out photos
    take the candidate with the best mAP@0.5 on the other folds (baselines are never chosen)."""
    from maskrt.engine import Engine

    images, truth = _load([scenes_root / split for split in splits])
    engine = Engine()
    settings = list(candidates) + list(baselines)
    scored = {}
    print(f"{len(images)} photos of scenes {'+'.join(splits)}, {len(candidates)} candidates, "
          f"{len(baselines)} baselines, {k} folds")
    print(f"{'map50':>6} {'map30':>6} {'rec50':>6} {'rec30':>6} {'no rec':>6} {'det ms':>6}  "
          "candidate (all photos)")
    for n, options in enumerate(settings):
        detections, detect_s = score_photos(images, options, engine)
        scored[n] = detections
        f = figures(detections, truth)
        print(f"{f['map50']:6.3f} {f['map30']:6.3f} {f['face_recall50']:6.3f} "
              f"{f['face_recall30']:6.3f} {f['without_mask_recall']:6.3f} {detect_s * 1e3:6.1f}  "
              f"{options}{'' if n < len(candidates) else ' (baseline)'}", flush=True)
    folds = np.random.default_rng(0).permutation(len(images)) % k  # folds by photo
    held_out: list[Any] = [None] * len(images)
    for fold in range(k):
        train = np.nonzero(folds != fold)[0]
        best = max(range(len(candidates)), key=lambda c: figures(
            [scored[c][i] for i in train], [truth[i] for i in train])["map50"])
        print(f"fold {fold}: chose {candidates[best]}")
        for i in np.nonzero(folds == fold)[0]:
            held_out[i] = scored[best][i]
    f = figures(held_out, truth)
    print(f"cross-validated (pooled held-out folds): mAP@0.5 {f['map50']:.3f}, mAP@0.3 "
          f"{f['map30']:.3f}, face recall@0.5 {f['face_recall50']:.3f}, without_mask recall "
          f"{f['without_mask_recall']:.3f}")
    return 0


def report_threshold_cv(scenes_root: Path, k: int, thresholds: Sequence[float],
                        splits: Sequence[str] = ("train", "val"),
                        options: dict[str, Any] | None = None) -> int:
    """The default ``report_threshold`` by K-fold cross-validation over scenes train+val (folds
    by photo, as :func:`cross_validate`'s): every photo is scored once with the default preset
    (every candidate kept); each threshold then only filters, so its reported faces are judged
    per photo (class-aware, IoU 0.5) and summed. Each fold's held-out photos are reported at the
    threshold with the best F1 on the other folds; the pooled held-out figures are the ones to
    quote. The default: the threshold with the best F1 on all photos. ``splits``: val alone
    for a detector fine-tuned on train; ``options``: face options (e.g. detector_model)."""
    from maskrt.engine import Engine
    from maskrt.train.voc_metric import operating_point

    images, truth = _load([scenes_root / split for split in splits])
    with Engine() as engine:
        detections, detect_s = score_photos(images, dict(options or {}), engine)
    print(f"{len(images)} photos of scenes {'+'.join(splits)} scored once ({detect_s * 1e3:.0f} ms "
          f"detection a photo); {len(thresholds)} thresholds, {k} folds")
    # Per photo: its matching never looks at another photo, so counts add up over any folds.
    per_photo = {t: [operating_point([d], [g], t) for d, g in zip(detections, truth)]
                 for t in thresholds}
    everyone = np.arange(len(images))
    print(f"{'thr':>5} {'prec':>6} {'recall':>6} {'F1':>6} {'alarms/100':>10}  (all photos)")
    for t in thresholds:
        _print_point(f"{t:5.2f}", _pooled(per_photo[t], everyone))
    folds = np.random.default_rng(0).permutation(len(images)) % k  # folds by photo
    held_out = []
    for fold in range(k):
        train, test = np.nonzero(folds != fold)[0], np.nonzero(folds == fold)[0]
        best = max(thresholds, key=lambda t: _f1(_pooled(per_photo[t], train)))
        print(f"fold {fold}: chose report_threshold {best:.2f}")
        held_out.extend(per_photo[best][i] for i in test)
    print("cross-validated (pooled held-out folds):")
    _print_point("  cv ", _pooled(held_out, np.arange(len(held_out))), per_class=True)
    chosen = max(thresholds, key=lambda t: _f1(_pooled(per_photo[t], everyone)))
    print(f"default: report_threshold {chosen:.2f} (best F1 on all {len(images)} photos)")
    _print_point(f"{chosen:5.2f}", _pooled(per_photo[chosen], everyone), per_class=True)
    return 0


def _pooled(points: Sequence[Any], rows: Sequence[int]) -> Any:
    """The photos ``rows`` of per-photo operating points as one (counts summed)."""
    from maskrt.train.voc_metric import OperatingPoint

    chosen = [points[i] for i in rows]
    keys = list(chosen[0].reported)
    total = {name: {c: sum(getattr(p, name)[c] for p in chosen) for c in keys}
             for name in ("reported", "right", "positives")}
    return OperatingPoint(chosen[0].report_threshold, chosen[0].threshold, len(chosen),
                          total["reported"], total["right"], total["positives"],
                          sum(p.false_alarms for p in chosen))


def _f1(point: Any) -> float:
    f1 = point.f1()
    return -1.0 if np.isnan(f1) else f1


def _print_point(name: str, point: Any, per_class: bool = False) -> None:
    print(f"{name} {point.precision():6.3f} {point.recall():6.3f} {point.f1():6.3f} "
          f"{point.false_alarms_per_100:10.2f}  ({point.right['all']} right of "
          f"{point.reported['all']} reported, {point.positives['all']} annotated; "
          f"{point.false_alarms} false without_mask alarms in {point.images} photos)", flush=True)
    if per_class:
        for c in [c for c in point.reported if c != "all"]:
            print(f"      {c}: precision {point.precision(c):.3f}, recall {point.recall(c):.3f}, "
                  f"F1 {point.f1(c):.3f}")


def annotated_labels(data: Path) -> int:
    """The default preset on ``data`` as classified and with every detection on an annotated
    with- or without-mask face (IoU >= 0.3) given that face's label at full confidence (a
    perfect classifier on the same detections): mAP, recall and the reported faces of each."""
    from maskrt.detect import PRESETS
    from maskrt.engine import Engine
    from maskrt.train.voc_metric import operating_point

    images, truth = _load([data])
    with Engine() as engine:
        detections, _ = score_photos(images, {}, engine)
    relabelled = [_with_annotated_labels(d, t) for d, t in zip(detections, truth)]
    threshold = PRESETS["default"]["report_threshold"]
    print(f"{len(images)} photos of {data}, default preset; reported faces at {threshold}")
    for name, found in (("classified", detections), ("annotated labels", relabelled)):
        f = figures(found, truth)
        print(f"{name}: mAP@0.5 {f['map50']:.3f}, mAP@0.3 {f['map30']:.3f}, without_mask "
              f"recall {f['without_mask_recall']:.3f}")
        _print_point("  reported", operating_point(found, truth, threshold))
    return 0


def _with_annotated_labels(found: Any, truth: Any, iou: float = 0.3) -> Any:
    from maskrt.train.voc_metric import Detections, iou_matrix

    labels, confidence = list(found.labels), found.confidence.copy()
    if len(found.boxes) and len(truth.boxes):
        overlaps = iou_matrix(found.boxes, np.asarray(truth.boxes, np.float64))
        for k, row in enumerate(overlaps):
            j = int(np.argmax(row))
            if row[j] >= iou and truth.labels[j] in ("with_mask", "without_mask"):
                labels[k], confidence[k] = truth.labels[j], found.face_score[k]
    return Detections.make(found.boxes, labels, confidence, found.face_score)


def robustness(data: Path, compare: Sequence[str], model: str | None = None) -> int:
    from maskrt.detect import parse_face_options
    from maskrt.engine import Engine
    from maskrt.train.voc_metric import GroundTruth

    images, truth = _load([data])
    engine = Engine(model) if model else Engine()
    settings = [("default preset", {})] + [(c, parse_face_options(c.split(","))) for c in compare]
    print(f"{len(images)} photos of {data}")
    print(f"{'map50':>6} {'loss':>6} {'map30':>6} {'rec50':>6} {'det ms':>6}  change, setting")
    for name, options in settings:
        base = None
        for change, (apply, factor) in CHANGES.items():
            changed = [apply(image) for image in images]
            boxes = [GroundTruth(np.asarray(t.boxes) * factor, t.labels, t.difficult) for t in truth]
            detections, detect_s = score_photos(changed, options, engine)
            f = figures(detections, boxes)
            base = f["map50"] if base is None else base
            print(f"{f['map50']:6.3f} {base - f['map50']:6.3f} {f['map30']:6.3f} "
                  f"{f['face_recall50']:6.3f} {detect_s * 1e3:6.1f}  {change}, {name}", flush=True)
    return 0
