"""YuNet-n (shipped in ``maskrt/models/yunet``), run by ONNX Runtime, decoded with NumPy.

The decoding and the NMS are those of OpenCV's ``cv2.FaceDetectorYN`` (a test holds them equal on
real images), vectorised over every anchor cell and batched over frames of one padded size:

* input: the frame (upscaled by ``upscale`` first, for small faces), zero-padded at the bottom
  and right to multiples of 32, as float32 BGR 0-255 NCHW;
* per stride s and cell (row r, column c): score = sqrt(clip(cls) * clip(obj)); box centre
  ((c + dx) s, (r + dy) s), size (exp(dw) s, exp(dh) s); landmarks ((c + kx) s, (r + ky) s);
* NMS: OpenCV's ``cv2.dnn.NMSBoxes`` on the boxes truncated to integers (as OpenCV does).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Sequence

import cv2
import numpy as np

from maskrt.detect.base import Detections, Detector

MODEL_PATH = Path(__file__).resolve().parents[1] / "models" / "yunet" / "yunet_n_dynamic.onnx"
STRIDES = (8, 16, 32)
PAD = 32


class YuNetDetector(Detector):
    """YuNet-n face detector on ONNX Runtime (CPU).

    score_threshold: faces below are dropped. nms_iou: NMS overlap threshold. upscale: the frame
    is enlarged by this factor before detection (YuNet-n finds many more of the small faces of
    camera scenes on a 2x image). top_k: NMS keeps at most this many. max_side: frames whose
    longer side after upscaling exceeds this are scaled down instead (bounds the cost of 4K).
    session: a ready object with ONNX Runtime's ``run(names, feeds)`` and ``get_outputs()`` to
    run the graph instead of a session of ``model`` (the Triton faces model's, which runs it in
    the repository's detector model). pad: inputs are zero-padded at the bottom and right to
    multiples of this (a multiple of 32, YuNet's coarsest stride; never past ``max_side`` rounded
    up to 32): 32 costs the least; a larger one makes input shapes repeat across frames of
    different sizes, which a GPU runtime plans once per shape.
    """

    name = "yunet"

    def __init__(self, *, score_threshold: float = 0.5, nms_iou: float = 0.3, upscale: float = 1.0,
                 top_k: int = 5000, max_side: int = 2048, model: str | os.PathLike[str] = MODEL_PATH,
                 threads: int | None = None, session: Any = None, pad: int = PAD) -> None:
        from maskrt.backends.ort import cpu_session

        set_yunet_settings(self, score_threshold, nms_iou, upscale, top_k, max_side, pad)
        self.model = Path(model)
        if session is not None:
            self._session, self.threads = session, threads
        else:
            self._session, self.threads = cpu_session(self.model, threads, "yunet detector")
        self._outputs = [o.name for o in self._session.get_outputs()]

    def describe(self) -> str:
        return (f"yunet-n onnxruntime CPU (upscale {self.upscale:g}, score >= "
                f"{self.score_threshold:g}, nms {self.nms_iou:g})")

    def detect(self, frames: Sequence[np.ndarray],
               scales: Sequence[float] | None = None) -> list[Detections]:
        scales = input_scales(frames, scales, self.upscale, self.max_side)
        inputs = [_resize(frame, scale) for frame, scale in zip(frames, scales)]
        results: list[Detections | None] = [None] * len(frames)
        for padded, indices in _by_padded_size(inputs, self.pad, self.max_side).items():
            batch = _blob([inputs[i] for i in indices], padded)
            outputs = dict(zip(self._outputs, self._session.run(self._outputs, {"input": batch})))
            for slot, i in enumerate(indices):
                raw = decode(outputs, slot, batch.shape[2:], self.score_threshold)
                results[i] = _rescale(self._nms(raw), scales[i])
        return results  # type: ignore[return-value]

    def _nms(self, faces: Detections) -> Detections:
        if len(faces) <= 1:
            return faces
        xywh = np.trunc(np.concatenate([faces.boxes[:, :2], faces.boxes[:, 2:] - faces.boxes[:, :2]],
                                       axis=1)).astype(np.int32)
        keep = cv2.dnn.NMSBoxes(xywh.tolist(), faces.scores.tolist(), self.score_threshold,
                                self.nms_iou, 1.0, self.top_k)
        return faces.take(np.asarray(keep, dtype=np.int64).reshape(-1))


def set_yunet_settings(detector: Any, score_threshold: float, nms_iou: float, upscale: float,
                       top_k: int, max_side: int, pad: int = PAD) -> None:
    """Checks YuNet's settings (ValueError naming them) and sets them on ``detector``; shared by
    the ONNX Runtime and the torch detectors."""
    if not 0.0 <= score_threshold <= 1.0 or not 0.0 < nms_iou <= 1.0:
        raise ValueError(f"yunet: expected score_threshold in [0, 1] and nms_iou in (0, 1], "
                         f"got {score_threshold} and {nms_iou}")
    if upscale <= 0 or top_k < 1 or max_side < PAD:
        raise ValueError(f"yunet: expected upscale > 0, top_k >= 1, max_side >= {PAD}, got "
                         f"{upscale}, {top_k}, {max_side}")
    detector.score_threshold, detector.nms_iou = float(score_threshold), float(nms_iou)
    if int(pad) != pad or pad < PAD or pad % PAD:
        raise ValueError(f"yunet: expected pad (face option detector_pad) a multiple of {PAD} "
                         f"(32, 64, 128...), got {pad}")
    detector.upscale, detector.top_k, detector.max_side = float(upscale), int(top_k), int(max_side)
    detector.pad = int(pad)


def input_scale(shape: tuple[int, ...], upscale: float, max_side: int) -> float:
    """The factor a frame of ``shape`` is resized by before detection: ``upscale``, unless its
    longer side would then exceed ``max_side``."""
    h, w = shape[:2]
    return min(upscale, max_side / max(h, w, 1))


def input_scales(frames: Sequence[np.ndarray], scales: Sequence[float] | None, upscale: float,
                 max_side: int) -> list[float]:
    """Each frame's resize factor: its entry of ``scales`` (else ``upscale``), capped by
    ``max_side`` (ValueError when ``scales`` does not match the frames)."""
    if scales is None:
        return [input_scale(frame.shape, upscale, max_side) for frame in frames]
    if len(scales) != len(frames) or any(not s > 0 for s in scales):
        raise ValueError(f"detect: expected one positive scale per frame ({len(frames)}), "
                         f"got {list(scales)}")
    return [input_scale(frame.shape, float(s), max_side) for frame, s in zip(frames, scales)]


def decode(outputs: dict[str, np.ndarray], slot: int, padded: tuple[int, int],
           score_threshold: float) -> Detections:
    """The raw (pre-NMS) faces of batch item ``slot`` from YuNet's outputs, in input pixels."""
    boxes, scores, landmarks = [], [], []
    for stride in STRIDES:
        cols = padded[1] // stride
        cls = np.clip(outputs[f"cls_{stride}"][slot, :, 0], 0.0, 1.0)
        obj = np.clip(outputs[f"obj_{stride}"][slot, :, 0], 0.0, 1.0)
        score = np.sqrt(cls * obj)
        cells = np.nonzero(score >= score_threshold)[0]
        if cells.size == 0:
            continue
        s = np.float32(stride)
        col = (cells % cols).astype(np.float32)[:, None]
        row = (cells // cols).astype(np.float32)[:, None]
        bbox = outputs[f"bbox_{stride}"][slot, cells]
        centre = np.concatenate([(col + bbox[:, :1]) * s, (row + bbox[:, 1:2]) * s], axis=1)
        size = np.exp(bbox[:, 2:4]) * s
        corner = centre - size / np.float32(2)
        boxes.append(np.concatenate([corner, corner + size], axis=1))
        kps = outputs[f"kps_{stride}"][slot, cells].reshape(-1, 5, 2)
        landmarks.append((kps + np.stack([col, row], axis=2)) * s)
        scores.append(score[cells])
    if not scores:
        return Detections()
    all_scores = np.concatenate(scores).astype(np.float32)
    return Detections(np.concatenate(boxes).astype(np.float32), all_scores,
                      np.concatenate(landmarks).astype(np.float32), len(all_scores))


def _rescale(faces: Detections, scale: float) -> Detections:
    """Input pixels -> frame pixels."""
    if scale != 1.0 and len(faces):
        faces = Detections(faces.boxes / np.float32(scale), faces.scores,
                           faces.landmarks / np.float32(scale), faces.found)
    faces.found = len(faces)
    return faces


def _resize(frame: np.ndarray, scale: float) -> np.ndarray:
    if scale == 1.0:
        return frame
    h, w = frame.shape[:2]
    size = (max(1, round(w * scale)), max(1, round(h * scale)))
    return cv2.resize(frame, size, interpolation=cv2.INTER_LINEAR if scale > 1 else cv2.INTER_AREA)


def _round_up(n: int, multiple: int) -> int:
    return -(-n // multiple) * multiple


def _padded(shape: tuple[int, ...], pad: int = PAD, max_side: int | None = None) -> tuple[int, int]:
    """The (height, width) an input of ``shape`` is zero-padded to: multiples of ``pad``, but not
    past ``max_side`` rounded up to 32 (a TensorRT profile's largest), nor under ``shape``."""
    def side(n: int) -> int:
        padded = _round_up(n, pad)
        if max_side is not None:
            padded = max(_round_up(n, PAD), min(padded, _round_up(max_side, PAD)))
        return padded

    return side(shape[0]), side(shape[1])


def _by_padded_size(inputs: Sequence[np.ndarray], pad: int = PAD,
                    max_side: int | None = None) -> dict[tuple[int, int], list[int]]:
    groups: dict[tuple[int, int], list[int]] = {}
    for i, image in enumerate(inputs):
        groups.setdefault(_padded(image.shape, pad, max_side), []).append(i)
    return groups


def _blob(images: Sequence[np.ndarray], padded: tuple[int, int]) -> Any:
    """float32 [n, 3, H, W] BGR 0-255, each image zero-padded at the bottom and right to
    ``padded`` (H, W)."""
    ph, pw = padded
    blob = np.zeros((len(images), 3, ph, pw), dtype=np.float32)
    for i, image in enumerate(images):
        h, w = image.shape[:2]
        # plane by plane: contiguous copies, half the time of one strided HWC -> CHW copy
        # (1280x736: 0.66 against 1.28 ms; the detector's thread spent 13% of its time here)
        for channel, plane in enumerate(cv2.split(image)):
            blob[i, channel, :h, :w] = plane
    return blob
