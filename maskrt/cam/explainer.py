"""Overlays and heat maps for a batch of frames, drawn where the features are.

Features on the host (ONNX Runtime, torch CPU) go to the C++ kernel. Features a GPU backend left
on its device go to the CUDA kernel in place; frames that are host arrays are uploaded once per
batch, and only what the caller asked for comes back (overlays as uint8; heat maps only when
wanted), so the streaming path never copies features to the host.
"""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np

from maskrt.cam.kernel import cam_overlay, cam_overlay_boxes
from maskrt.cam.weights import CamWeights
from maskrt.devices import is_cuda


class Explainer:
    """Draws the CAM of ``classes[i]`` from ``features[i]`` over ``frames[i]`` for a batch.

    weights: the graph's :class:`CamWeights`. alpha: blend weight of the image.
    """

    def __init__(self, weights: CamWeights, alpha: float = 0.5) -> None:
        if not 0.0 <= alpha <= 1.0:
            raise ValueError(f"alpha: expected a value in [0, 1], got {alpha}")
        self.weights = weights
        self.alpha = alpha

    def draw(self, features: Any, classes: np.ndarray, frames: Sequence[Any], *,
             heatmaps: bool = True) -> tuple[list[Any], list[Any] | None]:
        """(overlays, heat maps or None), one per frame, each at its frame's own size.

        The kernels take one image size per call, so frames are grouped by size (one group in
        the usual case, which needs no gather of the features).
        """
        if len(frames) != len(classes):
            raise ValueError(f"frames: expected {len(classes)} frames (one per class index), got "
                             f"{len(frames)}")
        overlays: list[Any] = [None] * len(frames)
        heat: list[Any] | None = [None] * len(frames) if heatmaps else None
        for indices in _by_size(frames).values():
            draw = self._on_device if is_cuda(features) else self._on_host
            group_overlays, group_heat = draw(features, classes, frames, indices, heatmaps)
            for slot, i in enumerate(indices):
                overlays[i] = group_overlays[slot]
                if heat is not None:
                    heat[i] = group_heat[slot]
        return overlays, heat

    def _on_host(self, features: Any, classes: np.ndarray, frames: Sequence[Any],
                 indices: list[int], heatmaps: bool) -> tuple[Any, Any]:
        whole = len(indices) == len(frames)
        out = cam_overlay(np.ascontiguousarray(features if whole else features[indices]),
                          self.weights.host, classes if whole else classes[indices],
                          np.stack([frames[i] for i in indices]), alpha=self.alpha,
                          heatmaps=heatmaps)
        return out if heatmaps else (out, None)

    def _on_device(self, features: Any, classes: np.ndarray, frames: Sequence[Any],
                   indices: list[int], heatmaps: bool) -> tuple[Any, Any]:
        """CUDA features, read in place. CUDA frames stay on the device and so do their
        overlays; host frames go up once and their overlays come back as NumPy (the copy back
        waits for the kernel: the one synchronisation, because the caller wants host arrays)."""
        import torch

        device = features.device
        group = [frames[i] for i in indices]
        frames_on_device = is_cuda(group[0])
        images = (torch.stack(group) if frames_on_device
                  else torch.from_numpy(np.stack(group)).to(device, non_blocking=True))
        rows = torch.as_tensor(indices, device=device)
        out = cam_overlay(features.index_select(0, rows).contiguous(), self.weights.on(device),
                          torch.as_tensor(np.asarray(classes)[indices], device=device),
                          images.contiguous(), alpha=self.alpha, heatmaps=heatmaps)
        overlays, heat = out if heatmaps else (out, None)
        if frames_on_device:
            return overlays, heat
        return overlays.cpu().numpy(), (heat.cpu().numpy() if heat is not None else None)


    def draw_into_frames(self, features: Any, classes: np.ndarray, owners: Sequence[int],
                         boxes: Sequence[Sequence[int]], frames: Sequence[np.ndarray]) -> list[np.ndarray]:
        """The frames (host uint8 BGR, any sizes) with the CAM of each region drawn into its
        box: ``features[i]`` of region i, which is in ``frames[owners[i]]`` at ``boxes[i]``.
        One kernel call per frame size (:func:`cam_overlay_boxes`), on the features' device;
        only the finished frames come back to the host. The kernel writes new frames, so the
        inputs are not copied here: a frame without any region comes back as it was given."""
        out: list[np.ndarray] = list(frames)
        owners = np.asarray(owners, dtype=np.int64)
        for frame_ids in _by_size(frames).values():
            regions = np.nonzero(np.isin(owners, frame_ids))[0]
            if regions.size == 0:
                continue
            slot = {frame: k for k, frame in enumerate(frame_ids)}
            drawn = self._boxes_kernel(features, np.asarray(classes)[regions],
                                       np.array([slot[o] for o in owners[regions]], np.int64),
                                       np.asarray(boxes, np.int64)[regions], regions,
                                       np.stack([frames[i] for i in frame_ids]))
            for k, frame in enumerate(frame_ids):
                out[frame] = drawn[k]
        return out

    def _boxes_kernel(self, features: Any, classes: np.ndarray, frame_index: np.ndarray,
                      boxes: np.ndarray, regions: np.ndarray, frames: np.ndarray) -> np.ndarray:
        if is_cuda(features):
            import torch

            device = features.device
            rows = torch.as_tensor(regions, device=device)
            drawn = cam_overlay_boxes(
                features.index_select(0, rows).contiguous(), self.weights.on(device),
                torch.as_tensor(classes, device=device), torch.as_tensor(frame_index, device=device),
                torch.as_tensor(boxes, device=device), torch.from_numpy(frames).to(device),
                alpha=self.alpha)
            return drawn.cpu().numpy()  # the one synchronisation: frames go to the sinks
        host = features if len(regions) == len(features) else features[regions]
        return cam_overlay_boxes(np.ascontiguousarray(host), self.weights.host, classes,
                                 frame_index, boxes, frames, alpha=self.alpha)


def _by_size(frames: Sequence[Any]) -> dict[tuple[int, int], list[int]]:
    groups: dict[tuple[int, int], list[int]] = {}
    for i, frame in enumerate(frames):
        groups.setdefault(tuple(frame.shape[:2]), []).append(i)
    return groups
