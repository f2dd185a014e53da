"""``maskrt eval``: accuracy, sensitivity and specificity on an ImageFolder tree; on a VOC scene
split (``images/`` + ``annotations/``), face detection + classification mAP, AP and recall over
every candidate face, and the operating point of the faces reported to people; on a
clip set of make_clips.py (``clips.json``, ``gt/``, ``*.avi``), the clip metrics (tracking and
per-person decisions, see eval_clips.py)."""

from __future__ import annotations

import argparse
import json
import math
import sys
import warnings
from pathlib import Path
from typing import Any

from maskrt.backends import add_backend_arguments
from maskrt.cli.common import non_negative_int, positive_int
from maskrt.cli.eval_clips import add_clip_arguments
from maskrt.labels import CLASSES


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("data_dir", metavar="DATA_DIR",
                        help="folder with with_mask/ and without_mask/ (e.g. DATA/val), or a VOC "
                        "scene split with images/ and annotations/ (e.g. scenes/val), or a clip "
                        "set of make_clips.py (clips.json, gt/, clip_NNN.avi)")
    add_backend_arguments(parser, default="onnxruntime")
    parser.add_argument("--json", metavar="FILE", type=Path, default=None,
                        help="write the metrics, counts, confusion matrix and mistakes here")
    parser.add_argument("--gallery", metavar="FILE.png", type=Path, default=None,
                        help="draw the misclassified images with their CAM overlays")
    parser.add_argument("--gallery-max", type=non_negative_int, default=64,
                        help="at most this many images in the gallery (default %(default)s)")
    parser.add_argument("--batch-size", type=positive_int, default=64,
                        help="images per backend call (default %(default)s)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    add_clip_arguments(parser)


def _hint(data_dir: str) -> str:
    # Half a VOC split (images/ without annotations/, or the other way round) is a scene split
    # with a folder missing far more often than a broken class tree: say what that layout needs.
    voc = [name for name in ("images", "annotations") if Path(data_dir, name).is_dir()]
    if len(voc) == 1:
        missing = "annotations" if voc == ["images"] else "images"
        return (f"; or, for a VOC scene split: images/ and annotations/*.xml (one <name>.xml per "
                f"image); found {voc[0]}/ but no {missing}/")
    for split in ("val", "test"):
        if Path(data_dir, split).is_dir():
            return f" (did you mean {Path(data_dir, split)}?)"
    return ""


def main(args: argparse.Namespace) -> int:
    from maskrt.cli.common import fail, open_engine
    from maskrt.cli.eval_clips import looks_like_clips, main_clips
    from maskrt.train.data import DatasetError, index_image_folder
    from maskrt.train.scenes import is_voc_split

    if looks_like_clips(args.data_dir):
        return main_clips(args)
    if args.records is not None or args.records_out is not None:
        return fail("eval", ValueError(f"{args.data_dir}: --records and --records-out are for "
                                       "clip sets (clips.json, gt/, clip_NNN.avi)"), args,
                    prefix="error: ")
    if is_voc_split(args.data_dir):
        return _main_scenes(args)
    try:
        index_image_folder(args.data_dir)  # a bad tree fails before the model is loaded
    except DatasetError as err:
        return fail("eval", err, args, prefix="error: ", suffix=_hint(args.data_dir))
    try:
        engine, _ = open_engine(args, chunk_size=args.batch_size)
    except ValueError as err:
        return fail("eval", err, args, prefix="error: ")
    with engine:
        return _evaluate(args, engine)


def _evaluate(args: argparse.Namespace, engine: object) -> int:
    from maskrt.cli.common import fail
    from maskrt.train.data import DatasetError
    from maskrt.train.evaluate import draw_gallery, evaluate_folder
    from maskrt.train.metrics import format_confusion

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("always")
            report = evaluate_folder(args.data_dir, args.model, args.backend, engine=engine,
                                     batch_size=args.batch_size, progress=not args.no_progress)
    except DatasetError as err:
        return fail("eval", err, args, prefix="error: ", suffix=_hint(args.data_dir))
    print(_folder_summary(report))
    print(format_confusion(report.metrics.confusion()))
    for warning in report.warnings:
        print(f"maskrt eval: WARNING: {warning}", file=sys.stderr)
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(report.as_dict(), indent=2) + "\n")
        print(f"wrote {args.json}")
    if args.gallery:
        return _gallery(lambda: draw_gallery(report.misclassified, args.gallery, engine=engine,
                                             limit=args.gallery_max),
                        f"wrote {args.gallery} ({len(report.misclassified)} misclassified)")
    return 0


def _folder_summary(report: Any) -> str:
    """The printed figures; a rate over no image (e.g. precision when nothing was called
    without_mask) is "n/a", never "nan%"."""
    from maskrt.train.metrics import format_percent

    m = report.metrics
    return "\n".join([
        (f"{report.data_dir}: {len(report.predictions)} images ({m.tn + m.fp} {CLASSES[0]}, "
         f"{m.tp + m.fn} {CLASSES[1]}), {len(report.skipped)} unreadable skipped; model "
         f"{report.model}; backend {report.backend}; {report.seconds:.1f}s"),
        f"accuracy    {format_percent(m.accuracy, 7)}   ({m.tp + m.tn}/{m.total})",
        (f"sensitivity {format_percent(m.sensitivity, 7)}   ({m.tp}/{m.tp + m.fn} {CLASSES[1]} "
         f"found; positive = {CLASSES[1]})"),
        f"specificity {format_percent(m.specificity, 7)}   ({m.tn}/{m.tn + m.fp} {CLASSES[0]} kept)",
        (f"precision   {format_percent(m.precision, 7)}   ({m.tp}/{m.tp + m.fp} called "
         f"{CLASSES[1]} right)   F1 {format_percent(m.f1)}"),
    ])


