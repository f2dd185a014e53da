"""What a Serve replica answers per frame: every face (``regions="faces"``, the default) found by
``maskrt score``'s face stage and decided by the classifier (:meth:`maskrt.Engine.faces`), or
the whole frame's one decision (``regions="frame"``, :class:`~maskrt.ray.scorer.MaskScorer`).

A request is one item ``(frame, original, explain)``: a uint8 BGR frame, the (width, height) of
the image as stored when it was decoded smaller (None: the frame's own size) and whether to add
the frame's overlay (JPEG, base64). Boxes and landmarks are given in the pixels of the image as
stored, as ``maskrt score``'s records give them.
"""

from __future__ import annotations

import base64
import logging
from typing import Any, Sequence

import numpy as np

from maskrt.image import ImageError, limit_side, to_bgr8
from maskrt.stream.records import FAILED, SCORED, Reduction, placed

log = logging.getLogger("maskrt.ray.serve")

#: one request: (uint8 BGR frame, original (width, height) or None, explain)
Item = tuple[Any, Any, bool]


def failed(reason: str) -> dict[str, Any]:
    return {"status": FAILED, "reason": reason}


def jpeg_base64(image: Any) -> str:
    """A uint8 BGR image as base64 of its JPEG."""
    import cv2

    ok, data = cv2.imencode(".jpg", np.ascontiguousarray(image))
    if not ok:
        raise ImageError("overlay: cv2.imencode could not encode it as JPEG")
    return base64.b64encode(data.tobytes()).decode("ascii")


def frame_decision(result: Any, frame: Any) -> dict[str, Any]:
    """The JSON of one frame's whole-frame decision (the fields of a scored ``--regions frame``
    record), or of why it was not scored (``result`` is the reason)."""
    if isinstance(result, str):
        return failed(result)
    h, w = np.asarray(frame).shape[:2]
    return {"status": SCORED, "label": result.label, "class_index": int(result.class_index),
            "p_with_mask": round(result.p_with_mask, 6),
            "p_without_mask": round(result.p_without_mask, 6),
            "region_index": 0, "box": [0, 0, int(w), int(h)], "faces": 1}


def face_answer(results: Sequence[Any], reduction: Reduction | None,
                overlay_of: Any = None) -> dict[str, Any]:
    """The JSON of one frame's faces (``Engine.faces``' Results, best face score first):
    ``{"status": "scored", "faces": [{region_index, box, face_score, landmarks, label,
    class_index, p_with_mask, p_without_mask}, ...]}``; ``overlay_of``: the frame, to add
    ``overlay`` (its faces' CAMs, boxes and labels, or "no face", as JPEG base64)."""
    faces = []
    for index, result in enumerate(results):
        where = placed(result.box, result.landmarks, reduction)
        faces.append({"region_index": index, "box": where["box"],
                      "face_score": round(float(result.face_score), 6),
                      "landmarks": where["landmarks"], "label": result.label,
                      "class_index": int(result.class_index),
                      "p_with_mask": round(result.p_with_mask, 6),
                      "p_without_mask": round(result.p_without_mask, 6)})
    answer: dict[str, Any] = {"status": SCORED, "faces": faces}
    if overlay_of is not None:
        from maskrt.stream.annotate import annotate_faces

        answer["overlay"] = jpeg_base64(results[0].overlay if results
                                        else annotate_faces(overlay_of, []))
    return answer


def prepared(frame: Any, original: Any, what: str) -> tuple[np.ndarray, Reduction | None]:
    """A request's frame as the pipeline's decode stage leaves it (uint8 BGR, at most
    ``MAX_SIDE`` a side) and how it relates to the image as stored (ImageError: not an image)."""
    image = to_bgr8(np.asarray(frame), what=what)
    size = tuple(original) if original is not None else (image.shape[1], image.shape[0])
    image = limit_side(image)
    return image, Reduction.of(size, image)  # type: ignore[arg-type]


class FaceScorer:
    """A replica's face scoring: the classifier and ``maskrt score``'s face detector (preset,
    face_options) loaded once, beside each other (on a GPU replica the detector follows the
    classifier, ``detector_device=auto``), used by :meth:`maskrt.Engine.faces` for every batch."""

    def __init__(self, model: Any = None, backend: str = "onnxruntime", *,
                 backend_options: dict[str, Any] | None = None, chunk_size: int = 64,
                 preset: str = "default", face_options: dict[str, Any] | None = None) -> None:
        from maskrt.engine import Engine
        from maskrt.ray.units import actor_detector

        options = dict(backend_options or {})
        classifier = Engine(model, backend=backend, chunk_size=chunk_size, **options)
        detector = actor_detector(preset, dict(face_options or {}), classifier.input_device,
                                  options.get("threads"))
        self.engine = Engine(backend=classifier.backend, chunk_size=chunk_size, preset=preset,
                             detector=detector, face_options=face_options)

    def answers(self, items: Sequence[Item]) -> list[dict[str, Any]]:
        """Per item its faces' JSON (:func:`face_answer`), or ``failed`` with the reason (not
        an image; the detector or the classifier failed on its group of frames)."""
        out: list[dict[str, Any] | None] = [None] * len(items)
        ready: list[tuple[int, np.ndarray, Reduction | None, bool]] = []
        for i, (frame, original, explain) in enumerate(items):
            try:
                ready.append((i, *prepared(frame, original, f"frame {i}"), bool(explain)))
            except ImageError as err:
                out[i] = failed(str(err))
        for explain in (False, True):  # at most two calls: with overlays and without
            group = [entry for entry in ready if entry[3] == explain]
            if not group:
                continue
            try:
                per_frame = self.engine.faces([entry[1] for entry in group], explain=explain)
                for (i, image, reduction, _), results in zip(group, per_frame):
                    out[i] = face_answer(results, reduction, image if explain else None)
            except Exception as err:  # noqa: BLE001 - a backend error fails this group only
                log.exception("faces failed on a batch of %d frames", len(group))
                for entry in group:
                    out[entry[0]] = failed(f"backend error: {type(err).__name__}: {err}")
        return out  # type: ignore[return-value]


def frame_answers(scorer: Any, items: Sequence[Item]) -> list[dict[str, Any]]:
    """``regions="frame"``: per item the whole frame's decision (:func:`frame_decision`; with
    ``explain`` also its CAM overlay as JPEG base64), as before faces were served."""
    out: list[dict[str, Any] | None] = [None] * len(items)
    for explain in (False, True):
        rows = [i for i, item in enumerate(items) if bool(item[2]) == explain]
        if not rows:
            continue
        frames = [items[i][0] for i in rows]
        for i, frame, result in zip(rows, frames, scorer.decide(frames, explain=explain)):
            out[i] = frame_decision(result, frame)
            if explain and not isinstance(result, str):
                out[i]["overlay"] = jpeg_base64(result.overlay)  # type: ignore[index]
    return out  # type: ignore[return-value]
