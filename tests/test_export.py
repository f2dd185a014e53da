"""maskrt.graph.export: the ONNX graph of ARCHITECTURE.md, checked by onnx and run by ONNX Runtime."""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch

from maskrt.cli import main as cli_main
from maskrt.graph.export import export_onnx
from maskrt.graph.model import MaskNet, MaskNetUint8, load_checkpoint, save_checkpoint
from maskrt.image import decode_image, prepare_batch
from tests.helpers import relative_error, val_image_paths


@pytest.fixture(scope="module")
def seeded_model() -> MaskNet:
    torch.manual_seed(7)
    return MaskNet().eval()


@pytest.fixture(scope="module")
def onnx_path(tmp_path_factory, seeded_model):
    return export_onnx(seeded_model, tmp_path_factory.mktemp("export") / "maskrt.onnx")


def _dims(value_info) -> list:
    return [d.dim_param or d.dim_value for d in value_info.type.tensor_type.shape.dim]


def test_graph_interface(onnx_path) -> None:
    graph_model = onnx.load(str(onnx_path))
    onnx.checker.check_model(graph_model, full_check=True)
    opset = next(o.version for o in graph_model.opset_import if o.domain in ("", "ai.onnx"))
    assert opset >= 17
    (images,) = graph_model.graph.input
    assert images.name == "images"
    assert images.type.tensor_type.elem_type == onnx.TensorProto.UINT8
    batch_axis = _dims(images)[0]
    assert isinstance(batch_axis, str) and _dims(images)[1:] == [224, 224, 3]
    outputs = {o.name: o for o in graph_model.graph.output}
    assert set(outputs) == {"logits", "features"}
    assert _dims(outputs["logits"])[1:] == [2]
    assert _dims(outputs["features"])[1:] == [512, 7, 7]
    assert all(o.type.tensor_type.elem_type == onnx.TensorProto.FLOAT for o in outputs.values())
    assert not list(onnx_path.parent.glob("*.data")), "weights must be inline, one file"


def test_onnxruntime_matches_pytorch_on_real_faces(onnx_path, seeded_model) -> None:
    batch = prepare_batch([decode_image(p) for p in val_image_paths(per_class=6)])
    session = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    ort_logits, ort_features = session.run(["logits", "features"], {"images": batch})
    with torch.no_grad():
        torch_logits, torch_features = MaskNetUint8(seeded_model)(torch.from_numpy(batch))
    assert relative_error(ort_logits, torch_logits.numpy()) < 1e-4
    assert relative_error(ort_features, torch_features.numpy()) < 1e-4
    # Real, varied faces: the comparison is not between two constant tensors.
    assert np.ptp(ort_logits[:, 0]) > 0 and np.ptp(ort_features) > 0


@pytest.mark.parametrize("batch_size", [1, 3])
def test_dynamic_batch(onnx_path, batch_size: int) -> None:
    session = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    images = np.random.default_rng(batch_size).integers(0, 256, (batch_size, 224, 224, 3),
                                                         dtype=np.uint8)
    logits, features = session.run(None, {"images": images})
    assert logits.shape == (batch_size, 2) and features.shape == (batch_size, 512, 7, 7)


def test_export_verb_writes_checkpoint_graph(tmp_path, seeded_model, capsys) -> None:
    checkpoint = save_checkpoint(seeded_model, tmp_path / "model.pt")
    out = tmp_path / "cli.onnx"
    assert cli_main(["export", "--model", str(checkpoint), "--out", str(out)]) == 0
    assert "wrote" in capsys.readouterr().out
    session = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"])
    images = np.random.default_rng(0).integers(0, 256, (2, 224, 224, 3), dtype=np.uint8)
    logits, _ = session.run(["logits", "features"], {"images": images})
    with torch.no_grad():
        expected, _ = MaskNetUint8(load_checkpoint(checkpoint))(torch.from_numpy(images))
    assert relative_error(logits, expected.numpy()) < 1e-4
