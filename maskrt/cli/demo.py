"""``maskrt demo``: score and explain the sample faces shipped with maskrt (or a folder of yours).

Writes, into ``--out``: one ``<name>_cam.jpg`` per image (the frame beside its CAM overlay, with the
decision written on it), ``summary.json`` (one entry per image, plus totals) and prints a table.
Where an image's true label is known (its file name starts with a class name, as the samples'
``with_mask_*.jpg`` do, or its folder is named after one) the table shows it beside the decision
and says how many of those images the model got right.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from maskrt.backends import add_backend_arguments
from maskrt.labels import CLASSES
from maskrt.samples import SAMPLES_DIR

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".webp"}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--images", type=Path, default=SAMPLES_DIR,
                        help="folder of face images (default: the samples shipped with maskrt)")
    parser.add_argument("--out", type=Path, default=Path("out/demo"),
                        help="output folder (default: out/demo)")
    add_backend_arguments(parser, default="onnxruntime")


def main(args: argparse.Namespace) -> int:
    from maskrt.cli.common import fail, open_engine

    if not args.images.is_dir():
        print(f"maskrt demo: --images: expected a folder of images, got {args.images}",
              file=sys.stderr)
        return 2
    paths = sorted(p for p in args.images.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
    if not paths:
        print(f"maskrt demo: no images ({', '.join(sorted(IMAGE_SUFFIXES))}) in {args.images}",
              file=sys.stderr)
        return 2
    try:
        engine, untrained = open_engine(args)
    except ValueError as err:
        return fail("demo", err, args)
    if untrained:
        print("WARNING: no trained weights are shipped in this build; the demo runs a RANDOMLY "
              "INITIALISED model, so its labels are meaningless.")
    with engine:
        start = time.perf_counter()
        paths, frames = _decode(paths)
        results = engine.explain(frames) if frames else []
        elapsed = time.perf_counter() - start
    if not frames:
        print(f"maskrt demo: none of the images in {args.images} could be decoded", file=sys.stderr)
        return 2
    args.out.mkdir(parents=True, exist_ok=True)
    entries = [_write_entry(path, frame, result, args.out)
               for path, frame, result in zip(paths, frames, results)]
    summary = _summary(entries, engine.backend.describe(), elapsed, untrained)
    (args.out / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    _print_table(entries, summary, args.out)
    return 0


def _decode(paths: list[Path]) -> tuple[list[Path], list[object]]:
    """The readable images among ``paths`` (decoded once: explained, then drawn beside their
    overlays), saying which were skipped and why."""
    from maskrt.image import ImageError, decode_image

    kept, frames = [], []
    for path in paths:
        try:
            frames.append(decode_image(path))
        except ImageError as err:
            print(f"maskrt demo: skipping {err}", file=sys.stderr)
            continue
        kept.append(path)
    return kept, frames


def _write_entry(path: Path, frame: object, result: object, out_dir: Path) -> dict[str, object]:
    import cv2
    import numpy as np

    overlay = result.overlay  # type: ignore[attr-defined]
    label = result.label  # type: ignore[attr-defined]
    panel = np.concatenate([frame, overlay], axis=1)
    colour = (0, 160, 0) if label == CLASSES[0] else (0, 0, 220)
    text = f"{label} {max(result.probabilities):.2f}"  # type: ignore[attr-defined]
    cv2.putText(panel, text, (4, 16), cv2.FONT_HERSHEY_SIMPLEX, 0.45, colour, 1, cv2.LINE_AA)
    overlay_path = out_dir / f"{path.stem}_cam.jpg"
    if not cv2.imwrite(str(overlay_path), panel):
        raise OSError(f"could not write {overlay_path}")
    truth = true_label(path)
    return {"image": str(path), "overlay": str(overlay_path), "label": label, "truth": truth,
            "correct": None if truth is None else truth == label,
            "p_with_mask": round(result.p_with_mask, 6),  # type: ignore[attr-defined]
            "p_without_mask": round(result.p_without_mask, 6)}  # type: ignore[attr-defined]


def true_label(path: Path) -> str | None:
    """The class an image's name or folder tells (``without_mask_0297.jpg``, ``.../with_mask/x.jpg``),
    or None when neither does."""
    if path.parent.name in CLASSES:
        return path.parent.name
    # Longest first, and a class name must end at a separator: "with_mask" never claims
    # "without_mask_1.jpg", nor "with_maskless.jpg".
    for name in sorted(CLASSES, key=len, reverse=True):
        rest = path.stem[len(name):]
        if path.stem.startswith(name) and (not rest or rest[0] in "_-. "):
            return name
    return None


def _summary(entries: list[dict[str, object]], backend: str, elapsed: float,
             untrained: bool) -> dict[str, object]:
    counts = {name: sum(e["label"] == name for e in entries) for name in CLASSES}
    known = [e for e in entries if e["truth"] is not None]
    return {"backend": backend, "model": "random-init (untrained)" if untrained else "trained",
            "images": len(entries), "counts": counts, "seconds": round(elapsed, 3),
            "truth_known": len(known), "right": sum(bool(e["correct"]) for e in known),
            "results": entries}


def _print_table(entries: list[dict[str, object]], summary: dict[str, object], out: Path) -> None:
    print(f"maskrt demo: {summary['images']} images, backend {summary['backend']}, "
          f"model {summary['model']}, {summary['seconds']} s")
    print(f"{'image':40s} {'label':14s} {'truth':14s} {'p_with_mask':>12s} {'p_without_mask':>15s}")
    for entry in entries:
        truth = entry["truth"] or "?"
        mark = "" if entry["correct"] is None else "  ok" if entry["correct"] else "  WRONG"
        print(f"{Path(str(entry['image'])).name:40s} {entry['label']:14s} {truth:14s} "
              f"{entry['p_with_mask']:12.4f} {entry['p_without_mask']:15.4f}{mark}")
    if summary["truth_known"]:
        unknown = summary["images"] - summary["truth_known"]
        print(f"{summary['right']} of {summary['truth_known']} right"
              + (f" ({unknown} without a known label not counted)" if unknown else ""))
    print(f"overlays and summary.json written to {out}/")
