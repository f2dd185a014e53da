"""Class activation map (CAM) overlays: the fused kernels and their NumPy/OpenCV reference.

Both functions implement ARCHITECTURE.md "CAM and overlay: the exact arithmetic" on a batch:

* ``features``: float32 or float16 ``[N, 512, 7, 7]`` (ResNet-18 ``layer4`` output), C-contiguous;
* ``weights``: float32 ``[C, 512]`` (the classifier's ``fc.weight``), C-contiguous;
* ``classes``: int64 or int32 ``[N]``, the class whose map to draw for each image, in ``[0, C)``;
* ``images``: uint8 ``[N, H, W, 3]``, C-contiguous, the frames to draw on (any ``H x W``);

and return ``overlays`` uint8 ``[N, H, W, 3]`` (plus ``heatmaps`` float32 ``[N, H, W]`` in
``[0, 1]`` when ``heatmaps=True``). ``alpha`` weighs the image: ``out = round(alpha * image +
(1 - alpha) * jet(heat))``; ``rgb=True`` writes the colour map in RGB order (for RGB images),
otherwise BGR (OpenCV's order).

:func:`cam_overlay` dispatches to the compiled kernels in :mod:`maskrt._C`: NumPy arrays and torch
CPU tensors go to the C++ kernel (no copies), torch CUDA tensors to the CUDA kernel (outputs are
torch CUDA tensors, the launch is asynchronous on ``torch.cuda.current_stream()``).
:func:`cam_reference` is the plain NumPy + OpenCV oracle the tests hold the kernels to.
"""

from __future__ import annotations

from types import ModuleType
from typing import Any, Sequence, Union

import numpy as np

from maskrt.cam.validate import (ArrayLike, as_classes, as_index_array, check_alpha, check_class_range,
                                 check_class_range_host, check_faces_host, validate, validate_boxes)
from maskrt.devices import is_tensor

CamResult = Union[ArrayLike, "tuple[ArrayLike, ArrayLike]"]


def _extension() -> ModuleType:
    try:
        from maskrt import _C
    except ImportError as err:
        raise ImportError(
            "maskrt._C, the compiled CAM kernels, is not built or cannot be loaded "
            f"({err}); build it with `pip install -e . --no-build-isolation` (or `pip install .`) "
            "from the repository root. cam_reference() works without it."
        ) from err
    return _C


def cam_overlay(features: ArrayLike, weights: ArrayLike, classes: ArrayLike | Sequence[int], images: ArrayLike,
                *, alpha: float = 0.5, rgb: bool = False, heatmaps: bool = False,
                check_classes: bool = True) -> CamResult:
    """CAM overlays with the compiled kernels (shapes and dtypes: see the module docstring).

    NumPy arrays or torch CPU tensors run the C++ kernel (multi-threaded, GIL released) and return
    NumPy arrays. torch CUDA tensors (all four on one device) run the CUDA kernel: the outputs are
    new torch CUDA tensors and the launch is queued on ``torch.cuda.current_stream()`` without
    synchronising. On CUDA, ``check_classes=True`` (the default) range-checks ``classes`` on the
    host, which waits for the stream to produce them; with ``check_classes=False`` the call is fully
    asynchronous and an out-of-range class yields a NaN heat map and the unmodified image.

    Returns ``overlays`` uint8 ``[N, H, W, 3]``, or ``(overlays, heatmaps float32 [N, H, W])``.
    Raises ValueError for a wrong dtype, rank, shape, layout, device mix, class index or alpha.
    """
    alpha = check_alpha(alpha)
    classes = as_classes(classes)
    tensors = [x for x in (features, weights, classes, images) if is_tensor(x)]
    if tensors and _on_cuda(_OVERLAY_INPUTS, features, weights, classes, images):
        return _cam_overlay_cuda(features, weights, classes, images, alpha, bool(rgb), heatmaps, check_classes)
    features, weights, classes, images = (_to_numpy(x) for x in (features, weights, classes, images))
    validate(features, weights, classes, images)
    check_class_range_host(classes, weights.shape[0])
    n, h, w = images.shape[:3]
    overlays = np.empty((n, h, w, 3), dtype=np.uint8)
    heat = np.empty((n, h, w), dtype=np.float32) if heatmaps else None
    if overlays.size:
        _extension().cam_overlay_cpu(features, weights, classes.astype(np.int64, copy=False), images, overlays,
                                     heat, alpha=alpha, rgb=bool(rgb))
    return (overlays, heat) if heatmaps else overlays


