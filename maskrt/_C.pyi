"""Type stub for maskrt._C, the compiled CAM overlay kernels (csrc/bindings.cpp).

Use maskrt.cam.cam_overlay, which validates inputs and allocates outputs; these are the raw entry
points it calls.
"""

import numpy as np
import numpy.typing as npt

def has_cuda() -> bool:
    """Whether the CUDA kernels were compiled into this build."""

def cuda_device_count() -> int:
    """Usable CUDA devices right now; 0 without a driver, a device or CUDA support. Never raises."""

def num_threads() -> int:
    """Threads the CPU kernel uses at most (the CPUs this process may run on)."""

def jet_colormap() -> npt.NDArray[np.uint8]:
    """OpenCV COLORMAP_JET as uint8[256, 3], BGR order."""

def cam_overlay_cpu(
    features: npt.NDArray[np.float32] | npt.NDArray[np.float16],
    weights: npt.NDArray[np.float32],
    classes: npt.NDArray[np.int64],
    images: npt.NDArray[np.uint8],
    overlays: npt.NDArray[np.uint8],
    heatmaps: npt.NDArray[np.float32] | None = None,
    alpha: float = 0.5,
    rgb: bool = False,
    num_threads: int = 0,
) -> None:
    """CPU kernel: features [N,512,7,7], weights [C,512], classes [N], images [N,H,W,3] (all
    C-contiguous); writes overlays [N,H,W,3] and, if given, heatmaps [N,H,W]. Releases the GIL.
    Raises ValueError on inconsistent shapes, dtypes or class indices."""

def cam_overlay_cuda(
    *,
    features: int,
    features_fp16: bool,
    weights: int,
    num_classes: int,
    classes: int,
    classes_int32: bool,
    images: int,
    overlays: int,
    heatmaps: int,
    n: int,
    height: int,
    width: int,
    alpha: float,
    rgb: bool,
    workspace: int,
    workspace_bytes: int,
    stream: int,
) -> None:
    """CUDA kernel on device pointers (integers, heatmaps 0 for none; keyword arguments only): two
    launches on `stream` (a cudaStream_t as an integer), no synchronisation. ``workspace``: a
    16-byte aligned device buffer of at least ``cam_overlay_workspace_bytes(n, height, width)``
    bytes owned by the caller. Raises RuntimeError when built without CUDA or when a CUDA call
    fails, ValueError for a missing or small workspace."""

def cam_overlay_workspace_bytes(n: int, height: int, width: int) -> int:
    """Bytes of device scratch one cam_overlay_cuda call on n images of height x width needs."""

def cam_overlay_boxes_cpu(
    features: npt.NDArray[np.float32] | npt.NDArray[np.float16],
    weights: npt.NDArray[np.float32],
    classes: npt.NDArray[np.int64] | npt.NDArray[np.int32],
    frame_index: npt.NDArray[np.int64] | npt.NDArray[np.int32],
    boxes: npt.NDArray[np.int64] | npt.NDArray[np.int32],
    frames: npt.NDArray[np.uint8],
    overlays: npt.NDArray[np.uint8],
    alpha: float = 0.5,
    rgb: bool = False,
    num_threads: int = 0,
) -> None:
    """CPU box kernel: features [R,512,7,7], weights [C,512], classes [R], frame_index [R], boxes
    [R,4] (x0, y0, x1, y1, end-exclusive), frames [N,H,W,3] (all C-contiguous); writes overlays
    [N,H,W,3]: the frames with each face's CAM blended into its box, the highest face index winning
    where boxes overlap. Releases the GIL. Raises ValueError on inconsistent shapes or dtypes, or a
    class, frame index or box out of range."""

# Its argument list repeats cam_overlay_cuda's on purpose: a stub spells out what the binding
# takes, and the two bindings take the same leading arguments.
def cam_overlay_boxes_cuda(
    *,
    features: int,
    features_fp16: bool,
    weights: int,
    num_classes: int,
    classes: int,
    classes_int32: bool,
    frame_index: int,
    frame_index_int32: bool,
    boxes: int,
    boxes_int32: bool,
    faces: int,
    frames: int,
    overlays: int,
    n: int,
    height: int,
    width: int,
    alpha: float,
    rgb: bool,
    stream: int,
) -> None:
    """CUDA box kernel on device pointers (integers; keyword arguments only): a device-to-device
    copy of the frames and one launch on `stream` (a cudaStream_t as an integer), no
    synchronisation. A face whose class, frame index or box is out of range is not drawn. Raises
    RuntimeError when built without CUDA or when a CUDA call fails."""
