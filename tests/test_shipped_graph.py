"""The shipped ONNX graph (maskrt/models/maskrt_resnet18.onnx) is the shipped checkpoint's.

When maskrt/weights/maskrt_resnet18.pt changes, these tests fail until the graph is regenerated
with ``python -m maskrt.graph.shipped``.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import warnings

import numpy as np
import pytest

from maskrt.graph.export import file_sha256
from maskrt.graph.shipped import (
    REGENERATE,
    SHIPPED_ONNX,
    SHIPPED_WEIGHTS,
    WEIGHTS_SHA256_KEY,
    StaleGraphWarning,
    graph_problem,
)
from tests.helpers import REPO, relative_error, val_image_paths

REGENERATE_HINT = f"regenerate the shipped graph: {REGENERATE}"


@pytest.fixture(scope="module")
def seeded_model():
    import torch

    from maskrt.graph.model import MaskNet

    torch.manual_seed(3)
    return MaskNet().eval()


def test_shipped_graph_was_made_from_the_shipped_weights() -> None:
    from maskrt.graph.onnx_proto import read_metadata

    assert SHIPPED_ONNX.is_file(), f"{SHIPPED_ONNX} is missing; {REGENERATE_HINT}"
    recorded = read_metadata(SHIPPED_ONNX).get(WEIGHTS_SHA256_KEY)
    assert recorded == file_sha256(SHIPPED_WEIGHTS), f"stale graph; {REGENERATE_HINT}"
    assert graph_problem() is None


def test_shipped_graph_agrees_with_the_checkpoint_on_real_faces() -> None:
    """Same labels and logits/features within 1e-4 (relative) of the checkpoint run by torch."""
    import cv2
    import torch

    from maskrt.backends.ort import cpu_session
    from maskrt.graph.model import MaskNetUint8, load_checkpoint
    from maskrt.image import resize_to_input

    images = np.stack([resize_to_input(cv2.imread(str(p))) for p in val_image_paths(40)])
    session, _ = cpu_session(SHIPPED_ONNX, None, "test")
    logits, features = session.run(["logits", "features"], {"images": images})
    net = MaskNetUint8(load_checkpoint(SHIPPED_WEIGHTS)).eval()
    with torch.no_grad():
        want_logits, want_features = (t.numpy() for t in net(torch.from_numpy(images)))
    assert (logits.argmax(1) == want_logits.argmax(1)).all(), REGENERATE_HINT
    assert relative_error(logits, want_logits) < 1e-4, REGENERATE_HINT
    assert relative_error(features, want_features) < 1e-4, REGENERATE_HINT


def test_shipped_graph_stores_float16_and_checks_clean() -> None:
    import onnx

    model = onnx.load(str(SHIPPED_ONNX))
    onnx.checker.check_model(model, full_check=True)
    types = [init.data_type for init in model.graph.initializer if len(init.raw_data) > 8192]
    assert types and set(types) == {onnx.TensorProto.FLOAT16}
    assert SHIPPED_ONNX.stat().st_size < 0.6 * 4 * 11.2e6  # about half the float32 size
    assert not any(node.metadata_props for node in model.graph.node)  # no local paths inside


def test_cam_weights_of_the_shipped_graph_are_the_checkpoints_fc() -> None:
    from maskrt.cam.weights import CamWeights
    from maskrt.graph.model import load_checkpoint

    from_graph = CamWeights.from_onnx(SHIPPED_ONNX).host
    np.testing.assert_array_equal(from_graph, load_checkpoint(SHIPPED_WEIGHTS).fc_weight.detach().numpy())


def test_protobuf_reader_agrees_with_onnx_on_an_fp32_export(seeded_model, tmp_path) -> None:
    import onnx
    from onnx import numpy_helper

    from maskrt.graph.export import export_onnx
    from maskrt.graph.onnx_proto import gemm_weight, read_metadata

    path = export_onnx(seeded_model, tmp_path / "fp32.onnx")
    model = onnx.load(str(path))
    fc = next(i for i in model.graph.initializer if i.name.endswith("fc.weight"))
    np.testing.assert_array_equal(gemm_weight(path, "logits"), numpy_helper.to_array(fc))
    assert read_metadata(path) == {p.key: p.value for p in model.metadata_props}


def test_default_graph_needs_no_torch() -> None:
    code = ("import sys; from maskrt.graph import Graph; g = Graph(None); "
            "p = g.onnx_path(); w = g.cam_weights; "
            "assert 'torch' not in sys.modules, 'torch imported'; print(p.name, w.host.shape)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO,
                         check=False)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["maskrt_resnet18.onnx", "(2,", "512)"]


def test_a_stale_graph_is_caught_and_not_used(tmp_path, monkeypatch) -> None:
    from maskrt.graph import Graph, shipped

    onnx_copy, other_weights = tmp_path / "g.onnx", tmp_path / "w.pt"
    shutil.copy(SHIPPED_ONNX, onnx_copy)
    other_weights.write_bytes(SHIPPED_WEIGHTS.read_bytes() + b"fine-tuned")
    problem = graph_problem(onnx_copy, other_weights)
    assert problem is not None and "stale graph" in problem
    monkeypatch.setattr(shipped, "SHIPPED_ONNX", onnx_copy)
    monkeypatch.setattr(shipped, "SHIPPED_WEIGHTS", other_weights)
    monkeypatch.setattr(shipped, "graph_problem", lambda: graph_problem(onnx_copy, other_weights))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert Graph(None)._shipped_onnx() is None
    assert any(issubclass(w.category, StaleGraphWarning) and REGENERATE in str(w.message)
               for w in caught)


def test_the_generator_is_exact(seeded_model, tmp_path) -> None:
    """write_shipped_graph on another checkpoint: float16 storage, same outputs as the export."""
    from maskrt.graph.model import save_checkpoint
    from maskrt.graph.shipped import write_shipped_graph

    weights = save_checkpoint(seeded_model, tmp_path / "w.pt", half=True)
    counts = write_shipped_graph(weights, tmp_path / "g.onnx")
    assert counts["fp32"] == [] and counts["fp16_times_scale"] == 20 and counts["fp16"] == 1
    assert counts["max_abs_difference"] <= 1e-5
    assert graph_problem(tmp_path / "g.onnx", weights) is None
