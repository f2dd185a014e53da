"""The GPU paths of the face detector, held to the ONNX Runtime detector on real scene photos:
YuNet on PyTorch (on the CPU here, on CUDA where a GPU is: the same code, another device), and
YuNet through the TensorRT builder (its FP16 graph run by ONNX Runtime here; the engine itself
where TensorRT and a GPU are)."""

from __future__ import annotations

import numpy as np
import pytest

from maskrt.backends.base import BackendUnavailable
from maskrt.backends.tensorrt import versions as trt_compat
from maskrt.detect import (detector_options, make_detector, parse_face_options, preset_settings,
                           resolve_detector_backend)
from maskrt.detect.yunet import YuNetDetector
from helpers import scene_images

pytest.importorskip("onnx2torch", reason="onnx2torch is not installed (pip install maskrt[gpu])")

def assert_same_faces(got, want, score_atol: float = 1e-4) -> None:
    assert len(got) == len(want) and got.found == want.found
    order = np.lexsort((want.boxes[:, 1], want.boxes[:, 0]))
    mine = np.lexsort((got.boxes[:, 1], got.boxes[:, 0]))
    np.testing.assert_allclose(got.boxes[mine], want.boxes[order], atol=1.0)
    np.testing.assert_allclose(got.landmarks[mine], want.landmarks[order], atol=1.0)
    np.testing.assert_allclose(got.scores[mine], want.scores[order], atol=score_atol)


@pytest.mark.parametrize("preset", ["default", "fast"])
def test_torch_detector_finds_the_faces_onnxruntime_finds(preset) -> None:
    images = scene_images(12)  # several padded sizes: batched per size like the ORT detector
    with make_detector(preset) as reference, make_detector(preset, detector_device="cpu") as same:
        assert isinstance(same, YuNetDetector)
        want = reference.detect(images)
    from maskrt.detect.yunet_torch import YuNetTorchDetector

    options = detector_options(preset_settings(preset))
    with YuNetTorchDetector(device="cpu", **options) as detector:
        assert "torch cpu" in detector.describe()
        got = detector.detect(images)
    assert sum(len(f) for f in want) > 20  # real faces, not empty frames
    for g, w in zip(got, want):
        assert_same_faces(g, w)


def test_frames_of_one_size_run_in_chunks_of_the_engines_max_batch() -> None:
    """A TensorRT engine takes at most its profile's max frames a call: bigger groups of one
    padded size run in chunks, with the results of one call."""
    from maskrt.detect.yunet_torch import YuNetTorchDetector

    images = scene_images(3)
    images += [images[0]] * 6
    with YuNetTorchDetector(device="cpu", score_threshold=0.3) as detector:
        whole = detector.detect(images)
        detector._max_batch = 4  # as YuNetEngine.max_batch would be
        chunked = detector.detect(images)
    assert sum(len(f) for f in whole) > 10
    for c, w in zip(chunked, whole):
        assert_same_faces(c, w)


def test_the_device_blob_is_the_onnxruntime_detectors_blob() -> None:
    """Uploaded as uint8 and made float on the device: the very blob the host builds."""
    from maskrt.detect.yunet import _blob
    from maskrt.detect.yunet_torch import YuNetTorchDetector

    rng = np.random.default_rng(7)
    images = [rng.integers(0, 256, (70, 90, 3), np.uint8), rng.integers(0, 256, (64, 96, 3), np.uint8)]
    for padded in ((96, 96), (128, 128)):  # the detector's own pad (32), and a larger one
        with YuNetTorchDetector(device="cpu") as detector:
            got = detector._device_blob(images, padded)
        assert got.dtype.is_floating_point and got.is_contiguous()
        assert tuple(got.shape) == (2, 3, *padded)
        np.testing.assert_array_equal(got.numpy(), _blob(images, padded))