def _to_numpy(x: object) -> Any:
    """CPU tensor -> NumPy view (no copy); anything else unchanged."""
    return x.detach().numpy() if is_tensor(x) else x


def _device_name(x: object) -> str:
    return str(x.device) if is_tensor(x) else "cpu (numpy)"


_OVERLAY_INPUTS = ("features", "weights", "classes", "images")
_BOXES_INPUTS = ("features", "weights", "classes", "frame_index", "boxes", "frames")


def _on_cuda(names: Sequence[str], *xs: object) -> bool:
    """True when the inputs (called ``names``) live on one CUDA device, False when all are on the CPU."""
    devices = [_device_name(x) for x in xs]
    if not any(d.startswith("cuda") for d in devices):
        return False
    if len(set(devices)) != 1:
        named = ", ".join(f"{k} on {d}" for k, d in zip(names, devices))
        raise ValueError(f"expected {', '.join(names[:-1])} and {names[-1]} on one device, got {named}")
    return True


def _cam_overlay_cuda(features: Any, weights: Any, classes: Any, images: Any, alpha: float, rgb: bool,
                      heatmaps: bool, check_classes: bool) -> CamResult:
    import torch

    validate(features, weights, classes, images)
    ext = _extension()
    device = features.device
    n, h, w = images.shape[:3]
    overlays = torch.empty((n, h, w, 3), dtype=torch.uint8, device=device)
    heat = torch.empty((n, h, w), dtype=torch.float32, device=device) if heatmaps else None
    # Scratch from torch's caching allocator: stream-ordered on the current stream, reused by the
    # next call instead of a cudaMalloc per batch.
    workspace = torch.empty(ext.cam_overlay_workspace_bytes(n, h, w), dtype=torch.uint8, device=device)
    if overlays.numel():
        if check_classes:
            lo, hi = (int(v) for v in torch.aminmax(classes))  # waits for `classes` on the stream
            check_class_range(lo, hi, weights.shape[0])
        with torch.cuda.device(device):
            stream = torch.cuda.current_stream(device)
            ext.cam_overlay_cuda(
                features=features.data_ptr(), features_fp16=features.dtype == torch.float16,
                weights=weights.data_ptr(), num_classes=weights.shape[0],
                classes=classes.data_ptr(), classes_int32=classes.dtype == torch.int32,
                images=images.data_ptr(), overlays=overlays.data_ptr(),
                heatmaps=heat.data_ptr() if heat is not None else 0, n=n, height=h, width=w,
                alpha=alpha, rgb=rgb, workspace=workspace.data_ptr(), workspace_bytes=workspace.numel(),
                stream=stream.cuda_stream)
    return (overlays, heat) if heatmaps else overlays


