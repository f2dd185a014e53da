"""Frames of camera clips as a VOC scene split, for the face detector's fine-tuning::

    python -m maskrt.train.clip_frames CLIPS_DIR OUT_DIR [--every 10]
    python -m maskrt.train.detector ../shared/data/scenes/train OUT_DIR --out yunet.onnx

``CLIPS_DIR`` is a clip set (``shared/tools/make_clips.py``; :mod:`maskrt.train.clips`). Every
``every``-th frame that has faces becomes ``OUT_DIR/images/<clip>_<frame>.jpg`` (JPEG quality
95, over the clip's own compression) with ``OUT_DIR/annotations/<same>.xml`` in the scene
annotations' form: the faces at least half visible (``visibility >= 0.5``: a face behind the
passer-by's bar or mostly out of the frame is left out, not taught as a face), named by class,
``mask_worn_incorrectly`` difficult as in the scene splits. Make the clips from scenes
``train`` only: clips of ``val`` photos would put the photos the figures are measured on into
training.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Iterator
from pathlib import Path
from xml.sax.saxutils import escape

import cv2
import numpy as np

from maskrt.train.clips import GT_CLASSES, Clip, GtFrame, load_clip_set
from maskrt.train.data import DatasetError

#: faces less visible than this are left out of a frame's annotation
MIN_VISIBILITY = 0.5


def export_clip_frames(clips_dir: str | Path, out_dir: str | Path, every: int = 10) -> int:
    """Write every ``every``-th frame with faces of the clip set ``clips_dir`` to ``out_dir``
    as a VOC split; returns the number of frames written (DatasetError for a bad clip set or an
    unreadable video, ValueError for ``every`` < 1)."""
    if every < 1:
        raise ValueError(f"clip frames: expected every >= 1, got {every}")
    out = Path(out_dir)
    (out / "images").mkdir(parents=True, exist_ok=True)
    (out / "annotations").mkdir(parents=True, exist_ok=True)
    return sum(_export_clip(clip, out, every) for clip in load_clip_set(clips_dir))


def sampled_frames(clip: Clip, every: int) -> Iterator[tuple[int, np.ndarray, GtFrame]]:
    """(index, frame, ground truth) of every ``every``-th frame of ``clip`` that has ground
    truth, in order (DatasetError when its video cannot be opened)."""
    capture = cv2.VideoCapture(str(clip.video))
    if not capture.isOpened():
        raise DatasetError(f"{clip.video}: expected a video OpenCV can read, could not open it")
    try:
        index = 0
        while True:
            ok, frame = capture.read()
            if not ok:
                return
            truth = clip.truth.get(index)
            if index % every == 0 and truth is not None:
                yield index, frame, truth
            index += 1
    finally:
        capture.release()


def _export_clip(clip: Clip, out: Path, every: int) -> int:
    written = 0
    for index, frame, truth in sampled_frames(clip, every):
        objects = _objects(truth, frame.shape[1], frame.shape[0])
        if objects:
            name = f"{clip.name}_{index:05d}"
            cv2.imwrite(str(out / "images" / f"{name}.jpg"), frame, [cv2.IMWRITE_JPEG_QUALITY, 95])
            (out / "annotations" / f"{name}.xml").write_text(
                _annotation(f"{name}.jpg", frame.shape[1], frame.shape[0], objects))
            written += 1
    return written


def _objects(truth: GtFrame, width: int, height: int) -> list[tuple[str, bool, tuple[int, ...]]]:
    """(class name, difficult, integer box clipped to the frame) of the visible faces."""
    objects = []
    for box, cls, visibility in zip(truth.boxes, truth.classes, truth.visibility):
        if visibility < MIN_VISIBILITY:
            continue
        x0, y0, x1, y1 = np.clip(np.rint(box), 0, [width, height, width, height]).astype(int)
        if x1 - x0 >= 2 and y1 - y0 >= 2:
            name = GT_CLASSES[int(cls)]
            objects.append((name, name == "mask_worn_incorrectly", (x0, y0, x1, y1)))
    return objects


def _annotation(filename: str, width: int, height: int,
                objects: list[tuple[str, bool, tuple[int, ...]]]) -> str:
    parts = [f"<annotation>\n  <filename>{escape(filename)}</filename>\n  <size>\n"
             f"    <width>{width}</width>\n    <height>{height}</height>\n    <depth>3</depth>\n"
             f"  </size>\n"]
    for name, difficult, (x0, y0, x1, y1) in objects:  # VOC: 1-based, ends inclusive
        parts.append(f"  <object>\n    <name>{name}</name>\n    <difficult>{int(difficult)}"
                     f"</difficult>\n    <bndbox>\n      <xmin>{x0 + 1}</xmin>\n      <ymin>{y0 + 1}"
                     f"</ymin>\n      <xmax>{x1}</xmax>\n      <ymax>{y1}</ymax>\n    </bndbox>\n"
                     f"  </object>\n")
    parts.append("</annotation>\n")
    return "".join(parts)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m maskrt.train.clip_frames",
                                     description=__doc__.split("::")[0].strip())
    parser.add_argument("clips", help="a clip set (make_clips.py): clips.json, gt/, clip_NNN.avi")
    parser.add_argument("out", help="the VOC split to write (images/, annotations/)")
    parser.add_argument("--every", type=int, default=10, help="one frame in this many (default 10)")
    args = parser.parse_args(argv)
    try:
        written = export_clip_frames(args.clips, args.out, args.every)
    except (DatasetError, ValueError) as err:
        print(f"clip_frames: {err}", file=sys.stderr)
        return 2
    print(f"clip_frames: wrote {written} frames to {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
