"""TensorRT: engine files, sidecar rules, profiles and the ONNX rewrite as plain Python; the engine
itself only where TensorRT and a CUDA GPU are present (those tests skip here, saying why)."""

from __future__ import annotations

import argparse
import dataclasses
import json
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
from onnx import TensorProto, helper

from maskrt.backends import BackendUnavailable, create_backend
from maskrt.backends.tensorrt import versions as trt_compat
from maskrt.backends.tensorrt.build import (
    ENGINE_FORMAT,
    EngineFiles,
    Profile,
    Sidecar,
    SidecarError,
    SystemInfo,
    engine_path,
    read_sidecar,
    sidecar_path,
    stale_reasons,
    timing_cache_path,
    write_atomic,
)
from maskrt.backends.tensorrt.onnx_rewrite import tensorrt_onnx_bytes
from maskrt.backends.tensorrt.spec import GraphSpec, Spatial, classifier_spec
from maskrt.cli.build import add_arguments, main, profile_from_args, spec_from_args
from maskrt.graph import Graph
from maskrt.graph.export import INPUT_NAME, export_onnx
from maskrt.graph.model import MaskNet

TRT_OK, TRT_WHY = trt_compat.tensorrt_status()
needs_tensorrt = pytest.mark.skipif(
    not (TRT_OK and torch.cuda.is_available()),
    reason=f"needs TensorRT 10/11 and a CUDA GPU: {TRT_WHY if not TRT_OK else 'no CUDA GPU'}")
no_tensorrt = pytest.mark.skipif(TRT_OK, reason="TensorRT is installed here")

SHA = "ab" * 32
H100 = SystemInfo("10.3.0", "NVIDIA H100 80GB HBM3", "9.0")


@pytest.fixture(scope="module")
def seeded_model() -> MaskNet:
    torch.manual_seed(5)
    return MaskNet().eval()


@pytest.fixture(scope="module")
def onnx_file(tmp_path_factory, seeded_model) -> Path:
    return export_onnx(seeded_model, tmp_path_factory.mktemp("onnx") / "maskrt.onnx")


# --------------------------------------------------------------------------- profile
def test_profile_defaults_and_shapes() -> None:
    profile = Profile()
    assert (profile.min, profile.opt, profile.max) == (1, 32, 256)
    assert profile.shapes() == ((1, 224, 224, 3), (32, 224, 224, 3), (256, 224, 224, 3))
    assert Profile.from_dict(profile.as_dict()) == profile


@pytest.mark.parametrize("args, message", [
    ((0, 1, 1), r"min-batch: expected >= 1, got 0"),
    ((8, 4, 16), r"expected min <= opt <= max, got min=8, opt=4, max=16"),
    ((1, 64, 32), r"expected min <= opt <= max"),
    ((1, 32, 5000), r"max-batch: expected <= 4096 .*got 5000"),
    ((1, 32.0, 64), r"opt-batch: expected an integer, got 32.0"),
    ((True, 2, 4), r"min-batch: expected an integer"),
])
def test_profile_rejects_bad_batches(args, message) -> None:
    with pytest.raises(ValueError, match=message):
        Profile(*args)


def test_build_arguments_give_the_profile() -> None:
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    args = parser.parse_args(["--min-batch", "2", "--opt-batch", "16", "--max-batch", "64"])
    assert profile_from_args(args) == Profile(2, 16, 64)
    assert profile_from_args(parser.parse_args([])) == Profile(1, 32, 256)
    assert parser.parse_args([]).out == Path("engines")
    assert spec_from_args(args).name == "maskrt" and spec_from_args(args).profile == Profile(2, 16, 64)
    detector = spec_from_args(parser.parse_args(["--graph", "detector", "--max-side", "1000"]))
    assert detector.name == "yunet" and detector.shapes()[2] == (8, 3, 1024, 1024)


def test_build_verb_rejects_a_bad_profile_before_needing_tensorrt(capsys) -> None:
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    assert main(parser.parse_args(["--opt-batch", "512"])) == 2
    assert "expected min <= opt <= max, got min=1, opt=512, max=256" in capsys.readouterr().out


