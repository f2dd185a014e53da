"""The embedding API: :class:`Engine` classifies and explains frames the host already has."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any, Iterator, Sequence, Union

import numpy as np

from maskrt.backends import DEFAULT_BACKEND, Backend, create_backend
from maskrt.labels import CLASSES
from maskrt.preprocess import ImageError, decode_image, resize_to_input, to_bgr8

#: What classify/explain accept: one image, a path, or a sequence / uint8[N, H, W, 3] array of them.
Frames = Union[np.ndarray, str, os.PathLike, Sequence[Union[np.ndarray, str, os.PathLike]]]


@dataclass
class Result:
    """The decision for one frame; ``overlay``/``heatmap`` are set by :meth:`Engine.explain`.

    probabilities: float32[2], in :data:`maskrt.labels.CLASSES` order.
    overlay: uint8[H, W, 3] BGR at the frame's own size. heatmap: float32[H, W] in [0, 1].
    """

    label: str
    class_index: int
    probabilities: np.ndarray
    overlay: np.ndarray | None = field(default=None, repr=False)
    heatmap: np.ndarray | None = field(default=None, repr=False)

    @property
    def p_with_mask(self) -> float:
        return float(self.probabilities[0])

    @property
    def p_without_mask(self) -> float:
        return float(self.probabilities[1])


class Engine:
    """Classify face images as with_mask / without_mask and explain each decision with a CAM.

    model: None (the weights shipped with maskrt), a checkpoint path, or a MaskNet.
    backend: "onnxruntime" (default, CPU), "torch" or "tensorrt", or a ready :class:`Backend`.
    max_batch: largest batch sent to the backend at once; alpha: overlay blend weight of the image.
    Extra keyword arguments go to the backend (see :func:`maskrt.backends.create_backend`).
    """

    def __init__(self, model: Any = None, backend: str | Backend = DEFAULT_BACKEND, *,
                 max_batch: int = 64, alpha: float = 0.5, **backend_options: Any) -> None:
        if max_batch < 1:
            raise ValueError(f"max_batch: expected >= 1, got {max_batch}")
        if not 0.0 <= alpha <= 1.0:
            raise ValueError(f"alpha: expected a value in [0, 1], got {alpha}")
        if isinstance(backend, Backend):
            self.backend = backend
        else:
            self.backend = create_backend(backend, model=model, **backend_options)
        self.max_batch = max_batch
        self.alpha = alpha

    def classify(self, frames: Frames) -> Result | list[Result]:
        """frames: one BGR uint8 image [H, W, 3] (or a path) -> Result; a list or
        uint8[N, H, W, 3] array of them -> list[Result]. Any size; gray/BGRA are converted."""
        images, single = _as_image_list(frames)
        results = []
        for _, chunk in self._chunks(images):
            results.extend(self.results_from(self.infer(chunk)[0]))
        return results[0] if single else results

    def explain(self, frames: Frames, *, classes: Sequence[int] | None = None) -> Result | list[Result]:
        """Like :meth:`classify`, plus the CAM overlay and heat map at each frame's own size.

        classes: explain these class indices instead of the predicted ones (one per frame).
        """
        images, single = _as_image_list(frames)
        if classes is not None and len(classes) != len(images):
            raise ValueError(f"classes: expected {len(images)} class indices, got {len(classes)}")
        results = []
        for start, batch in self._chunks(images):
            chunk = images[start:start + len(batch)]
            chunk_classes = None if classes is None else classes[start:start + len(batch)]
            results.extend(self.results_from(*self.infer(batch), chunk, classes=chunk_classes))
        return results[0] if single else results

    def infer(self, batch: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """batch: uint8[N, 224, 224, 3] BGR -> (logits float32[N, 2], features [N, 512, 7, 7])."""
        return self.backend.infer(batch)

    def results_from(self, logits: np.ndarray, features: np.ndarray | None = None,
                     frames: Sequence[np.ndarray] | None = None, *,
                     classes: Sequence[int] | None = None) -> list[Result]:
        """Turn one :meth:`infer` output into Results; with ``features`` and ``frames`` (the
        uint8[H, W, 3] BGR frames the batch was made from) also draw overlays and heat maps.

        This is the building block for callers that batch and preprocess themselves (the
        streaming pipeline): ``results_from(*engine.infer(batch), frames)``.
        """
        # Logits are tiny ([N, 2]): bring them to the host even when the backend left the
        # features on the GPU, where the overlay kernel reads them in place.
        host_logits = logits.cpu().numpy() if hasattr(logits, "cpu") else np.asarray(logits)
        results = [self._decide(row) for row in host_logits]
        if frames is None:
            return results
        if features is None or len(frames) != len(results):
            raise ValueError(f"frames: expected {len(results)} frames and the features of the "
                             f"batch, got {len(frames)} frames, features={features is not None}")
        targets = (np.asarray(classes, dtype=np.int64) if classes is not None
                   else np.array([r.class_index for r in results], dtype=np.int64))
        self._draw_overlays(results, list(frames), features, targets)
        return results

    def _chunks(self, images: list[np.ndarray]) -> Iterator[tuple[int, np.ndarray]]:
        """(start index, uint8[n, 224, 224, 3] batch) for each run of up to max_batch images."""
        for start in range(0, len(images), self.max_batch):
            chunk = images[start:start + self.max_batch]
            yield start, np.stack([resize_to_input(im) for im in chunk])

    def _draw_overlays(self, results: list[Result], images: list[np.ndarray],
                       features: np.ndarray, targets: np.ndarray) -> None:
        from maskrt.cam import cam_overlay

        weight = self.backend.fc_weight
        # The kernel takes one image size per call: group the frames by size.
        by_size: dict[tuple[int, int], list[int]] = {}
        for i, image in enumerate(images):
            by_size.setdefault(image.shape[:2], []).append(i)
        for indices in by_size.values():
            if type(features).__module__.startswith("torch") and features.is_cuda:
                overlays, heatmaps = _cam_overlay_on_device(features, weight, targets, images,
                                                            indices, self.alpha)
            else:
                # One size for the whole batch (the usual case): no gather copy of the features.
                same_batch = len(indices) == len(images)
                overlays, heatmaps = cam_overlay(
                    np.ascontiguousarray(features if same_batch else features[indices]), weight,
                    targets if same_batch else targets[indices],
                    np.stack([images[i] for i in indices]), alpha=self.alpha, heatmaps=True)
            for slot, i in enumerate(indices):
                results[i].overlay = overlays[slot]
                results[i].heatmap = heatmaps[slot]

    @staticmethod
    def _decide(logits: np.ndarray) -> Result:
        probabilities = softmax(np.asarray(logits, dtype=np.float64)).astype(np.float32)
        index = int(np.argmax(probabilities))
        return Result(label=CLASSES[index], class_index=index, probabilities=probabilities)

    def close(self) -> None:
        self.backend.close()

    def __enter__(self) -> "Engine":
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()


def _cam_overlay_on_device(features: Any, weight: np.ndarray, targets: np.ndarray,
                           images: list[Any], indices: list[int], alpha: float) -> tuple[Any, Any]:
    """CUDA features (left where the backend put them) -> overlays and heat maps of ``indices``.

    Frames that are CUDA tensors stay on the device and so do their overlays; NumPy frames go up
    once and their overlays come back as NumPy (the copy back waits for the kernel).
    """
    import torch

    from maskrt.cam import cam_overlay

    device = features.device
    rows = torch.as_tensor(indices, device=device)
    frames = [images[i] for i in indices]
    on_device = isinstance(frames[0], torch.Tensor) and frames[0].is_cuda
    batch = (torch.stack(frames) if on_device
             else torch.from_numpy(np.stack(frames)).to(device))
    overlays, heatmaps = cam_overlay(
        features.index_select(0, rows).contiguous(), torch.as_tensor(weight, device=device),
        torch.as_tensor(targets[indices], device=device), batch.contiguous(), alpha=alpha,
        heatmaps=True)
    if on_device:
        return overlays, heatmaps
    return overlays.cpu().numpy(), heatmaps.cpu().numpy()  # results go to the host


def softmax(logits: np.ndarray) -> np.ndarray:
    """Numerically stable softmax over the last axis."""
    shifted = logits - logits.max(axis=-1, keepdims=True)
    exp = np.exp(shifted)
    return exp / exp.sum(axis=-1, keepdims=True)


def _as_image_list(frames: Frames) -> tuple[list[np.ndarray], bool]:
    """Normalise the ``frames`` argument to a list of uint8[H, W, 3] BGR images."""
    if isinstance(frames, (str, os.PathLike)):
        return [decode_image(frames)], True
    if isinstance(frames, np.ndarray):
        if frames.ndim == 4:
            return [to_bgr8(f, what=f"frame {i}") for i, f in enumerate(frames)], False
        return [to_bgr8(frames, what="frame")], True
    if not isinstance(frames, Sequence) or isinstance(frames, (bytes, bytearray)):
        raise ImageError(f"frames: expected an image array, a path, or a list of them, got "
                         f"{type(frames).__name__}")
    if len(frames) == 0:
        raise ImageError("frames: expected at least one image, got an empty list")
    images = []
    for i, frame in enumerate(frames):
        if isinstance(frame, (str, os.PathLike)):
            images.append(decode_image(Path(frame)))
        else:
            images.append(to_bgr8(frame, what=f"frame {i}"))
    return images, False
