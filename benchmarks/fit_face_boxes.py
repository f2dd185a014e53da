"""Fit the face presets' ``box_fit`` on the scene ``train`` split, then measure it on ``val``.

YuNet draws face boxes in its training data's convention (WIDER FACE: brow to chin); the scene
annotations frame faces a little wider and lower (the mask and the chin). ``box_fit`` =
(width factor, height factor, x shift, y shift), shifts in units of the box's width and height,
maps one onto the other. Fitted here as medians over the detector's boxes matched (IoU >= 0.3) to
annotated faces of ``train``: once over the faces of 12 px and more, once over the smaller ones,
whose boxes the detector draws differently (narrower and shorter against the annotation; the
8-number ``box_fit`` of :func:`maskrt.detect.regions.fitted_box`); then the preset's mAP on
``val`` without it, with the large faces' fit alone, and with both.

    python benchmarks/fit_face_boxes.py [--preset default fast]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
SCENES = REPO.parent / "shared" / "data" / "scenes"


def fit(found: list, truth: list, min_iou: float = 0.3) -> tuple[float, ...]:
    """Medians of (gt w / det w, gt h / det h, centre dx / det w, centre dy / det h) over the
    faces of at least SMALL_SIDE + 2 px, then over those under it (8 numbers, see
    :func:`maskrt.detect.regions.fitted_box`)."""
    from maskrt.detect.regions import SMALL_SIDE

    rows = np.asarray(_matched(found, truth, min_iou))
    small = rows[:, 4] < SMALL_SIDE + 2.0  # the bin under 12 px, whose median side is about 10
    print(f"  {len(rows)} matched faces, {int(small.sum())} of them under {SMALL_SIDE + 2:g} px")
    medians = [np.median(rows[~small, :4], axis=0), np.median(rows[small, :4], axis=0)]
    return tuple(round(float(v), 2) for v in np.concatenate(medians))


def _matched(found: list, truth: list, min_iou: float) -> list[tuple[float, ...]]:
    """Per detector box matched to an annotated face: the four ratios and the box's side."""
    from maskrt.train.voc_metric import iou_matrix

    rows = []
    for faces, gt in zip(found, truth):
        boxes = np.asarray(gt.boxes, np.float64)[~np.asarray(gt.difficult, bool)]
        if len(boxes) == 0 or len(faces) == 0:
            continue
        iou = iou_matrix(boxes, faces.boxes.astype(np.float64))
        for i, j in enumerate(iou.argmax(axis=1)):
            if iou[i, j] >= min_iou:
                g, d = boxes[i], faces.boxes[j].astype(np.float64)
                dw, dh = d[2] - d[0], d[3] - d[1]
                rows.append(((g[2] - g[0]) / dw, (g[3] - g[1]) / dh,
                             (g[0] + g[2] - d[0] - d[2]) / 2 / dw, (g[1] + g[3] - d[1] - d[3]) / 2 / dh,
                             float(np.sqrt(dw * dh))))
    return rows


def scene_map(preset: str, split: str, box_fit: tuple[float, ...]) -> tuple[float, float, float]:
    """(mAP@0.5, mAP@0.3, without_mask recall@0.5) of the preset on ``split`` with ``box_fit``."""
    from maskrt.engine import Engine
    from maskrt.train.scenes import evaluate_scenes

    with Engine(preset=preset, face_options={"box_fit": box_fit}) as engine:
        scores = evaluate_scenes(SCENES / split, engine).scores
    return scores[0.5].map, scores[0.3].map, scores[0.5].recall["without_mask"]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--preset", nargs="+", default=["default", "fast"])
    args = parser.parse_args()
    sys.path.insert(0, str(REPO))
    from maskrt.detect import make_detector, preset_settings
    from maskrt.image import decode_image
    from maskrt.train.scenes import index_scenes

    scenes = index_scenes(SCENES / "train")
    images = [decode_image(s.image) for s in scenes]
    for preset in args.preset:
        print(f"{preset}: fitting on {len(images)} photos of scenes/train")
        with make_detector(preset) as detector:
            box_fit = fit(detector.detect(images), [s.truth for s in scenes])
        print(f"  box_fit {box_fit} (shipped: {preset_settings(preset)['box_fit']})")
        for label, value in (("none", (1.0, 1.0, 0.0, 0.0)), ("one fit", box_fit[:4]),
                             ("by size", box_fit)):
            map50, map30, recall = scene_map(preset, "val", value)
            print(f"  val, box_fit {label:7}: mAP@0.5 {map50:.3f}  mAP@0.3 {map30:.3f}  "
                  f"without_mask recall@0.5 {recall:.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