@no_tensorrt
def test_build_verb_without_tensorrt_says_why(capsys) -> None:
    from maskrt.cli import main as cli_main

    assert cli_main(["build", "--out", "unused"]) == 2
    out = capsys.readouterr().out
    assert "TensorRT is not importable here" in out and "pip install tensorrt" in out


# --------------------------------------------------------------------------- sidecar rules
def test_sidecar_round_trips_through_json() -> None:
    sidecar = dataclasses.replace(Sidecar.expected(SHA, H100, Profile(1, 8, 64)),
                                  built_at="2026-01-01T00:00:00", build_seconds=12.5)
    data = json.loads(sidecar.to_json())
    assert data["profile"] == {"min": 1, "opt": 8, "max": 64}
    assert data["format"] == ENGINE_FORMAT and data["precision"] == "fp16"
    assert data["gpu_name"] == "NVIDIA H100 80GB HBM3" and data["compute_capability"] == "9.0"
    assert Sidecar.from_json(sidecar.to_json()) == sidecar


def test_matching_sidecar_has_no_mismatch_and_ignores_build_time() -> None:
    expected = Sidecar.expected(SHA, H100, Profile())
    found = dataclasses.replace(expected, built_at="yesterday", build_seconds=99.0)
    assert found.mismatches(expected) == []


@pytest.mark.parametrize("change, field", [
    ({"tensorrt_version": "10.0.1"}, "tensorrt_version"),
    ({"gpu_name": "NVIDIA A100-SXM4-80GB"}, "gpu_name"),
    ({"compute_capability": "8.0"}, "compute_capability"),
    ({"onnx_sha256": "cd" * 32}, "onnx_sha256"),
    ({"precision": "fp32"}, "precision"),
    ({"typing": "strong"}, "typing"),
    ({"profile": Profile(1, 32, 512)}, "profile"),
    ({"format": ENGINE_FORMAT - 1}, "format"),
])
def test_each_mismatch_is_named_with_both_values(change, field) -> None:
    expected = Sidecar.expected(SHA, H100, Profile())
    found = dataclasses.replace(expected, **change)
    reasons = found.mismatches(expected)
    assert len(reasons) == 1 and reasons[0].startswith(f"{field}: engine has ")
    assert "this system needs" in reasons[0]


def test_stale_reasons_cover_missing_corrupt_and_mismatched_files(tmp_path) -> None:
    expected = Sidecar.expected(SHA, H100, Profile())
    engine = engine_path(tmp_path, SHA, Profile())
    assert stale_reasons(engine, expected) == [f"no engine at {engine}"]
    engine.write_bytes(b"serialized engine")
    assert "no sidecar" in stale_reasons(engine, expected)[0]
    sidecar_path(engine).write_text("{not json")
    assert stale_reasons(engine, expected)[0].startswith("unreadable sidecar:")
    sidecar_path(engine).write_text(json.dumps({"format": 1}))
    assert "missing fields" in stale_reasons(engine, expected)[0]
    old = dataclasses.replace(expected, tensorrt_version="10.0.1")
    sidecar_path(engine).write_text(old.to_json())
    assert stale_reasons(engine, expected) == [
        "tensorrt_version: engine has '10.0.1', this system needs '10.3.0'"]
    sidecar_path(engine).write_text(expected.to_json())
    assert stale_reasons(engine, expected) == []


def test_read_sidecar_names_the_file(tmp_path) -> None:
    with pytest.raises(SidecarError, match="cannot read"):
        read_sidecar(tmp_path / "missing.json")
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({**json.loads(Sidecar.expected(SHA, H100, Profile()).to_json()),
                               "profile": {"min": 4, "opt": 2, "max": 8}}))
    with pytest.raises(SidecarError, match=r"bad\.json: batch profile"):
        read_sidecar(bad)


