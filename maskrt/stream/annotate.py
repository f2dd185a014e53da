"""Decisions drawn on frames: the label of a whole-frame decision in the corner, or each face's
box, label, probability and face score. Text is scaled to the frame, not to the face, so it stays
readable on the tiny faces of camera scenes; :func:`place_labels` keeps the labels of a crowd
from covering one another."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np

from maskrt.labels import CLASSES

#: BGR colours of the two classes
COLOURS = {CLASSES[0]: (0, 160, 0), CLASSES[1]: (0, 0, 220)}


def _text_scale(image: np.ndarray) -> tuple[float, int]:
    scale = max(0.4, min(image.shape[:2]) / 400.0)
    return scale, max(1, int(round(scale * 2)))


def _probability(record: Any) -> float:
    return record.p_with_mask if record.label == CLASSES[0] else record.p_without_mask


def annotate(image: np.ndarray, record: Any) -> np.ndarray:
    """A copy of ``image`` with the record's decision written in its top-left corner."""
    import cv2

    out = image.copy()
    if record.label is None:
        return out
    text = f"{record.label} {_probability(record):.2f}"
    scale, thickness = _text_scale(out)
    (w, h), base = cv2.getTextSize(text, cv2.FONT_HERSHEY_SIMPLEX, scale, thickness)
    cv2.rectangle(out, (0, 0), (w + 8, h + base + 8), (255, 255, 255), -1)
    cv2.putText(out, text, (4, h + 4), cv2.FONT_HERSHEY_SIMPLEX, scale, COLOURS[record.label],
                thickness, cv2.LINE_AA)
    return out


#: a face whose box's shorter side is under this many label heights gets the compact tag: the
#: full label would dwarf it and cover its neighbours
SMALL_FACE_LABELS = 2.0
#: where a face's label is tried, in order (then the compact tag, then none)
POSITIONS = ("above", "below", "inside")

Rect = tuple[int, int, int, int]


@dataclass(frozen=True)
class Label:
    """A face's label as drawn: its text, the rectangle its background fills ([x0, y0, x1, y1]
    in frame pixels, end-exclusive), where it sits (one of POSITIONS) and whether it is the
    compact tag."""

    text: str
    rect: Rect
    position: str
    compact: bool


def face_texts(record: Any) -> tuple[str, str, str]:
    """The label of a face and its two texts, full and compact: a tracked person's decision
    with the track id, else the face's own decision, then the detector's face score
    ("#7 NO MASK 0.91 | face 0.82", compact "#7 NO .91 f.82"). ``record``: a stream Record, or
    an Engine Result of :meth:`Engine.faces` (untracked: no track fields)."""
    if getattr(record, "track_label", None) is not None:
        label, p = record.track_label, record.p_track_without_mask
        p = p if label == CLASSES[1] else 1.0 - p
    else:
        label, p = record.label, _probability(record)
    name, short = ("mask", "mask") if label == CLASSES[0] else ("NO MASK", "NO")
    track_id = getattr(record, "track_id", None)
    prefix = f"#{track_id} " if track_id is not None else ""
    full, compact = f"{prefix}{name} {p:.2f}", f"{prefix}{short} {_short(p)}"
    face = getattr(record, "face_score", None)
    if face is not None:
        full, compact = f"{full} | face {face:.2f}", f"{compact} f{_short(face)}"
    return label, full, compact


def _short(p: float) -> str:
    """0.97 -> ".97" (1.00 stays "1.0")."""
    text = f"{p:.2f}"
    return "1.0" if text == "1.00" else text[1:] if text.startswith("0") else text


def label_style(frame_shape: Sequence[int]) -> tuple[float, int]:
    """Font scale and thickness of face labels: scaled to the frame (readable on its tiny faces
    without the label of one face covering ten others)."""
    scale = max(0.35, min(frame_shape[:2]) / 1200.0)
    return scale, max(1, int(round(scale * 1.5)))


def label_size(text: str, scale: float, thickness: int) -> tuple[int, int]:
    """(width, height) of a label's background: the text and a 2-pixel margin."""
    import cv2

    (w, h), base = cv2.getTextSize(text, cv2.FONT_HERSHEY_SIMPLEX, scale, thickness)
    return w + 4, h + base + 4


