"""``maskrt demo``: score and explain the sample faces shipped with maskrt (or a folder of yours:
face crops or photos).

Faces are found first, as ``maskrt score`` finds them (``--regions faces``, ``--preset``): each
face found is decided and explained. An image in which no face is found is taken for a face crop
the detector missed (a tight crop leaves it little to go on) and is decided whole; ``--regions
frame`` decides every image whole (folders of crops, the behaviour before faces were found).

Writes, into ``--out``: one ``<name>_cam.jpg`` per image (the frame beside its CAM overlay: every
face's CAM, box and decision, or the whole image's with its decision written on it),
``summary.json`` (one entry per image with its faces, plus totals) and prints a table. An image's
decision in the table is that of its most confident face (the face of a crop; the detector may
also find weak "faces" in a crop's edges, listed on their own line). Where an image's true label
is known (its file name starts with a class name, as the samples' ``with_mask_*.jpg`` do, or its
folder is named after one) the table shows it beside the decision and says how many of those
images the model got right.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

from maskrt.backends import add_backend_arguments
from maskrt.labels import CLASSES
from maskrt.samples import SAMPLES_DIR

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".webp"}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--images", type=Path, default=SAMPLES_DIR,
                        help="folder of images: photos or face crops (default: the samples "
                             "shipped with maskrt)")
    parser.add_argument("--out", type=Path, default=Path("out/demo"),
                        help="output folder (default: out/demo)")
    parser.add_argument("--regions", choices=("faces", "frame"), default="faces",
                        help="faces (default): find the faces of each image and decide each, as "
                             "maskrt score does; an image without a face found is decided whole "
                             "(a face crop); frame: every image is decided whole")
    parser.add_argument("--preset", choices=("default", "fast", "accurate"), default="default",
                        help="face detection preset, as maskrt score's (default: default)")
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
        engine, untrained = open_engine(args, preset=args.preset)
    except ValueError as err:
        return fail("demo", err, args)
    if untrained:
        print("WARNING: no trained weights are shipped in this build; the demo runs a RANDOMLY "
              "INITIALISED model, so its labels are meaningless.")
    with engine:
        start = time.perf_counter()
        paths, frames = _decode(paths)
        decided = _decide(engine, frames, args.regions) if frames else []
        elapsed = time.perf_counter() - start
    if not frames:
        print(f"maskrt demo: none of the images in {args.images} could be decoded", file=sys.stderr)
        return 2
    args.out.mkdir(parents=True, exist_ok=True)
    entries = [_write_entry(path, frame, faces, args.out)
               for path, frame, faces in zip(paths, frames, decided)]
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


def _decide(engine: Any, frames: list[Any], regions: str) -> list[list[Any]]:
    """Per frame, its explained decisions: one per face found (most confident first, each with
    ``box`` and the frame's shared overlay), or the one of the whole frame (``box`` None) when
    none was found or ``regions`` is "frame"."""
    found = engine.faces(frames, explain=True) if regions == "faces" else [[] for _ in frames]
    whole = [k for k, faces in enumerate(found) if not faces]
    explained = dict(zip(whole, engine.explain([frames[k] for k in whole]) if whole else []))
    return [faces or [explained[k]] for k, faces in enumerate(found)]


def _write_entry(path: Path, frame: Any, faces: list[Any], out_dir: Path) -> dict[str, object]:
    import cv2
    import numpy as np

    main = faces[0]  # the most confident face (faces come best detector score first)
    panel = np.concatenate([frame, main.overlay], axis=1)
    if main.box is None:  # the whole image: its decision written on it (faces have theirs)
        colour = (0, 160, 0) if main.label == CLASSES[0] else (0, 0, 220)
        text = f"{main.label} {max(main.probabilities):.2f}"
        cv2.putText(panel, text, (4, 16), cv2.FONT_HERSHEY_SIMPLEX, 0.45, colour, 1, cv2.LINE_AA)
    overlay_path = out_dir / f"{path.stem}_cam.jpg"
    if not cv2.imwrite(str(overlay_path), panel):
        raise OSError(f"could not write {overlay_path}")
    truth = true_label(path)
    found = [] if main.box is None else [
        {"box": [int(v) for v in face.box], "face_score": round(float(face.face_score), 4),
         "label": face.label, "p_with_mask": round(face.p_with_mask, 6),
         "p_without_mask": round(face.p_without_mask, 6)} for face in faces]
    return {"image": str(path), "overlay": str(overlay_path), "label": main.label,
            "truth": truth, "correct": None if truth is None else truth == main.label,
            "p_with_mask": round(main.p_with_mask, 6),
            "p_without_mask": round(main.p_without_mask, 6),
            "whole_image": main.box is None, "faces": found}


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
    faces = [f for e in entries for f in e["faces"]]  # type: ignore[attr-defined]
    known = [e for e in entries if e["truth"] is not None]
    return {"backend": backend, "model": "random-init (untrained)" if untrained else "trained",
            "images": len(entries), "counts": counts, "seconds": round(elapsed, 3),
            "faces": len(faces), "face_counts": {
                name: sum(f["label"] == name for f in faces) for name in CLASSES},
            "whole_images": sum(bool(e["whole_image"]) for e in entries),
            "truth_known": len(known), "right": sum(bool(e["correct"]) for e in known),
            "results": entries}


def _print_table(entries: list[dict[str, object]], summary: dict[str, object], out: Path) -> None:
    print(f"maskrt demo: {summary['images']} images, backend {summary['backend']}, "
          f"model {summary['model']}, {summary['seconds']} s")
    print(f"{'image':40s} {'label':14s} {'truth':14s} {'p_with_mask':>12s} "
          f"{'p_without_mask':>15s} {'faces':>6s}")
    for entry in entries:
        truth = entry["truth"] or "?"
        faces = entry["faces"]
        mark = "" if entry["correct"] is None else "  ok" if entry["correct"] else "  WRONG"
        shown = "whole" if entry["whole_image"] else str(len(faces))  # type: ignore[arg-type]
        print(f"{Path(str(entry['image'])).name:40s} {entry['label']:14s} {truth:14s} "
              f"{entry['p_with_mask']:12.4f} {entry['p_without_mask']:15.4f} {shown:>6s}{mark}")
        if len(faces) > 1:  # type: ignore[arg-type]
            others = [f["label"] for f in faces[1:]]  # type: ignore[index]
            print(f"  + {len(others)} more: " + ", ".join(
                f"{others.count(name)} {name}" for name in CLASSES if name in others))
    print(f"{summary['faces']} faces found {summary['face_counts']}; {summary['whole_images']} "
          f"images without a face found decided whole")
    if summary["truth_known"]:
        unknown = summary["images"] - summary["truth_known"]
        print(f"{summary['right']} of {summary['truth_known']} right"
              + (f" ({unknown} without a known label not counted)" if unknown else ""))
    print(f"overlays and summary.json written to {out}/")