# --------------------------------------------------------------------------- file naming
def test_engine_and_sidecar_names(tmp_path) -> None:
    path = engine_path(tmp_path, SHA, Profile(1, 32, 256))
    assert path == tmp_path / f"maskrt-{SHA[:16]}-fp16-b1-32-256.engine"
    assert sidecar_path(path) == tmp_path / f"maskrt-{SHA[:16]}-fp16-b1-32-256.json"
    assert engine_path(tmp_path, SHA, Profile(1, 8, 64)) != path
    with pytest.raises(ValueError, match="64 lowercase hex digits"):
        engine_path(tmp_path, "not-a-digest", Profile())


def test_the_face_detector_goes_through_the_same_engine_folder_under_its_own_name(tmp_path) -> None:
    from maskrt.detect.yunet_tensorrt import yunet_spec

    spec = yunet_spec(max_side=2048)
    assert spec.shapes() == ((1, 3, 32, 32), (4, 3, 1152, 2048), (8, 3, 2048, 2048))
    assert spec.input_shape(2, (480, 640)) == (2, 3, 480, 640) and spec.half_outputs == ()
    assert yunet_spec(max_side=1000).shapes()[1:] == ((4, 3, 1024, 1024), (8, 3, 1024, 1024))
    path = engine_path(tmp_path, SHA, spec)
    assert path.name == f"yunet-{SHA[:16]}-fp16-b1-4-8-hw1152x2048-2048x2048.engine"
    assert engine_path(tmp_path, SHA, classifier_spec()) == engine_path(tmp_path, SHA, Profile())
    assert classifier_spec().shapes() == Profile().shapes() == (
        (1, 224, 224, 3), (32, 224, 224, 3), (256, 224, 224, 3))

    sidecar = Sidecar.expected(SHA, H100, spec)
    data = json.loads(sidecar.to_json())
    assert data["graph"] == "yunet" and data["spatial"] == {
        "min": [32, 32], "opt": [1152, 2048], "max": [2048, 2048]}
    assert Sidecar.from_json(sidecar.to_json()) == sidecar
    assert json.loads(Sidecar.expected(SHA, H100, Profile()).to_json())["spatial"] is None
    smaller = Sidecar.expected(SHA, H100, yunet_spec(max_side=1024))
    assert smaller.mismatches(sidecar) == [
        "spatial: engine has {'min': [32, 32], 'opt': [1024, 1024], 'max': [1024, 1024]}, this "
        "system needs {'min': [32, 32], 'opt': [1152, 2048], 'max': [2048, 2048]}"]
    assert dataclasses.replace(sidecar, graph="maskrt").mismatches(sidecar)[0].startswith(
        "graph: engine has 'maskrt'")


@pytest.mark.parametrize("sizes, message", [
    (((32, 32), (64, 16), (128, 128)), "min <= opt <= max in height and width"),
    (((0, 32), (64, 64), (128, 128)), "pairs of positive integers"),
    (((32,), (64, 64), (128, 128)), "pairs of positive integers"),
])
def test_spatial_profile_is_checked(sizes, message) -> None:
    with pytest.raises(ValueError, match=message):
        Spatial(*sizes)


def test_graph_spec_pairs_a_spatial_profile_with_a_dynamic_input() -> None:
    with pytest.raises(ValueError, match="spatial profile goes with an input of dynamic height"):
        GraphSpec("odd", "x", (3, 64, 64), Profile(), lambda path, fp16: b"",
                  spatial=Spatial((32, 32), (64, 64), (64, 64)))
    with pytest.raises(ValueError, match="spatial profile goes with"):
        GraphSpec("odd", "x", (3, -1, -1), Profile(), lambda path, fp16: b"")


def test_timing_cache_is_per_tensorrt_version_and_gpu(tmp_path) -> None:
    path = timing_cache_path(tmp_path, H100)
    assert path == tmp_path / "timing-trt10.3.0-sm90-nvidia-h100-80gb-hbm3.cache"
    assert timing_cache_path(tmp_path, dataclasses.replace(H100, tensorrt_version="10.4.0")) != path
    a100 = SystemInfo("10.3.0", "NVIDIA A100-SXM4-80GB", "8.0")
    assert timing_cache_path(tmp_path, a100).name == "timing-trt10.3.0-sm80-nvidia-a100-sxm4-80gb.cache"