def test_the_torch_detector_pads_as_the_onnxruntime_detector() -> None:
    """detector_pad reaches both detectors: the same faces with a larger pad too."""
    from maskrt.detect.yunet_torch import YuNetTorchDetector

    images = scene_images(6)
    options = detector_options(preset_settings("default", upscale=2.0, detector_pad=128))
    assert options["pad"] == 128
    with make_detector("default", upscale=2.0, detector_pad=128) as reference:
        assert reference.pad == 128
        want = reference.detect(images)
    with YuNetTorchDetector(device="cpu", **options) as detector:
        got = detector.detect(images)
    assert sum(len(f) for f in want) > 10
    for g, w in zip(got, want):
        assert_same_faces(g, w)


def test_detector_device_option_and_missing_gpu() -> None:
    assert parse_face_options(["detector_device=cuda:1"]) == {"detector_device": "cuda:1"}
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has a CUDA GPU")
    with pytest.raises(BackendUnavailable, match="torch sees no CUDA GPU"):
        make_detector("default", detector_device="cuda", detector_backend="torch")


def test_detector_backend_choice_follows_the_device() -> None:
    assert parse_face_options(["detector_backend=tensorrt"]) == {"detector_backend": "tensorrt"}
    assert resolve_detector_backend("cpu", "auto") == "onnxruntime"
    assert resolve_detector_backend("cpu", "torch") == "torch"
    assert resolve_detector_backend("cuda:1", "tensorrt") == "tensorrt"
    trt_ok = trt_compat.tensorrt_status()[0]
    assert resolve_detector_backend("cuda", "auto") == ("tensorrt" if trt_ok else "torch")
    for device, backend, message in [
            ("cuda", "onnxruntime", "onnxruntime runs on the CPU"),
            ("cpu", "tensorrt", "tensorrt needs detector_device cuda"),
            ("gpu0", "auto", "expected cpu, cuda or cuda:N, got 'gpu0'"),
            ("cpu", "openvino", r"expected one of \['auto', 'onnxruntime', 'torch', 'tensorrt'\]")]:
        with pytest.raises(ValueError, match=message):
            make_detector("default", detector_device=device, detector_backend=backend)
    with make_detector("fast", detector_backend="onnxruntime") as detector:
        assert isinstance(detector, YuNetDetector)


def test_yunet_fp16_graph_for_tensorrt_finds_the_same_faces(tmp_path) -> None:
    """The graph a strongly typed YuNet engine is built from (FP16, float32 in and out, Resize
    scales kept float32), run by the ONNX Runtime detector: the FP32 graph's faces."""
    import onnx

    from maskrt.backends.tensorrt.onnx_rewrite import float_graph_onnx_bytes
    from maskrt.detect.yunet_tensorrt import yunet_spec

    settings = detector_options(preset_settings("default", upscale=2.0))  # the shipped detector
    model = onnx.load_from_string(float_graph_onnx_bytes(settings["model"], fp16=True))
    onnx.checker.check_model(model, full_check=True)
    float32, float16 = onnx.TensorProto.FLOAT, onnx.TensorProto.FLOAT16
    assert {o.type.tensor_type.elem_type for o in model.graph.output} == {float32}
    assert [i.type.tensor_type.elem_type for i in model.graph.input] == [float32]
    assert model.graph.node[0].op_type == "Cast" and model.graph.node[0].attribute[0].i == float16
    assert {t.data_type for t in model.graph.initializer if t.data_type in (float32, float16)} \
        == {float16, float32}  # float16 weights; Resize's scales stay float32
    assert yunet_spec().rewrite is float_graph_onnx_bytes
    fp16_file = tmp_path / "yunet_fp16.onnx"
    fp16_file.write_bytes(model.SerializeToString())
    images = scene_images(12)
    with YuNetDetector(**settings) as fp32, YuNetDetector(**{**settings, "model": fp16_file}) as fp16:
        got, want = fp16.detect(images), fp32.detect(images)
    assert [len(f) for f in got] == [len(f) for f in want]
    # Measured here: 109 of 110 faces of the fine-tuned graph (93 of 93 of the published one),
    # boxes within 0.5 px, scores within 5e-3.
    assert_fp16_faces_match(got, want, pixels=0.5, score=5e-3, fraction=0.98)


