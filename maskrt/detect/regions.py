"""From detections to the regions the pipeline scores: clipped face boxes, widened crops."""

from __future__ import annotations

import math

import numpy as np

from maskrt.detect.base import Detections
from maskrt.stream.work import Region


#: ``box_fit`` that leaves the detector's boxes as they are
NO_BOX_FIT = (1.0, 1.0, 0.0, 0.0)
#: an 8-number ``box_fit`` (see :func:`fitted_box`) uses its first four at faces of at least
#: LARGE_SIDE px (frame pixels, the geometric mean of the detector box's sides), its last four
#: at faces of at most SMALL_SIDE px, and between them the two mixed on a log scale: the median
#: sides of the size bins of scenes train whose fits differ (under 12 px, 18-25 px;
#: benchmarks/fit_face_boxes.py)
SMALL_SIDE, LARGE_SIDE = 10.0, 18.0

BoxFit = tuple[float, ...]


def face_regions(faces: Detections, frame_shape: tuple[int, ...], *, widen: float,
                 min_face: float, max_faces: int,
                 box_fit: BoxFit = NO_BOX_FIT) -> tuple[list[Region], str | None]:
    """The regions of one frame's faces, best first, and a note when faces were left out.

    Each detector box is first mapped by ``box_fit`` (:func:`fitted_box`) onto the face boxes
    users mean (see the presets), then clipped to the frame (faces cut by the border keep their
    visible part); faces whose clipped box is smaller than ``min_face`` pixels on its shorter
    side are dropped;
    at most ``max_faces`` are kept. Each region's ``crop_box`` is the detector's box widened
    ``widen`` times about its centre (the classifier was trained on crops with some context),
    clipped to the frame.
    """
    h, w = frame_shape[:2]
    regions: list[Region] = []
    for box, score, points in zip(faces.boxes, faces.scores, faces.landmarks):
        clipped = _clip(fitted_box(box, box_fit), w, h)
        if clipped is None or min(clipped[2] - clipped[0], clipped[3] - clipped[1]) < min_face:
            continue
        crop = _clip(_widened(box, widen), w, h) or clipped
        regions.append(Region(clipped, float(score), np.asarray(points, np.float32), crop))
    return regions[:max_faces], cap_note(max_faces, len(regions))


def cap_note(max_faces: int, found: int) -> str | None:
    """The records' note when ``found`` faces were capped at ``max_faces`` (None when not)."""
    if found <= max_faces:
        return None
    return f"face cap: scored the {max_faces} most confident of {found} faces found"


def split_reported(regions: list[Region], report_threshold: float
                   ) -> tuple[list[Region], list[Region]]:
    """``regions`` -> (those with a score >= ``report_threshold``, the others), each in order.
    A region without a score (not a detector's) is always reported."""
    reported, unreported = [], []
    for region in regions:
        low = region.score is not None and region.score < report_threshold
        (unreported if low else reported).append(region)
    return reported, unreported


def check_report_threshold(value: object) -> float:
    """``report_threshold`` as a float in [0, 1] (ValueError naming what came)."""
    try:
        threshold = float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        threshold = math.nan
    if not 0.0 <= threshold <= 1.0:  # NaN fails too
        raise ValueError(f"report_threshold: expected a face score in [0, 1], got {value!r}")
    return threshold


def fitted_box(box: np.ndarray, box_fit: BoxFit) -> np.ndarray:
    """The detector's ``box`` (x0, y0, x1, y1) mapped by ``box_fit`` = (width factor, height
    factor, x shift, y shift; shifts in units of the box's width and height), or by 8 numbers:
    such a fit for large faces, then one for small faces (see :data:`SMALL_SIDE`)."""
    if len(box_fit) == 8:
        side = math.sqrt(max(float((box[2] - box[0]) * (box[3] - box[1])), 1e-6))
        t = (math.log(side) - math.log(SMALL_SIDE)) / (math.log(LARGE_SIDE) - math.log(SMALL_SIDE))
        t = min(1.0, max(0.0, t))
        box_fit = tuple(t * large + (1.0 - t) * small
                        for large, small in zip(box_fit[:4], box_fit[4:]))
    if tuple(box_fit) == NO_BOX_FIT:
        return box
    sx, sy, dx, dy = box_fit
    size = box[2:] - box[:2]
    centre = (box[:2] + box[2:]) / 2.0 + size * np.array([dx, dy], np.float32)
    half = size * np.array([sx / 2.0, sy / 2.0], np.float32)
    return np.concatenate([centre - half, centre + half])


def check_box_fit(box_fit: object) -> BoxFit:
    """``box_fit`` as 4 or 8 floats (ValueError naming what came when it is not 4 or 8 numbers
    with positive factors)."""
    try:
        values = tuple(float(v) for v in box_fit)  # type: ignore[union-attr]
    except (TypeError, ValueError):
        values = ()
    if len(values) not in (4, 8):
        raise ValueError(f"box_fit: expected 4 numbers (width factor, height factor, x shift, "
                         f"y shift), or 8 (those for faces of {LARGE_SIDE:g} px and more, then "
                         f"for faces of {SMALL_SIDE:g} px and less), got {box_fit!r}")
    if min(values[0::4] + values[1::4]) <= 0:
        raise ValueError(f"box_fit: expected positive width and height factors, got {box_fit!r}")
    return values


def _widened(box: np.ndarray, factor: float) -> np.ndarray:
    centre = (box[:2] + box[2:]) / 2.0
    half = (box[2:] - box[:2]) * (factor / 2.0)
    return np.concatenate([centre - half, centre + half])


def _clip(box: np.ndarray, w: int, h: int) -> tuple[int, int, int, int] | None:
    """Integer box inside the frame covering ``box`` (floor/ceil), or None when nothing is left."""
    x0 = max(0, math.floor(float(box[0])))
    y0 = max(0, math.floor(float(box[1])))
    x1 = min(w, math.ceil(float(box[2])))
    y1 = min(h, math.ceil(float(box[3])))
    if x1 <= x0 or y1 <= y0:
        return None
    return (x0, y0, x1, y1)