def test_write_atomic_leaves_only_the_file(tmp_path) -> None:
    target = tmp_path / "sub" / "engine.bin"
    write_atomic(target, b"123")
    write_atomic(target, b"4567")
    assert target.read_bytes() == b"4567"
    assert [p.name for p in target.parent.iterdir()] == ["engine.bin"]


# --------------------------------------------------------------------------- version rules
@pytest.mark.parametrize("text, parsed", [
    ("10.3.0.26", (10, 3, 0, 26)), ("10.8.0.post1", (10, 8, 0)), ("11.0", (11, 0)), ("8", (8,)),
])
def test_parse_version(text, parsed) -> None:
    assert trt_compat.parse_version(text) == parsed


def test_supported_versions() -> None:
    assert trt_compat.unsupported_reason("10.0.1") is None
    assert trt_compat.unsupported_reason("10.13.2.6") is None
    assert trt_compat.unsupported_reason("11.1.0") is None
    assert "older than the TensorRT 10 API" in trt_compat.unsupported_reason("8.6.1")
    assert "newer than the releases maskrt was written for (10.x, 11.x)" in trt_compat.unsupported_reason("12.0")
    assert "expected 'MAJOR.MINOR" in trt_compat.unsupported_reason("unknown")


@pytest.mark.parametrize("version, strong", [
    ("10.0.1.6", False), ("10.3.0", False), ("10.11.0.33", False), ("10.12.0.36", True),
    ("10.13.2", True), ("11.0", True), ("11.1.0.post1", True),
])
def test_typing_rule(version, strong) -> None:
    """BuilderFlag.FP16 (weak typing) up to 10.11; STRONGLY_TYPED networks from 10.12 on."""
    assert trt_compat.strongly_typed(version) is strong
    assert trt_compat.typing_name(version) == ("strong" if strong else "weak")
    assert Sidecar.expected(SHA, SystemInfo(version, "GPU", "9.0"), Profile()).typing == trt_compat.typing_name(version)


def _fake_trt(version: str):
    """The few TensorRT names the version rules touch, as plain Python."""
    from types import SimpleNamespace

    flags = SimpleNamespace(STRONGLY_TYPED=1)
    builder_flag = SimpleNamespace(FP16="FP16") if version.startswith("10.") else SimpleNamespace()
    return SimpleNamespace(__version__=version, NetworkDefinitionCreationFlag=flags, BuilderFlag=builder_flag,
                           float16="half")


def test_network_flags_and_fp16_flag_per_version() -> None:
    assert trt_compat.network_flags(_fake_trt("10.3.0")) == 0
    assert trt_compat.network_flags(_fake_trt("10.12.0")) == 1 << 1
    assert trt_compat.network_flags(_fake_trt("11.0.0")) == 1 << 1
    flags: list[str] = []
    config = type("Config", (), {"set_flag": lambda self, f: flags.append(f)})()
    trt_compat.enable_fp16(_fake_trt("10.3.0"), config)
    assert flags == ["FP16"]
    with pytest.raises(BackendUnavailable, match="has no BuilderFlag.FP16"):
        trt_compat.enable_fp16(_fake_trt("11.0.0"), config)


def test_weak_typing_marks_the_half_outputs_of_the_spec() -> None:
    from types import SimpleNamespace

    from maskrt.backends.tensorrt.build import EngineBuildError, _outputs_as_half

    outputs = [SimpleNamespace(name="logits", dtype="float"), SimpleNamespace(name="features", dtype="float")]
    network = SimpleNamespace(num_outputs=2, get_output=lambda i: outputs[i])
    _outputs_as_half(_fake_trt("10.3.0"), network, classifier_spec().half_outputs)
    assert [o.dtype for o in outputs] == ["float", "half"]
    with pytest.raises(EngineBuildError, match=r"no 'features' output \(it has \['logits'\]\)"):
        _outputs_as_half(_fake_trt("10.3.0"), SimpleNamespace(num_outputs=1, get_output=lambda i: outputs[0]),
                         ("features",))