def test_the_detector_follows_a_gpu_classifier_by_default() -> None:
    """detector_device "auto" (the presets'): the classifier's CUDA device when a GPU detector
    can run there, else the CPU; an explicit device stands."""
    import torch

    from maskrt.detect import face_stage, gpu_detector_available, resolve_detector_device

    assert preset_settings("default")["detector_device"] == "auto"
    assert resolve_detector_device("auto") == "cpu"
    assert resolve_detector_device("auto", torch.device("cpu")) == "cpu"
    assert resolve_detector_device("auto", torch.device("cuda", 1)) == (
        "cuda:1" if gpu_detector_available() else "cpu")
    assert resolve_detector_device("cpu", "cuda:0") == "cpu"
    assert resolve_detector_device("cuda:1", None) == "cuda:1"
    stage = face_stage("fast", classifier_device=torch.device("cpu"))
    assert isinstance(stage.detector, YuNetDetector)
    stage.close()


@pytest.mark.skipif(trt_compat.tensorrt_status()[0], reason="TensorRT is installed here")
def test_tensorrt_detector_without_tensorrt_says_what_to_install() -> None:
    import torch

    from maskrt.detect.yunet_torch import YuNetTorchDetector

    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="tensorrt runtime needs a CUDA device"):
            YuNetTorchDetector(device="cpu", runtime="tensorrt")
        pytest.skip("the rest needs a CUDA GPU without TensorRT")
    with pytest.raises(BackendUnavailable, match="pip install tensorrt"):
        YuNetTorchDetector(device="cuda", runtime="tensorrt")


@pytest.mark.cuda
@pytest.mark.parametrize("pad", [32, 128])
def test_torch_detector_on_the_gpu_equals_onnxruntime(cuda_device, pad) -> None:
    from maskrt.detect.yunet_torch import YuNetTorchDetector

    images = scene_images(8)
    with make_detector("default", detector_pad=pad) as reference, \
            make_detector("default", detector_device="cuda", detector_backend="torch",
                          detector_pad=pad) as gpu:
        assert isinstance(gpu, YuNetTorchDetector) and gpu.runtime == "torch"
        for g, w in zip(gpu.detect(images), reference.detect(images)):
            # cuDNN's convolutions run in TF32 on Ampere and later (torch's default): scores
            # within 3e-3 (the H200 gave up to 1.25e-3; FP32 ONNX Runtime agrees to 1e-4).
            assert_same_faces(g, w, score_atol=3e-3)


@pytest.mark.cuda
@pytest.mark.skipif(not trt_compat.tensorrt_status()[0], reason=trt_compat.tensorrt_status()[1])
def test_tensorrt_detector_finds_the_faces_onnxruntime_finds(cuda_device, tmp_path) -> None:
    """YuNet's FP16 engine, built into (then reused from) the engine folder the classifier's
    engines use; the faces of the ONNX Runtime detector within FP16's precision."""
    images = scene_images(12)
    images += [images[0]] * 9  # grouped by padded size: one group of 10, run as 8 + 2
    with make_detector("default") as reference:
        want = reference.detect(images)
    for attempt in ("built", "reused"):
        with make_detector("default", detector_device="cuda", detector_backend="tensorrt",
                           detector_engine_dir=str(tmp_path)) as gpu:
            assert "tensorrt" in gpu.describe()
            got = gpu.detect(images)
        assert [p.name.split("-")[0] for p in tmp_path.glob("*.engine")] == ["yunet"], attempt
        assert_fp16_faces_match(got, want)


def assert_fp16_faces_match(got, want, *, pixels: float = 2.0, score: float = 2e-2,
                            fraction: float = 0.97) -> None:
    """At least ``fraction`` of the faces found by both (FP16 moves scores near the threshold),
    boxes within ``pixels``, scores within ``score``."""
    matched = total = 0
    for g, w in zip(got, want):
        total += len(w)
        for box, wanted in zip(w.boxes, w.scores):
            if len(g) == 0:
                continue
            distance = np.abs(g.boxes - box).max(axis=1)
            best = int(distance.argmin())
            if distance[best] <= pixels and abs(g.scores[best] - wanted) <= score:
                matched += 1
    assert total > 20 and matched >= fraction * total, (matched, total)