# ---------------------------------------------------------------------------------------------
# VOC scene splits: detection + classification


def _main_scenes(args: argparse.Namespace) -> int:
    from maskrt.cli.common import fail, open_engine
    from maskrt.detect import parse_face_options, preset_settings
    from maskrt.train.data import DatasetError
    from maskrt.train.scenes import index_scenes

    try:
        scenes = index_scenes(args.data_dir)  # a bad split fails before the model is loaded
    except DatasetError as err:
        return fail("eval", err, args, prefix="error: ")
    try:
        # --preset and --face-option choose the faces (report_threshold: the operating point)
        face_options = parse_face_options(args.face_option)
        preset_settings(args.preset, **face_options)  # checked before the model loads
        engine, _ = open_engine(args, chunk_size=args.batch_size, preset=args.preset,
                                face_options=face_options)
    except ValueError as err:
        return fail("eval", err, args, prefix="error: ")
    with engine:
        if not callable(getattr(engine, "faces", None)):
            print("maskrt eval: error: a VOC scene split needs a face detector, and this Engine "
                  "has no faces() method", file=sys.stderr)
            return 2
        return _evaluate_scenes(args, engine, scenes)


def _evaluate_scenes(args: argparse.Namespace, engine: Any, scenes: list[Any]) -> int:
    from maskrt.cli.common import fail
    from maskrt.train.data import DatasetError
    from maskrt.train.evaluate import draw_scene_gallery
    from maskrt.train.scenes import evaluate_scenes, scene_mistakes

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("always")
            report = evaluate_scenes(args.data_dir, engine, batch_size=args.batch_size,
                                     progress=not args.no_progress, scenes=scenes,
                                     model=str(args.model) if args.model else "shipped")
    except DatasetError as err:
        return fail("eval", err, args, prefix="error: ")
    print(_scene_summary(report))
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(report.as_dict(), indent=2) + "\n")
        print(f"wrote {args.json}")
    if args.gallery:
        mistakes = scene_mistakes(report, 0.5)
        return _gallery(lambda: draw_scene_gallery(mistakes, args.gallery, engine=engine,
                                                   limit=args.gallery_max),
                        f"wrote {args.gallery} ({len(mistakes)} mistakes at IoU 0.5)")
    return 0


def _gallery(draw: Any, done: str) -> int:
    """Draw a gallery; the CAM kernel missing is a clear error, not a traceback."""
    try:
        draw()
    except ImportError as err:
        print(f"maskrt eval: error: the gallery needs the CAM kernel ({err})", file=sys.stderr)
        return 2
    print(done)
    return 0


def _scene_summary(report: Any) -> str:
    """The printed table: one column per IoU threshold."""
    counts = report.counts()
    s50, s30 = report.scores[0.5], report.scores[0.3]
    boxes = ", ".join(f"{n} {c}" for c, n in counts["boxes"].items())
    lines = [(f"{report.data_dir}: {counts['images']} images ({boxes}; {counts['difficult']} "
              f"difficult), {counts['skipped']} unreadable skipped; model {report.model}; "
              f"backend {report.backend}; {report.seconds:.1f}s"),
             f"{'':24s}{'IoU 0.5':>9s}{'IoU 0.3':>9s}",
             _row("mAP", s50.map, s30.map)]
    for c in CLASSES:
        lines.append(_row(f"AP {c}", s50.ap[c], s30.ap[c]))
    for c in CLASSES:
        lines.append(_row(f"recall {c}", s50.recall[c], s30.recall[c])
                     + f"   ({s50.true_positives[c]}/{s50.positives[c]} at 0.5)")
    lines.append(_row("face recall (any label)", s50.face_recall, s30.face_recall)
                 + f"   ({s50.faces_found}/{s50.faces} at 0.5)")
    lines.append(f"speed: {report.images_per_second:.1f} images/s, {report.faces_per_second:.1f} "
                 f"faces/s ({counts['faces_detected']} faces detected; decoding not counted)")
    if report.operating is not None:
        lines.extend(_operating_lines(report.operating))
    return "\n".join(lines)


def _operating_lines(point: Any) -> list[str]:
    """The operating point: what people are shown (faces at face score >= report_threshold)."""
    lines = [(f"operating point: faces reported at face score >= {point.report_threshold:g} "
              f"(IoU {point.threshold:g}, right = an annotated face of its label)"),
             f"{'':24s}{'precision':>10s}{'recall':>9s}{'F1':>9s}"]
    for c in (*CLASSES, "all"):
        lines.append(f"{'reported ' + c:24s}{_cell(point.precision(c), 10)}"
                     f"{_cell(point.recall(c))}{_cell(point.f1(c))}   ({point.right[c]} right of "
                     f"{point.reported[c]} reported, {point.positives[c]} annotated)")
    kinds = ", ".join(f"{n} {k.replace('_', ' ')}" for k, n in point.alarm_kinds.items())
    lines.append(f"false {CLASSES[1]} alarms: {point.false_alarms} in {point.images} images "
                 f"({_per_100(point.false_alarms_per_100)} per 100 images)"
                 + (f": {kinds}" if point.false_alarms else ""))
    return lines


def _cell(v: float, width: int = 9) -> str:
    return f"{'n/a':>{width}s}" if math.isnan(v) else f"{100 * v:{width - 1}.2f}%"


def _per_100(v: float) -> str:
    return "n/a" if math.isnan(v) else f"{v:.2f}"


def _row(name: str, a: float, b: float) -> str:
    return f"{name:24s}{_cell(a)}{_cell(b)}"  # NaN (no positives): n/a