@no_tensorrt
def test_tensorrt_backend_without_tensorrt_says_why_and_what_to_install() -> None:
    ok, why = trt_compat.tensorrt_status()
    assert not ok and "pip install tensorrt" in why
    with pytest.raises(BackendUnavailable, match="TensorRT is not importable here.*pip install tensorrt"):
        create_backend("tensorrt")


# --------------------------------------------------------------------------- the ONNX rewrite
def test_rewritten_graph_casts_the_uint8_input_first(onnx_file) -> None:
    model = onnx.load_from_string(tensorrt_onnx_bytes(onnx_file))
    readers = [n for n in model.graph.node if INPUT_NAME in n.input]
    assert [(n.op_type, _attr(n, "to")) for n in readers] == [("Cast", TensorProto.FLOAT)]
    onnx.checker.check_model(model, full_check=True)
    assert onnx.load(str(onnx_file)).graph.node[0].op_type != "Cast"  # the file is untouched


def test_rewritten_graph_computes_the_same_outputs(onnx_file) -> None:
    import onnxruntime as ort

    images = np.random.default_rng(3).integers(0, 256, (2, 224, 224, 3), dtype=np.uint8)
    original = ort.InferenceSession(str(onnx_file)).run(None, {INPUT_NAME: images})
    rewritten = ort.InferenceSession(tensorrt_onnx_bytes(onnx_file)).run(None, {INPUT_NAME: images})
    for got, want in zip(rewritten, original):
        np.testing.assert_array_equal(got, want)


def test_rewrite_refuses_a_graph_it_does_not_understand(tmp_path) -> None:
    node = helper.make_node("Relu", [INPUT_NAME], ["out"])
    graph = helper.make_graph(
        [node], "g", [helper.make_tensor_value_info(INPUT_NAME, TensorProto.UINT8, [1, 2])],
        [helper.make_tensor_value_info("out", TensorProto.UINT8, [1, 2])])
    path = tmp_path / "odd.onnx"
    onnx.save(helper.make_model(graph), str(path))
    with pytest.raises(ValueError, match="feed only Transpose/Cast/Shape nodes, found Relu"):
        tensorrt_onnx_bytes(path)


def test_fp16_graph_for_strong_typing(onnx_file) -> None:
    """The strongly typed network's graph: FP16 everywhere, logits cast back to float32, features
    float16; run by ONNX Runtime it decides like the FP32 graph, within FP16's precision."""
    import onnxruntime as ort

    model = onnx.load_from_string(tensorrt_onnx_bytes(onnx_file, fp16=True))
    onnx.checker.check_model(model, full_check=True)
    outputs = {o.name: o.type.tensor_type.elem_type for o in model.graph.output}
    assert outputs == {"logits": TensorProto.FLOAT, "features": TensorProto.FLOAT16}
    assert not [t.name for t in model.graph.initializer if t.data_type == TensorProto.FLOAT]
    readers = [n for n in model.graph.node if INPUT_NAME in n.input]
    assert [(n.op_type, _attr(n, "to")) for n in readers] == [("Cast", TensorProto.FLOAT16)]

    images = np.random.default_rng(4).integers(0, 256, (4, 224, 224, 3), dtype=np.uint8)
    options = ort.SessionOptions()
    options.log_severity_level = 3  # ORT notes it cannot constant-fold some FP16 nodes on the CPU
    want = ort.InferenceSession(str(onnx_file), options).run(None, {INPUT_NAME: images})
    got = ort.InferenceSession(model.SerializeToString(), options).run(None, {INPUT_NAME: images})
    assert got[0].dtype == np.float32 and got[1].dtype == np.float16
    np.testing.assert_allclose(got[0], want[0], rtol=0, atol=2e-2 * np.abs(want[0]).max())
    np.testing.assert_allclose(got[1].astype(np.float32), want[1], rtol=0, atol=1e-2 * np.abs(want[1]).max())