def cam_overlay_boxes(features: ArrayLike, weights: ArrayLike, classes: ArrayLike | Sequence[int],
                      frame_index: ArrayLike | Sequence[int], boxes: ArrayLike | Sequence[Sequence[int]],
                      frames: ArrayLike, *, alpha: float = 0.5, rgb: bool = False,
                      check_classes: bool = True) -> ArrayLike:
    """The CAM of every face drawn into its box of the full-size frames, in one call.

    ``features`` float32|float16 ``[R, 512, 7, 7]`` (one face crop each), ``weights`` float32
    ``[C, 512]``, ``classes`` int64|int32 ``[R]`` (the class whose CAM to draw), ``frame_index``
    int64|int32 ``[R]`` (the frame each face is in, in ``[0, N)``), ``boxes`` int64|int32 ``[R, 4]``
    (``x0, y0, x1, y1`` in frame pixels, end-exclusive, with ``0 <= x0 < x1 <= W`` and
    ``0 <= y0 < y1 <= H``), ``frames`` uint8 ``[N, H, W, 3]``, C-contiguous.

    Returns a new uint8 ``[N, H, W, 3]``: a copy of ``frames`` in which each box is blended with
    the JET colours of its face's CAM, computed as in ARCHITECTURE.md with H x W = the box's size
    (a box covering the frame gives :func:`cam_overlay`'s bytes). Where boxes of one frame
    overlap, the face with the highest index wins; pixels outside every box are copied unchanged.

    Dispatch as :func:`cam_overlay`: NumPy arrays or torch CPU tensors run the C++ kernel, torch
    CUDA tensors (all six on one device) the CUDA kernel, asynchronously on
    ``torch.cuda.current_stream()``. On CUDA, ``check_classes=True`` range-checks ``classes``,
    ``frame_index`` and ``boxes`` on the host (one small copy that waits for the stream); with
    ``check_classes=False`` the call is fully asynchronous and a face out of range is not drawn.
    Raises ValueError for a wrong dtype, rank, shape, layout, device mix, index, box or alpha.
    """
    alpha = check_alpha(alpha)
    faces = (features, weights, as_classes(classes), as_index_array("frame_index", frame_index),
             as_index_array("boxes", boxes, columns=4), frames)
    if any(is_tensor(x) for x in faces) and _on_cuda(_BOXES_INPUTS, *faces):
        return _cam_overlay_boxes_cuda(*faces, alpha=alpha, rgb=bool(rgb), check_classes=check_classes)
    features, weights, classes, frame_index, boxes, frames = (_to_numpy(x) for x in faces)
    validate_boxes(features, weights, classes, frame_index, boxes, frames)
    check_faces_host(classes, frame_index, boxes, weights.shape[0], frames.shape)
    overlays = np.empty_like(frames)
    if overlays.size:
        _extension().cam_overlay_boxes_cpu(features, weights, classes, frame_index, boxes, frames, overlays,
                                           alpha=alpha, rgb=bool(rgb))
    return overlays


def _check_faces_on_host(classes: Any, frame_index: Any, boxes: Any, num_classes: int, frames_shape: Any) -> None:
    """check_faces_host for CUDA tensors: one device-to-host copy of the R x 6 indices."""
    import torch

    if not classes.shape[0]:
        return
    packed = torch.cat([classes.long()[:, None], frame_index.long()[:, None], boxes.long()], dim=1).cpu().numpy()
    check_faces_host(packed[:, 0], packed[:, 1], packed[:, 2:], num_classes, frames_shape)


def _cam_overlay_boxes_cuda(features: Any, weights: Any, classes: Any, frame_index: Any, boxes: Any, frames: Any,
                            *, alpha: float, rgb: bool, check_classes: bool) -> Any:
    import torch

    validate_boxes(features, weights, classes, frame_index, boxes, frames)
    if check_classes:
        _check_faces_on_host(classes, frame_index, boxes, weights.shape[0], frames.shape)
    overlays = torch.empty_like(frames, memory_format=torch.contiguous_format)
    if not overlays.numel():
        return overlays
    n, h, w = frames.shape[:3]
    with torch.cuda.device(frames.device):
        stream = torch.cuda.current_stream(frames.device)
        _extension().cam_overlay_boxes_cuda(
            features=features.data_ptr(), features_fp16=features.dtype == torch.float16,
            weights=weights.data_ptr(), num_classes=weights.shape[0],
            classes=classes.data_ptr(), classes_int32=classes.dtype == torch.int32,
            frame_index=frame_index.data_ptr(), frame_index_int32=frame_index.dtype == torch.int32,
            boxes=boxes.data_ptr(), boxes_int32=boxes.dtype == torch.int32, faces=features.shape[0],
            frames=frames.data_ptr(), overlays=overlays.data_ptr(), n=n, height=h, width=w,
            alpha=alpha, rgb=rgb, stream=stream.cuda_stream)
    return overlays