def place_labels(boxes: Sequence[Sequence[int]], texts: Sequence[tuple[str, str]],
                 frame_size: tuple[int, int], scale: float, thickness: int,
                 first: Sequence[bool] | None = None) -> list[Label | None]:
    """Where each face's label goes, so that no label covers another: per face (``boxes``:
    [x0, y0, x1, y1]; ``texts``: (full, compact)), in order of importance (``first`` faces,
    e.g. the without_mask ones, then larger faces before smaller), the first free spot of
    above the box, below it, inside it (when it fits); small faces (shorter side under
    SMALL_FACE_LABELS label heights) start at the compact tag; a face where neither text fits
    gets None (its box alone). Spots that cover no other face are preferred. ``frame_size``:
    (width, height). Pure: the same input gives the same rectangles."""
    n = len(boxes)
    box = np.asarray(boxes, np.int64).reshape(-1, 4)
    sides = np.minimum(box[:, 2] - box[:, 0], box[:, 3] - box[:, 1])
    areas = (box[:, 2] - box[:, 0]) * (box[:, 3] - box[:, 1])
    urgent = np.zeros(n, bool) if first is None else np.asarray(first, bool)
    order = sorted(range(n), key=lambda i: (not urgent[i], -int(areas[i]), i))
    placed = np.zeros((0, 4), np.int64)
    labels: list[Label | None] = [None] * n
    for i in order:
        sizes = [(text, label_size(text, scale, thickness), k == 1)
                 for k, text in enumerate(texts[i])]
        if sides[i] < SMALL_FACE_LABELS * sizes[0][1][1]:
            sizes = sizes[1:]  # a small face: the compact tag only
        others = np.delete(box, i, axis=0)
        spots = [(text, size, compact, where, avoid) for avoid in (True, False)
                 for text, size, compact in sizes for where in POSITIONS]
        for text, (w, h), compact, where, avoid in spots:
            rect = _spot(box[i], w, h, where, frame_size)
            if rect is None or _overlaps(rect, placed) or (avoid and _overlaps(rect, others)):
                continue
            labels[i] = Label(text, rect, where, compact)
            placed = np.vstack([placed, np.asarray(rect, np.int64)[None]])
            break
    return labels


def _spot(box: np.ndarray, w: int, h: int, where: str, frame_size: tuple[int, int]) -> Rect | None:
    """The label rectangle at ``where`` of ``box``, left-aligned with it and moved inside the
    frame sideways; None when it leaves the frame (or, inside, the box)."""
    width, height = frame_size
    x0, y0, x1, y1 = (int(v) for v in box)
    if w > width:
        return None
    left = min(max(0, x0), width - w)
    if where == "inside" and (w > x1 - x0 or h > y1 - y0):
        return None
    top = {"above": y0 - h, "below": y1, "inside": y0}[where]
    if top < 0 or top + h > height:
        return None
    return (left, top, left + w, top + h)


def _overlaps(rect: Rect, others: np.ndarray) -> bool:
    """Whether ``rect`` shares a pixel with any of ``others`` [N, 4] (end-exclusive)."""
    if not len(others):
        return False
    x0, y0, x1, y1 = rect
    return bool(np.any((others[:, 0] < x1) & (x0 < others[:, 2])
                       & (others[:, 1] < y1) & (y0 < others[:, 3])))


def face_labels(records: Sequence[Any], frame_shape: Sequence[int]) -> list[Label | None]:
    """The labels of a frame's face records (those with a box and a label), placed."""
    scale, thickness = label_style(frame_shape)
    boxes = [getattr(r, "frame_box", None) or r.box for r in records]
    texts = [face_texts(r) for r in records]
    return place_labels(boxes, [t[1:] for t in texts], (frame_shape[1], frame_shape[0]), scale,
                        thickness, [t[0] == CLASSES[1] for t in texts])


def annotate_faces(image: np.ndarray, records: Sequence[Any]) -> np.ndarray:
    """A copy of ``image`` with each face record's box, label, probability and face score drawn
    on it ("no face" when the frame had none). Labels never cover one another
    (:func:`place_labels`): above the box, else below, else inside; compact on small faces; left
    out (the box's colour still tells the class) where none fits."""
    import cv2

    out = image.copy()
    faces = [r for r in records if r.box is not None and r.label is not None]
    if not faces:
        scale, thickness = _text_scale(out)
        cv2.putText(out, "no face", (4, int(20 * scale) + 4), cv2.FONT_HERSHEY_SIMPLEX, scale,
                    (255, 255, 255), thickness, cv2.LINE_AA)
        return out
    scale, thickness = label_style(out.shape)
    line = max(1, int(round(scale * 2)))
    for record, label in zip(faces, face_labels(faces, out.shape)):
        x0, y0, x1, y1 = getattr(record, "frame_box", None) or record.box  # pixels drawn on
        colour = COLOURS[face_texts(record)[0]]
        cv2.rectangle(out, (x0, y0), (x1 - 1, y1 - 1), colour, line)
        if label is None:
            continue
        lx0, ly0, lx1, ly1 = label.rect
        cv2.rectangle(out, (lx0, ly0), (lx1 - 1, ly1 - 1), colour, -1)
        (_, h), _ = cv2.getTextSize(label.text, cv2.FONT_HERSHEY_SIMPLEX, scale, thickness)
        cv2.putText(out, label.text, (lx0 + 2, ly0 + 2 + h), cv2.FONT_HERSHEY_SIMPLEX, scale,
                    (255, 255, 255), thickness, cv2.LINE_AA)
    return out


def faces_overlay(image: np.ndarray, areas: Sequence[Sequence[int]], overlays: Sequence[Any],
                  faces: Sequence[Any]) -> np.ndarray:
    """The frame with each face's CAM overlay (drawn over its crop, at the crop's size) pasted
    where the crop came from (``areas``: [x0, y0, x1, y1]), then every box and label."""
    out = image.copy()
    for (x0, y0, x1, y1), overlay in zip(areas, overlays):
        if overlay is not None:
            out[y0:y1, x0:x1] = overlay
    return annotate_faces(out, faces)