def _attr(node, name):
    return next((a.i for a in node.attribute if a.name == name), None)


# --------------------------------------------------------------------------- real TensorRT
@pytest.mark.cuda
@needs_tensorrt
def test_engine_is_built_once_then_reused_and_rebuilt_when_stale(tmp_path, onnx_file) -> None:
    from maskrt.backends.tensorrt.build import load_or_build

    trt = trt_compat.import_tensorrt()
    profile = Profile(1, 4, 8)
    messages: list[str] = []
    first = load_or_build(trt, onnx_file, tmp_path, profile, log=messages.append)
    assert isinstance(first, EngineFiles) and first.built and first.engine.is_file()
    assert read_sidecar(sidecar_path(first.engine)).tensorrt_version == trt.__version__
    assert timing_cache_path(tmp_path, SystemInfo.detect(trt)).is_file()
    again = load_or_build(trt, onnx_file, tmp_path, profile, log=messages.append)
    assert not again.built and again.reasons == []
    stale = dataclasses.replace(read_sidecar(sidecar_path(first.engine)), tensorrt_version="9.0")
    sidecar_path(first.engine).write_text(stale.to_json())
    rebuilt = load_or_build(trt, onnx_file, tmp_path, profile, log=messages.append)
    assert rebuilt.built and "tensorrt_version: engine has '9.0'" in rebuilt.reasons[0]
    assert any("rebuilding" in m for m in messages)


@pytest.mark.cuda
@needs_tensorrt
def test_undeserialisable_engine_is_rebuilt_with_the_reason(tmp_path, onnx_file) -> None:
    from maskrt.backends.tensorrt.runtime import TensorRTBackend

    profile = (1, 4, 8)
    with TensorRTBackend(Graph(onnx_file), engine_dir=tmp_path, profile=profile) as backend:
        engine_file = backend._engine_file
    engine_file.write_bytes(b"garbage" * 100)
    messages: list[str] = []
    with TensorRTBackend(Graph(onnx_file), engine_dir=tmp_path, profile=profile,
                         log=messages.append) as backend:
        assert backend.infer(np.zeros((2, 224, 224, 3), np.uint8))[0].shape == (2, 2)
    assert any("could not deserialise" in m for m in messages)


@pytest.mark.cuda
@needs_tensorrt
def test_tensorrt_fp16_agrees_with_onnxruntime_and_keeps_features_on_device(
        tmp_path, onnx_file, seeded_model) -> None:
    from maskrt.backends.tensorrt.runtime import TensorRTBackend
    from maskrt.tools.bench import sample_batch

    images = sample_batch(16)
    with create_backend("onnxruntime", model=seeded_model) as ort_backend:
        ref_logits, _ = ort_backend.infer(images)
    with TensorRTBackend(Graph(onnx_file), engine_dir=tmp_path, profile=(1, 8, 8)) as backend:
        logits, features = backend.infer(images)  # 16 > max 8: runs in two chunks
        assert logits.shape == (16, 2) and features.shape == (16, 512, 7, 7)
        assert logits.dtype == np.float32 and features.dtype == np.float32  # the host path widens
        np.testing.assert_array_equal(logits.argmax(1), ref_logits.argmax(1))
        scale = np.abs(ref_logits).max()
        assert np.abs(logits - ref_logits).max() / scale < 2e-2
        device_images = torch.from_numpy(images[:8]).cuda()
        d_logits, d_features = backend.infer(device_images)
        assert d_logits.is_cuda and d_features.is_cuda and d_features.shape == (8, 512, 7, 7)
        assert d_logits.dtype == torch.float32 and d_features.dtype == torch.float16  # half the bytes
        np.testing.assert_allclose(d_logits.cpu().numpy(), logits[:8], rtol=1e-3, atol=1e-3)
        with pytest.raises(ValueError, match="at most 8 images per call"):
            backend.infer(torch.from_numpy(images).cuda())
