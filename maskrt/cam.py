"""Class activation map (CAM) overlays: the fused kernels and their NumPy/OpenCV reference.

Both functions implement DESIGN.md "CAM and overlay: the exact arithmetic" on a batch:

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

import math
from types import ModuleType
from typing import TYPE_CHECKING, Any, Sequence, Union

import numpy as np

if TYPE_CHECKING:
    import torch

    ArrayLike = Union[np.ndarray, torch.Tensor]
else:
    ArrayLike = Any

#: Shape of one image's features: ResNet-18 layer4 at a 224x224 input.
FEATURE_SHAPE = (512, 7, 7)
_FEATURE_DTYPES = ("float32", "float16")
_CLASS_DTYPES = ("int64", "int32")
_NORM_EPS = 1e-7

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


# ---- validation (shared by both functions, for NumPy arrays and torch tensors alike) ----------

def _is_tensor(x: object) -> bool:
    return type(x).__module__.startswith("torch") and hasattr(x, "data_ptr")


def _dtype_name(x: ArrayLike) -> str:
    return str(x.dtype).removeprefix("torch.")


def _shape(x: ArrayLike) -> list[int]:
    return list(x.shape)


def _is_contiguous(x: ArrayLike) -> bool:
    return bool(x.is_contiguous()) if _is_tensor(x) else bool(x.flags.c_contiguous)


def _require_array(name: str, x: object) -> None:
    if not (isinstance(x, np.ndarray) or _is_tensor(x)):
        raise TypeError(f"{name}: expected a numpy.ndarray or torch.Tensor, got {type(x).__name__}")


def _check_array(name: str, x: ArrayLike, dtypes: Sequence[str], rank: int, layout: str) -> None:
    if _dtype_name(x) not in dtypes:
        raise ValueError(f"{name}: expected dtype {' or '.join(dtypes)}, got {_dtype_name(x)}")
    if x.ndim != rank:
        raise ValueError(f"{name}: expected {rank} dimensions {layout}, got {x.ndim} (shape {_shape(x)})")
    if not _is_contiguous(x):
        strides = x.stride() if _is_tensor(x) else x.strides
        raise ValueError(f"{name}: expected a C-contiguous array {layout}, got strides {tuple(strides)} "
                         f"for shape {_shape(x)} (use np.ascontiguousarray / .contiguous())")


def _check_alpha(alpha: float) -> float:
    try:
        value = float(alpha)
    except (TypeError, ValueError):
        raise ValueError(f"alpha: expected a number in [0, 1], got {alpha!r}") from None
    if math.isnan(value) or not 0.0 <= value <= 1.0:
        raise ValueError(f"alpha: expected a number in [0, 1], got {value}")
    return value


def _as_classes(classes: object) -> ArrayLike:
    """Lists and tuples of ints become int64 arrays; arrays and tensors pass through."""
    if isinstance(classes, np.ndarray) or _is_tensor(classes):
        return classes
    if isinstance(classes, (list, tuple)):
        return np.asarray(classes, dtype=np.int64).reshape(-1)
    raise TypeError(f"classes: expected an int array, tensor or list of ints, got {type(classes).__name__}")


def _validate(features: ArrayLike, weights: ArrayLike, classes: ArrayLike, images: ArrayLike) -> None:
    """Shapes, dtypes and layouts of DESIGN.md; raises ValueError naming expected and got."""
    for name, x in (("features", features), ("weights", weights), ("images", images)):
        _require_array(name, x)
    _check_array("features", features, _FEATURE_DTYPES, 4, "[N, 512, 7, 7]")
    if tuple(features.shape[1:]) != FEATURE_SHAPE:
        raise ValueError(f"features: expected shape [N, 512, 7, 7], got {_shape(features)}")
    _check_array("weights", weights, ("float32",), 2, "[C, 512]")
    if weights.shape[1] != FEATURE_SHAPE[0] or weights.shape[0] < 1:
        raise ValueError(f"weights: expected shape [C, 512] with C >= 1, got {_shape(weights)}")
    _check_array("images", images, ("uint8",), 4, "[N, H, W, 3]")
    if images.shape[3] != 3:
        raise ValueError(f"images: expected 3 channels (shape [N, H, W, 3]), got {images.shape[3]} "
                         f"(shape {_shape(images)})")
    _check_array("classes", classes, _CLASS_DTYPES, 1, "[N]")
    n = features.shape[0]
    if images.shape[0] != n or classes.shape[0] != n:
        raise ValueError(f"batch mismatch: expected the same N for features, classes and images, got "
                         f"features {_shape(features)}, classes {_shape(classes)}, images {_shape(images)}")


def _check_class_range(lo: int, hi: int, num_classes: int) -> None:
    if lo < 0 or hi >= num_classes:
        raise ValueError(f"classes: expected indices in [0, {num_classes}), got values in [{lo}, {hi}]")


def _check_class_range_host(classes: np.ndarray, num_classes: int) -> None:
    if classes.size:
        _check_class_range(int(classes.min()), int(classes.max()), num_classes)


# ---- the kernels ---------------------------------------------------------------------------------

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
    alpha = _check_alpha(alpha)
    classes = _as_classes(classes)
    tensors = [x for x in (features, weights, classes, images) if _is_tensor(x)]
    if tensors and _on_cuda(features, weights, classes, images):
        return _cam_overlay_cuda(features, weights, classes, images, alpha, bool(rgb), heatmaps, check_classes)
    features, weights, classes, images = (_to_numpy(x) for x in (features, weights, classes, images))
    _validate(features, weights, classes, images)
    _check_class_range_host(classes, weights.shape[0])
    n, h, w = images.shape[:3]
    overlays = np.empty((n, h, w, 3), dtype=np.uint8)
    heat = np.empty((n, h, w), dtype=np.float32) if heatmaps else None
    if overlays.size:
        _extension().cam_overlay_cpu(features, weights, classes.astype(np.int64, copy=False), images, overlays,
                                     heat, alpha=alpha, rgb=bool(rgb))
    return (overlays, heat) if heatmaps else overlays


def _to_numpy(x: object) -> Any:
    """CPU tensor -> NumPy view (no copy); anything else unchanged."""
    return x.detach().numpy() if _is_tensor(x) else x


def _device_name(x: object) -> str:
    return str(x.device) if _is_tensor(x) else "cpu (numpy)"


def _on_cuda(*xs: object) -> bool:
    """True when the inputs live on one CUDA device, False when all are on the CPU."""
    devices = [_device_name(x) for x in xs]
    if not any(d.startswith("cuda") for d in devices):
        return False
    if len(set(devices)) != 1:
        named = ", ".join(f"{k} on {d}" for k, d in zip(("features", "weights", "classes", "images"), devices))
        raise ValueError(f"expected features, weights, classes and images on one device, got {named}")
    return True


def _cam_overlay_cuda(features: Any, weights: Any, classes: Any, images: Any, alpha: float, rgb: bool,
                      heatmaps: bool, check_classes: bool) -> CamResult:
    import torch

    _validate(features, weights, classes, images)
    ext = _extension()
    device = features.device
    n, h, w = images.shape[:3]
    overlays = torch.empty((n, h, w, 3), dtype=torch.uint8, device=device)
    heat = torch.empty((n, h, w), dtype=torch.float32, device=device) if heatmaps else None
    if overlays.numel():
        if check_classes:
            lo, hi = (int(v) for v in torch.aminmax(classes))  # waits for `classes` on the stream
            _check_class_range(lo, hi, weights.shape[0])
        with torch.cuda.device(device):
            stream = torch.cuda.current_stream(device)
            ext.cam_overlay_cuda(
                features.data_ptr(), features.dtype == torch.float16, weights.data_ptr(), weights.shape[0],
                classes.data_ptr(), classes.dtype == torch.int32, images.data_ptr(), overlays.data_ptr(),
                heat.data_ptr() if heat is not None else 0, n, h, w, alpha, rgb, stream.cuda_stream)
    return (overlays, heat) if heatmaps else overlays


# ---- the reference ---------------------------------------------------------------------------------

def cam_reference(features: ArrayLike, weights: ArrayLike, classes: ArrayLike | Sequence[int], images: ArrayLike,
                  *, alpha: float = 0.5, rgb: bool = False, heatmaps: bool = False) -> CamResult:
    """The 7 steps of DESIGN.md in plain NumPy + OpenCV, one image at a time (the test oracle).

    Same arguments and validation as :func:`cam_overlay`; tensors are copied to the CPU and the
    results are always NumPy arrays.
    """
    import cv2

    alpha = _check_alpha(alpha)
    features, weights, classes, images = (
        x.detach().cpu().numpy() if _is_tensor(x) else x for x in (features, weights, _as_classes(classes), images))
    _validate(features, weights, classes, images)
    _check_class_range_host(classes, weights.shape[0])
    n, h, w = images.shape[:3]
    overlays = np.empty((n, h, w, 3), dtype=np.uint8)
    heat_maps = np.empty((n, h, w), dtype=np.float32)
    for i in range(n if h and w else 0):
        heat = _reference_heat(features[i], weights[int(classes[i])], h, w)
        colour = cv2.applyColorMap(_heat_levels(heat), cv2.COLORMAP_JET)  # BGR
        if rgb:
            colour = colour[..., ::-1]
        blend = alpha * images[i].astype(np.float32) + (1.0 - alpha) * colour.astype(np.float32)
        overlays[i] = np.floor(blend + 0.5).astype(np.uint8)  # round half up
        heat_maps[i] = heat
    return (overlays, heat_maps) if heatmaps else overlays


def _reference_heat(features: np.ndarray, class_weights: np.ndarray, h: int, w: int) -> np.ndarray:
    """Steps 1-5 for one image: float32 heat map [h, w] in [0, 1]."""
    import cv2

    f = features.astype(np.float32).reshape(FEATURE_SHAPE[0], -1)
    cam = (class_weights.astype(np.float32) @ f).reshape(FEATURE_SHAPE[1:])
    cam = np.maximum(cam, 0)
    cam = (cam - cam.min()) / (cam.max() - cam.min() + np.float32(_NORM_EPS))
    resized = cv2.resize(cam, (w, h), interpolation=cv2.INTER_LINEAR)
    return (resized - resized.min()) / (resized.max() - resized.min() + np.float32(_NORM_EPS))


def _heat_levels(heat: np.ndarray) -> np.ndarray:
    """Step 6's index: floor(255 * heat), clamped to [0, 255], as uint8."""
    return np.clip(np.floor(heat * np.float32(255)), 0, 255).astype(np.uint8)
