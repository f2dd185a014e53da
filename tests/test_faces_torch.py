"""YuNet on PyTorch (the GPU path of the face detector), held to the ONNX Runtime detector on real
scene photos; on the CPU here, on CUDA where a GPU is (the same code, another device)."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest

from maskrt.backends.base import BackendUnavailable
from maskrt.detect import make_detector, parse_face_options, preset_settings
from maskrt.detect.yunet import YuNetDetector

pytest.importorskip("onnx2torch", reason="onnx2torch is not installed (pip install maskrt[gpu])")

SCENES = Path(__file__).resolve().parents[2] / "shared" / "data" / "scenes" / "val" / "images"


def scene_images(n: int) -> list[np.ndarray]:
    paths = sorted(SCENES.glob("*.jpg"))[:n]
    if len(paths) < n:
        pytest.skip(f"expected {n} scene photos under {SCENES}")
    return [cv2.imread(str(p)) for p in paths]


def assert_same_faces(got, want) -> None:
    assert len(got) == len(want) and got.found == want.found
    order = np.lexsort((want.boxes[:, 1], want.boxes[:, 0]))
    mine = np.lexsort((got.boxes[:, 1], got.boxes[:, 0]))
    np.testing.assert_allclose(got.boxes[mine], want.boxes[order], atol=1.0)
    np.testing.assert_allclose(got.landmarks[mine], want.landmarks[order], atol=1.0)
    np.testing.assert_allclose(got.scores[mine], want.scores[order], atol=1e-4)


@pytest.mark.parametrize("preset", ["default", "fast"])
def test_torch_detector_finds_the_faces_onnxruntime_finds(preset) -> None:
    images = scene_images(12)  # several padded sizes: batched per size like the ORT detector
    with make_detector(preset) as reference, make_detector(preset, detector_device="cpu") as same:
        assert isinstance(same, YuNetDetector)
        want = reference.detect(images)
    from maskrt.detect.yunet_torch import YuNetTorchDetector

    settings = preset_settings(preset)
    options = {k: settings[k] for k in ("upscale", "score_threshold", "nms_iou")}
    with YuNetTorchDetector(device="cpu", **options) as detector:
        assert "torch cpu" in detector.describe()
        got = detector.detect(images)
    assert sum(len(f) for f in want) > 20  # real faces, not empty frames
    for g, w in zip(got, want):
        assert_same_faces(g, w)


def test_detector_device_option_and_missing_gpu() -> None:
    assert parse_face_options(["detector_device=cuda:1"]) == {"detector_device": "cuda:1"}
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has a CUDA GPU")
    with pytest.raises(BackendUnavailable, match="torch sees no CUDA GPU"):
        make_detector("default", detector_device="cuda")


@pytest.mark.cuda
def test_torch_detector_on_the_gpu_equals_onnxruntime(cuda_device) -> None:
    from maskrt.detect.yunet_torch import YuNetTorchDetector

    images = scene_images(8)
    with make_detector("default") as reference, make_detector("default", detector_device="cuda") as gpu:
        assert isinstance(gpu, YuNetTorchDetector)
        for g, w in zip(gpu.detect(images), reference.detect(images)):
            assert_same_faces(g, w)
