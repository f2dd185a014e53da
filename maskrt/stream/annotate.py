"""Decisions drawn on frames: the label of a whole-frame decision in the corner, or each face's
box, label and probability. Text is scaled to the frame, not to the face, so it stays readable
on the tiny faces of camera scenes."""

from __future__ import annotations

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


def _face_text(record: Any) -> tuple[str, str]:
    """The label shown for a face and its text: a tracked person's decision with the track id
    ("#7 NO MASK 0.91"), else the face's own decision. ``record``: a stream Record, or an
    Engine Result of :meth:`Engine.faces` (untracked: no track fields)."""
    if getattr(record, "track_label", None) is not None:
        label, p = record.track_label, record.p_track_without_mask
        p = p if label == CLASSES[1] else 1.0 - p
    else:
        label, p = record.label, _probability(record)
    text = f"{'mask' if label == CLASSES[0] else 'NO MASK'} {p:.2f}"
    track_id = getattr(record, "track_id", None)
    return label, (f"#{track_id} " + text) if track_id is not None else text


def annotate_faces(image: np.ndarray, records: Sequence[Any]) -> np.ndarray:
    """A copy of ``image`` with each face record's box, label and probability drawn on it
    ("no face" when the frame had none). Labels sit above the box, inside the frame."""
    import cv2

    out = image.copy()
    scale, thickness = _text_scale(out)
    faces = [r for r in records if r.box is not None and r.label is not None]
    if not faces:
        cv2.putText(out, "no face", (4, int(20 * scale) + 4), cv2.FONT_HERSHEY_SIMPLEX, scale,
                    (255, 255, 255), thickness, cv2.LINE_AA)
        return out
    for record in faces:
        x0, y0, x1, y1 = getattr(record, "frame_box", None) or record.box  # pixels drawn on
        label, text = _face_text(record)
        colour = COLOURS[label]
        cv2.rectangle(out, (x0, y0), (x1 - 1, y1 - 1), colour, thickness)
        (w, h), base = cv2.getTextSize(text, cv2.FONT_HERSHEY_SIMPLEX, scale * 0.8, thickness)
        top = y0 - h - base - 2 if y0 - h - base - 2 >= 0 else min(y1 + 2, out.shape[0] - h - base)
        left = min(max(0, x0), max(0, out.shape[1] - w - 2))
        cv2.rectangle(out, (left, top), (left + w + 2, top + h + base + 2), colour, -1)
        cv2.putText(out, text, (left + 1, top + h + 1), cv2.FONT_HERSHEY_SIMPLEX, scale * 0.8,
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
