"""What the compiled extension says about itself (has_cuda, cuda_device_count) and how a build
without CUDA answers a CUDA call."""

from __future__ import annotations

import os

import pytest

_C = pytest.importorskip("maskrt._C", reason="maskrt._C is not built (pip install -e . --no-build-isolation)")


def test_has_cuda_is_a_bool_consistent_with_the_build_request() -> None:
    compiled = _C.has_cuda()
    assert isinstance(compiled, bool)
    requested = os.environ.get("MASKRT_CUDA", "").strip().lower()
    if requested == "off":
        assert not compiled, "MASKRT_CUDA=off in the environment, but the CUDA kernels are compiled in"
    if requested == "on":
        assert compiled, "MASKRT_CUDA=on in the environment, but the CUDA kernels are missing"


def test_cuda_device_count_never_raises() -> None:
    count = _C.cuda_device_count()
    assert isinstance(count, int) and count >= 0
    if not _C.has_cuda():
        assert count == 0


def test_num_threads_and_jet_table() -> None:
    assert _C.num_threads() >= 1
    assert tuple(_C.jet_colormap().shape) == (256, 3)


def _launch_args(pointer: int) -> dict[str, object]:
    """Keyword arguments of one cam_overlay_cuda call (the binding is keyword-only), every device
    pointer ``pointer``: 0 never reaches the device; 1 is a bogus address it must not launch on."""
    return {"features": pointer, "features_fp16": False, "weights": pointer, "num_classes": 2,
            "classes": pointer, "classes_int32": False, "images": pointer, "overlays": pointer,
            "heatmaps": 0, "n": 1, "height": 8, "width": 8, "alpha": 0.5, "rgb": False,
            "workspace": pointer, "workspace_bytes": _C.cam_overlay_workspace_bytes(1, 8, 8), "stream": 0}


def test_cuda_binding_is_keyword_only() -> None:
    with pytest.raises(TypeError, match="incompatible function arguments"):
        _C.cam_overlay_cuda(0, False, 0, 2, 0, False, 0, 0, 0, 1, 8, 8, 0.5, False, 0, 0, 0)


def test_workspace_bytes_cover_every_part() -> None:
    """Colour table, y table, per-image normalisation and 7 resized rows, each 256-byte aligned."""
    def part(nbytes: int) -> int:
        return (nbytes + 255) // 256 * 256

    for n, h, w in ((1, 8, 8), (256, 224, 224), (3, 1080, 1920)):
        want = part(256 * 16) + part(h * 16) + part(n * 8) + part(n * 7 * w * 4)
        assert _C.cam_overlay_workspace_bytes(n, h, w) == want


def test_cuda_call_without_cuda_build_is_a_clear_error() -> None:
    if _C.has_cuda():
        pytest.skip("this build has the CUDA kernels")
    with pytest.raises(RuntimeError, match=r"built without CUDA \(MASKRT_CUDA=off or no nvcc\)"):
        _C.cam_overlay_cuda(**_launch_args(0))


def test_cuda_build_without_device_raises_instead_of_launching() -> None:
    if not _C.has_cuda() or _C.cuda_device_count() > 0:
        pytest.skip("needs a CUDA-enabled build on a machine without a usable GPU")
    with pytest.raises(RuntimeError, match=r"CUDA error at .*cam_overlay\.cu:\d+: cudaGetDevice"):
        _C.cam_overlay_cuda(**_launch_args(1))


def _boxes_launch_args(pointer: int) -> dict[str, object]:
    """Keyword arguments of one cam_overlay_boxes_cuda call, every device pointer ``pointer``."""
    return {"features": pointer, "features_fp16": False, "weights": pointer, "num_classes": 2,
            "classes": pointer, "classes_int32": False, "frame_index": pointer, "frame_index_int32": False,
            "boxes": pointer, "boxes_int32": False, "faces": 1, "frames": pointer, "overlays": pointer,
            "n": 1, "height": 8, "width": 8, "alpha": 0.5, "rgb": False, "stream": 0}


def test_cuda_boxes_binding_is_keyword_only() -> None:
    with pytest.raises(TypeError, match="incompatible function arguments"):
        _C.cam_overlay_boxes_cuda(*_boxes_launch_args(0).values())


def test_cuda_boxes_call_without_cuda_build_is_a_clear_error() -> None:
    if _C.has_cuda():
        pytest.skip("this build has the CUDA kernels")
    with pytest.raises(RuntimeError, match=r"built without CUDA \(MASKRT_CUDA=off or no nvcc\)"):
        _C.cam_overlay_boxes_cuda(**_boxes_launch_args(0))


def test_cuda_boxes_build_without_device_raises_instead_of_launching() -> None:
    if not _C.has_cuda() or _C.cuda_device_count() > 0:
        pytest.skip("needs a CUDA-enabled build on a machine without a usable GPU")
    with pytest.raises(RuntimeError, match=r"CUDA error at .*cam_overlay_boxes\.cu:\d+: cudaGetDevice"):
        _C.cam_overlay_boxes_cuda(**_boxes_launch_args(1))
