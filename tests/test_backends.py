"""maskrt.backends: one interface, clear refusals, the onnxruntime default."""

from __future__ import annotations

import argparse
import importlib.util

import numpy as np
import pytest
import torch

from maskrt.backends import (
    BACKENDS,
    BackendUnavailable,
    add_backend_arguments,
    backend_options,
    create_backend,
)
from maskrt.graph import Graph
from maskrt.graph.model import MaskNet


@pytest.fixture(scope="module")
def seeded_model() -> MaskNet:
    torch.manual_seed(11)
    return MaskNet().eval()


@pytest.fixture(scope="module")
def ort_backend(seeded_model):
    with create_backend("onnxruntime", model=seeded_model) as backend:
        yield backend


def test_unknown_backend_lists_the_known_ones() -> None:
    with pytest.raises(ValueError, match=r"expected one of \['onnxruntime', 'ort', 'pytorch', "
                                         r"'tensorrt', 'torch', 'triton', 'trt'\], got 'tensorflow'"):
        create_backend("tensorflow")
    assert set(BACKENDS) == {"onnxruntime", "torch", "tensorrt", "triton"}


@pytest.mark.skipif(importlib.util.find_spec("tensorrt") is not None, reason="tensorrt is installed")
def test_tensorrt_without_tensorrt_says_what_to_install() -> None:
    with pytest.raises(BackendUnavailable, match="pip install tensorrt"):
        create_backend("tensorrt")


@pytest.mark.skipif(torch.cuda.is_available(), reason="a CUDA GPU is present")
def test_torch_on_cuda_without_gpu_says_why(seeded_model) -> None:
    with pytest.raises(BackendUnavailable, match="no usable CUDA GPU"):
        create_backend("torch", model=seeded_model, device="cuda")


def test_onnxruntime_outputs_and_fc_weight(ort_backend, seeded_model) -> None:
    images = np.random.default_rng(0).integers(0, 256, (3, 224, 224, 3), dtype=np.uint8)
    logits, features = ort_backend.infer(images)
    assert logits.shape == (3, 2) and logits.dtype == np.float32
    assert features.shape == (3, 512, 7, 7) and features.dtype == np.float32
    np.testing.assert_array_equal(ort_backend.fc_weight, seeded_model.fc_weight.detach().numpy())
    # logits = W . GAP(features) + b: the features are the ones the classifier used.
    pooled = features.mean(axis=(2, 3))
    bias = seeded_model.net.fc.bias.detach().numpy()
    np.testing.assert_allclose(pooled @ ort_backend.fc_weight.T + bias, logits, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("bad, message", [
    (np.zeros((2, 224, 224, 3), np.float32), r"expected uint8\[N,224,224,3\], got float32\[2, 224, 224, 3\]"),
    (np.zeros((2, 112, 112, 3), np.uint8), r"got uint8\[2, 112, 112, 3\]"),
    (np.zeros((224, 224, 3), np.uint8), r"got uint8\[224, 224, 3\]"),
    (np.zeros((0, 224, 224, 3), np.uint8), "empty batch"),
    ([[0]], "got list"),
])
def test_infer_rejects_bad_batches(ort_backend, bad, message) -> None:
    with pytest.raises(ValueError, match=message):
        ort_backend.infer(bad)


def test_torch_cpu_agrees_with_onnxruntime(ort_backend, seeded_model) -> None:
    images = np.random.default_rng(5).integers(0, 256, (2, 224, 224, 3), dtype=np.uint8)
    with create_backend("torch", model=seeded_model, device="cpu") as torch_backend:
        torch_logits, torch_features = torch_backend.infer(images)
    ort_logits, ort_features = ort_backend.infer(images)
    np.testing.assert_allclose(torch_logits, ort_logits, rtol=1e-4, atol=1e-4 * np.abs(ort_logits).max())
    np.testing.assert_allclose(torch_features, ort_features, rtol=1e-4,
                               atol=1e-4 * np.abs(ort_features).max())


def test_aliases_and_a_shared_graph(seeded_model) -> None:
    """An alias names the same backend; backends given one Graph share its CAM weights."""
    graph = Graph(seeded_model)
    with create_backend("ort", graph) as by_alias, create_backend("onnxruntime", graph) as by_name:
        assert by_alias.name == by_name.name == "onnxruntime"
        assert by_alias.graph is by_name.graph is graph
        assert by_alias.cam_weights is by_name.cam_weights


def test_command_line_options_are_typed_and_checked() -> None:
    parser = argparse.ArgumentParser(prog="maskrt demo")
    add_backend_arguments(parser, default="torch")
    args = parser.parse_args(["--backend-option", "device=cpu", "--backend-option", "half=false"])
    assert args.backend == "torch" and backend_options(args) == {"device": "cpu", "half": False}
    with pytest.raises(ValueError, match=r"backend torch: unknown option\(s\) \['threads'\]"):
        backend_options(parser.parse_args(["--backend-option", "threads=2"]))


def test_one_backend_option_item_may_hold_several_pairs() -> None:
    from maskrt.backends.registry import parse_options

    assert parse_options("triton", ["url=localhost:8001,model=maskrt", "timeout=2.5"]) == \
        {"url": "localhost:8001", "model_name": "maskrt", "timeout": 2.5}  # model= names model_name
    assert parse_options("trt", ["profile=1,32,256,rebuild=true"]) == \
        {"profile": (1, 32, 256), "rebuild": True}
    with pytest.raises(ValueError, match="--backend-option protocol: expected grpc or http"):
        parse_options("triton", ["protocol=smtp"])
