"""YuNet-n on a torch device (a CUDA GPU, or the CPU), decoded with torch ops and torchvision's NMS.

The network runs one of two ways (``runtime``): "torch", the shipped ONNX graph converted once to
a torch module with ``onnx2torch`` (exact: the same outputs as ONNX Runtime to float32
rounding), so the convolutions run where the classifier runs; or "tensorrt", its FP16 TensorRT
engine, built and cached like the classifier's (:mod:`maskrt.detect.yunet_tensorrt`).
Frames are resized and padded on the host exactly as :class:`~maskrt.detect.yunet.YuNetDetector`
does, uploaded as uint8 (a quarter of the bytes of the float32 blob, and no float conversion on
the host), made the same float32 NCHW blob on the device, run, and decoded there (the same formulas as
:func:`~maskrt.detect.yunet.decode`); NMS is ``torchvision.ops.nms`` on the boxes truncated to
integers, which is OpenCV's NMSBoxes rule (integer rectangles, suppress when IoU > threshold).
Only the kept faces come back to the host.

Needs ``pip install maskrt[gpu]`` (torch, torchvision, onnx2torch), and TensorRT for "tensorrt".
"""

from __future__ import annotations

import os
from typing import Any, Sequence

import numpy as np

from maskrt.backends.base import BackendUnavailable
from maskrt.detect.base import Detections, Detector
from maskrt.detect.yunet import (MODEL_PATH, PAD, STRIDES, _by_padded_size, _rescale, _resize,
                                 input_scales, set_yunet_settings)


def _import_onnx2torch() -> Any:
    try:
        import onnx2torch
    except ImportError as err:
        raise BackendUnavailable("the torch face detector needs onnx2torch (and torch): "
                                 "pip install 'maskrt[gpu]'") from err
    return onnx2torch


RUNTIMES = ("torch", "tensorrt")


class YuNetTorchDetector(Detector):
    """YuNet-n on torch ``device`` ("cuda", "cuda:1" or "cpu"), the network run by ``runtime``
    ("torch", or "tensorrt" on a CUDA device, its engine in ``engine_dir``); the other settings
    are :class:`~maskrt.detect.yunet.YuNetDetector`'s."""

    name = "yunet-torch"

    def __init__(self, *, device: str = "cuda", runtime: str = "torch", score_threshold: float = 0.5,
                 nms_iou: float = 0.3, upscale: float = 1.0, top_k: int = 5000, max_side: int = 2048,
                 engine_dir: str | os.PathLike[str] = "engines",
                 model: str | os.PathLike[str] = MODEL_PATH, pad: int = PAD) -> None:
        import torch

        set_yunet_settings(self, score_threshold, nms_iou, upscale, top_k, max_side, pad)
        if runtime not in RUNTIMES:
            raise ValueError(f"yunet-torch runtime: expected one of {list(RUNTIMES)}, got {runtime!r}")
        self.device, self.runtime = torch.device(device), runtime
        if self.device.type == "cuda" and not torch.cuda.is_available():
            raise BackendUnavailable(f"yunet-torch: device {device} asked for, but torch sees no CUDA GPU")
        if runtime == "tensorrt":
            if self.device.type != "cuda":
                raise ValueError(f"yunet-torch: the tensorrt runtime needs a CUDA device, got {device}")
            from maskrt.detect.yunet_tensorrt import YuNetEngine

            self.device = torch.device("cuda", self.device.index or 0)
            self._net: Any = YuNetEngine(self.device, max_side=self.max_side, engine_dir=engine_dir,
                                         model=model)
            self._max_batch = self._net.max_batch
        else:
            self._net = _import_onnx2torch().convert(str(model)).eval().to(self.device)
            self._max_batch = None
        self._outputs = [f"{kind}_{s}" for kind in ("cls", "obj", "bbox", "kps") for s in STRIDES]

    def describe(self) -> str:
        runtime = self._net.describe() if self.runtime == "tensorrt" else "torch"
        return (f"yunet-n {runtime} {self.device} (upscale {self.upscale:g}, score >= "
                f"{self.score_threshold:g}, nms {self.nms_iou:g})")

    def detect(self, frames: Sequence[np.ndarray],
               scales: Sequence[float] | None = None) -> list[Detections]:
        import torch

        scales = input_scales(frames, scales, self.upscale, self.max_side)
        inputs = [_resize(frame, scale) for frame, scale in zip(frames, scales)]
        results: list[Detections | None] = [None] * len(frames)
        for padded, group in _by_padded_size(inputs, self.pad, self.max_side).items():
            step = self._max_batch or len(group)
            for indices in (group[i:i + step] for i in range(0, len(group), step)):
                blob = self._device_blob([inputs[i] for i in indices], padded)
                outputs = self._run(blob)
                for slot, i in enumerate(indices):
                    faces = self._decode_and_nms(outputs, slot, tuple(blob.shape[2:]))
                    results[i] = _rescale(faces, scales[i])
        return results  # type: ignore[return-value]

    def _device_blob(self, images: Sequence[np.ndarray], padded: tuple[int, int]) -> Any:
        """The ONNX Runtime detector's blob (float32 [n, 3, H, W] BGR 0-255, zero-padded at the
        bottom and right to ``padded``), built on the device from the uint8 frames."""
        import torch

        ph, pw = padded
        batch = np.zeros((len(images), ph, pw, 3), dtype=np.uint8)
        for i, image in enumerate(images):
            batch[i, :image.shape[0], :image.shape[1]] = image
        frames = torch.from_numpy(batch).to(self.device)
        return frames.permute(0, 3, 1, 2).to(torch.float32).contiguous()

    def _run(self, blob: Any) -> dict[str, Any]:
        """The network's outputs by name (the engine's are views, read before the next call)."""
        import torch

        if self.runtime == "tensorrt":
            return self._net(blob)
        with torch.inference_mode():
            return dict(zip(self._outputs, self._net(blob)))

    def close(self) -> None:
        if self.runtime == "tensorrt" and self._net is not None:
            self._net.close()
        self._net = None

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
        # One copy to the host per frame (boxes, score, landmarks side by side), not three.
        kept = torch.cat([boxes, scores[:, None], landmarks.reshape(-1, 10)], dim=1).cpu().numpy()
        return Detections(kept[:, :4], kept[:, 4], kept[:, 5:].reshape(-1, 5, 2), len(kept))


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
