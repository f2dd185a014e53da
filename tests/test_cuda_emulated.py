"""The CUDA kernels' own code, run on the CPU through tests/cuda_emulation (no GPU needed), held
to the C++ kernel bit for bit: every vector path (16, 4 and 1 pixels per item), both feature
types, misaligned buffers, out-of-range classes, the workspace contract, and the box kernel.
Guards around every output buffer catch writes outside it."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest

from maskrt import _C
from tests.test_cam import random_inputs

emulator = pytest.importorskip("tests.cuda_emulator")


@pytest.fixture(scope="module")
def emulated():
    try:
        emulator.library()
    except emulator.EmulationUnavailable as err:
        pytest.skip(f"CUDA emulation unavailable: {err}")
    return emulator


def cpu_overlay(features, weights, classes, images, alpha=0.5, rgb=False):
    overlays = np.empty_like(images)
    heat = np.empty(images.shape[:3], np.float32)
    _C.cam_overlay_cpu(features, weights, classes, images, overlays, heat, alpha=alpha, rgb=rgb)
    return overlays, heat


# (h, w): 16-pixel items (w % 16 == 0), 4-pixel items (w % 4 == 0), single pixels (odd widths).
SIZES = [(224, 224), (96, 160), (3, 500), (37, 53), (7, 7), (1, 1)]


@pytest.mark.parametrize("dtype", [np.float32, np.float16], ids=["fp32", "fp16"])
@pytest.mark.parametrize("size", SIZES, ids=[f"{h}x{w}" for h, w in SIZES])
def test_emulated_cuda_kernel_equals_cpu_kernel(emulated, size, dtype) -> None:
    h, w = size
    rng = np.random.default_rng(h * 1000 + w)
    features, weights, labels, images = random_inputs(rng, 3, h, w, dtype, classes=3)
    for alpha, rgb in ((0.5, False), (0.2, True)):
        want_overlays, want_heat = cpu_overlay(features, weights, labels, images, alpha, rgb)
        overlays, heat, launches, intact = emulated.cam_overlay(features, weights, labels, images, alpha=alpha,
                                                                rgb=rgb, heatmaps=True)
        assert launches == 2 and intact
        np.testing.assert_array_equal(heat, want_heat)
        np.testing.assert_array_equal(overlays, want_overlays)
        overlays_only, none, _, intact = emulated.cam_overlay(features, weights, labels, images, alpha=alpha, rgb=rgb)
        assert none is None and intact
        np.testing.assert_array_equal(overlays_only, want_overlays)


def test_emulated_cuda_kernel_on_real_faces(emulated) -> None:
    """The shipped graph's features of the packaged sample faces (real activations, both classes)."""
    import onnxruntime as ort

    import maskrt

    package = Path(maskrt.__file__).parent
    images = np.stack([cv2.resize(cv2.imread(str(p)), (224, 224)) for p in sorted((package / "samples").glob("*.jpg"))])
    session = ort.InferenceSession(str(package / "models" / "maskrt_resnet18.onnx"), providers=["CPUExecutionProvider"])
    logits, features = session.run(["logits", "features"], {"images": images})
    from maskrt.cam.weights import CamWeights

    weights = CamWeights.from_onnx(package / "models" / "maskrt_resnet18.onnx").host
    classes = logits.argmax(1).astype(np.int64)
    for feats in (features, features.astype(np.float16)):
        want_overlays, want_heat = cpu_overlay(feats, weights, classes, images)
        overlays, heat, _, intact = emulated.cam_overlay(feats, weights, classes, images, heatmaps=True)
        assert intact
        np.testing.assert_array_equal(heat, want_heat)
        np.testing.assert_array_equal(overlays, want_overlays)


def test_emulated_cuda_misaligned_buffers_and_int32_classes(emulated) -> None:
    """Images one byte off (single-pixel path), features one element off (element-wise staging)."""
    features, weights, labels, images = random_inputs(np.random.default_rng(5), 2, 64, 96, np.float16)
    want_overlays, want_heat = cpu_overlay(features, weights, labels, images)
    _, shifted = emulated.guarded(features.shape, np.float16, offset_bytes=2)
    shifted[...] = features
    overlays, heat, _, intact = emulated.cam_overlay(shifted, weights, labels.astype(np.int32), images,
                                                     heatmaps=True, image_offset=1)
    assert intact
    np.testing.assert_array_equal(heat, want_heat)
    np.testing.assert_array_equal(overlays, want_overlays)


def test_emulated_cuda_out_of_range_class_and_workspace(emulated) -> None:
    features, weights, labels, images = random_inputs(np.random.default_rng(6), 2, 32, 48)
    classes = np.array([1, 7], np.int64)  # 7: out of range, unchecked
    overlays, heat, _, intact = emulated.cam_overlay(features, weights, classes, images, heatmaps=True)
    assert intact and np.isnan(heat[1]).all() and np.array_equal(overlays[1], images[1])
    want_overlays, want_heat = cpu_overlay(features[:1], weights, classes[:1], images[:1])
    np.testing.assert_array_equal(overlays[:1], want_overlays)
    np.testing.assert_array_equal(heat[:1], want_heat)
    need = _C.cam_overlay_workspace_bytes(2, 32, 48)
    with pytest.raises(ValueError, match=rf"workspace: expected .* at least {need} bytes"):
        emulated.cam_overlay(features, weights, labels, images, workspace_bytes=need - 1)


def test_emulated_cuda_box_kernel_equals_cpu_kernel(emulated) -> None:
    """The box kernel through the same emulation: overlapping boxes, a box covering a frame."""
    rng = np.random.default_rng(12)
    features, weights, _, frames = random_inputs(rng, 4, 60, 80, np.float16)
    frames = frames[:2]
    classes = np.array([0, 1, 1, 0], np.int64)
    frame_index = np.array([0, 0, 1, 0], np.int64)
    boxes = np.array([[5, 5, 40, 50], [20, 10, 70, 59], [0, 0, 80, 60], [30, 30, 33, 35]], np.int64)
    want = np.empty_like(frames)
    _C.cam_overlay_boxes_cpu(features, weights, classes, frame_index, boxes, frames, want)
    got, intact = emulated.cam_overlay_boxes(features, weights, classes, frame_index, boxes, frames)
    assert intact
    np.testing.assert_array_equal(got, want)
