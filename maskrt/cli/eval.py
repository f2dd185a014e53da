"""``maskrt eval``: accuracy, sensitivity and specificity on an ImageFolder tree."""

from __future__ import annotations

import argparse
import json
import sys
import warnings
from pathlib import Path

from maskrt.backends import add_backend_arguments
from maskrt.cli.common import non_negative_int, positive_int
from maskrt.labels import CLASSES


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("data_dir", metavar="DATA_DIR",
                        help="folder with with_mask/ and without_mask/ (e.g. DATA/val)")
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


def _hint(data_dir: str) -> str:
    for split in ("val", "test"):
        if Path(data_dir, split).is_dir():
            return f" (did you mean {Path(data_dir, split)}?)"
    return ""


def main(args: argparse.Namespace) -> int:
    from maskrt.cli.common import open_engine
    from maskrt.train.data import DatasetError, index_image_folder

    try:
        index_image_folder(args.data_dir)  # a bad tree fails before the model is loaded
    except DatasetError as err:
        print(f"maskrt eval: error: {err}{_hint(args.data_dir)}", file=sys.stderr)
        return 2
    try:
        engine, _ = open_engine(args, chunk_size=args.batch_size)
    except ValueError as err:
        print(f"maskrt eval: error: {err}", file=sys.stderr)
        return 2
    with engine:
        return _evaluate(args, engine)


def _evaluate(args: argparse.Namespace, engine: object) -> int:
    from maskrt.train.data import DatasetError
    from maskrt.train.evaluate import draw_gallery, evaluate_folder
    from maskrt.train.metrics import format_confusion

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("always")
            report = evaluate_folder(args.data_dir, args.model, args.backend, engine=engine,
                                     batch_size=args.batch_size, progress=not args.no_progress)
    except DatasetError as err:
        print(f"maskrt eval: error: {err}{_hint(args.data_dir)}", file=sys.stderr)
        return 2
    m = report.metrics
    print(f"{report.data_dir}: {len(report.predictions)} images "
          f"({m.tn + m.fp} {CLASSES[0]}, {m.tp + m.fn} {CLASSES[1]}), {len(report.skipped)} unreadable "
          f"skipped; model {report.model}; backend {report.backend}; {report.seconds:.1f}s")
    print(f"accuracy    {100 * m.accuracy:6.2f}%   ({m.tp + m.tn}/{m.total})")
    print(f"sensitivity {100 * m.sensitivity:6.2f}%   ({m.tp}/{m.tp + m.fn} {CLASSES[1]} found; positive = {CLASSES[1]})")
    print(f"specificity {100 * m.specificity:6.2f}%   ({m.tn}/{m.tn + m.fp} {CLASSES[0]} kept)")
    print(f"precision   {100 * m.precision:6.2f}%   F1 {100 * m.f1:.2f}%")
    print(format_confusion(m.confusion()))
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(report.as_dict(), indent=2) + "\n")
        print(f"wrote {args.json}")
    if args.gallery:
        try:
            draw_gallery(report.misclassified, args.gallery, engine=engine, limit=args.gallery_max)
        except ImportError as err:
            print(f"maskrt eval: error: the gallery needs the CAM kernel ({err})", file=sys.stderr)
            return 2
        print(f"wrote {args.gallery} ({len(report.misclassified)} misclassified)")
    return 0
