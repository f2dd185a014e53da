"""YuNet-n on PyTorch (a CUDA GPU, or the CPU), decoded with torch ops and torchvision's NMS.

The shipped ONNX graph is converted once to a torch module with ``onnx2torch`` (exact: the same
outputs as ONNX Runtime to float32 rounding), so the convolutions run where the classifier runs.
Frames are resized and padded on the host exactly as :class:`~maskrt.detect.yunet.YuNetDetector`
does (the same blob), uploaded, run, and decoded on the device (the same formulas as
:func:`~maskrt.detect.yunet.decode`); NMS is ``torchvision.ops.nms`` on the boxes truncated to
integers, which is OpenCV's NMSBoxes rule (integer rectangles, suppress when IoU > threshold).
Only the kept faces come back to the host.

Needs ``pip install maskrt[gpu]`` (torch, torchvision, onnx2torch).
"""

from __future__ import annotations

import os
from typing import Any, Sequence

import numpy as np

from maskrt.backends.base import BackendUnavailable
from maskrt.detect.base import Detections, Detector
from maskrt.detect.yunet import (MODEL_PATH, STRIDES, _blob, _by_padded_size, _rescale, _resize,
                                 input_scale, set_yunet_settings)


def _import_onnx2torch() -> Any:
    try:
        import onnx2torch
    except ImportError as err:
        raise BackendUnavailable("the torch face detector needs onnx2torch (and torch): "
                                 "pip install 'maskrt[gpu]'") from err
    return onnx2torch


class YuNetTorchDetector(Detector):
    """YuNet-n as a torch module on ``device`` ("cuda", "cuda:1" or "cpu"); the settings are
    :class:`~maskrt.detect.yunet.YuNetDetector`'s."""

    name = "yunet-torch"

    def __init__(self, *, device: str = "cuda", score_threshold: float = 0.5, nms_iou: float = 0.3,
                 upscale: float = 1.0, top_k: int = 5000, max_side: int = 2048,
                 model: str | os.PathLike[str] = MODEL_PATH) -> None:
        import torch

        set_yunet_settings(self, score_threshold, nms_iou, upscale, top_k, max_side)
        self.device = torch.device(device)
        if self.device.type == "cuda" and not torch.cuda.is_available():
            raise BackendUnavailable(f"yunet-torch: device {device} asked for, but torch sees no CUDA GPU")
        self._net = _import_onnx2torch().convert(str(model)).eval().to(self.device)
        self._outputs = [f"{kind}_{s}" for kind in ("cls", "obj", "bbox", "kps") for s in STRIDES]

    def describe(self) -> str:
        return (f"yunet-n torch {self.device} (upscale {self.upscale:g}, score >= "
                f"{self.score_threshold:g}, nms {self.nms_iou:g})")

    def detect(self, frames: Sequence[np.ndarray]) -> list[Detections]:
        import torch

        scales = [input_scale(f.shape, self.upscale, self.max_side) for f in frames]
        inputs = [_resize(frame, scale) for frame, scale in zip(frames, scales)]
        results: list[Detections | None] = [None] * len(frames)
        for indices in _by_padded_size(inputs).values():
            blob = torch.from_numpy(_blob([inputs[i] for i in indices])).to(self.device)
            with torch.inference_mode():
                outputs = dict(zip(self._outputs, self._net(blob)))
            for slot, i in enumerate(indices):
                faces = self._decode_and_nms(outputs, slot, tuple(blob.shape[2:]))
                results[i] = _rescale(faces, scales[i])
        return results  # type: ignore[return-value]

    def _decode_and_nms(self, outputs: dict[str, Any], slot: int, padded: tuple[int, int]) -> Detections:
        import torch
        import torchvision

        boxes, scores, landmarks = decode_torch(outputs, slot, padded, self.score_threshold)
        if scores.numel() == 0:
            return Detections()
        if scores.numel() > 1:
            corner = boxes[:, :2].trunc()
            integer = torch.cat([corner, corner + (boxes[:, 2:] - boxes[:, :2]).trunc()], dim=1)
            keep = torchvision.ops.nms(integer, scores, self.nms_iou)[: self.top_k]
            boxes, scores, landmarks = boxes[keep], scores[keep], landmarks[keep]
        return Detections(boxes.cpu().numpy(), scores.cpu().numpy(), landmarks.cpu().numpy(),
                          int(scores.numel()))


def decode_torch(outputs: dict[str, Any], slot: int, padded: tuple[int, int],
                 score_threshold: float) -> tuple[Any, Any, Any]:
    """:func:`maskrt.detect.yunet.decode` in torch ops on the outputs' device: (boxes [n, 4],
    scores [n], landmarks [n, 5, 2]) in input pixels, before NMS, in stride then cell order."""
    import torch

    boxes, scores, landmarks = [], [], []
    for stride in STRIDES:
        cols = padded[1] // stride
        cls = outputs[f"cls_{stride}"][slot, :, 0].clamp(0.0, 1.0)
        obj = outputs[f"obj_{stride}"][slot, :, 0].clamp(0.0, 1.0)
        score = torch.sqrt(cls * obj)
        cells = torch.nonzero(score >= score_threshold).flatten()
        s = float(stride)
        col = (cells % cols).to(torch.float32)[:, None]
        row = torch.div(cells, cols, rounding_mode="floor").to(torch.float32)[:, None]
        bbox = outputs[f"bbox_{stride}"][slot, cells]
        centre = torch.cat([(col + bbox[:, :1]) * s, (row + bbox[:, 1:2]) * s], dim=1)
        size = torch.exp(bbox[:, 2:4]) * s
        corner = centre - size / 2.0
        boxes.append(torch.cat([corner, corner + size], dim=1))
        kps = outputs[f"kps_{stride}"][slot, cells].reshape(-1, 5, 2)
        landmarks.append((kps + torch.stack([col, row], dim=2)) * s)
        scores.append(score[cells])
    return torch.cat(boxes), torch.cat(scores), torch.cat(landmarks)
