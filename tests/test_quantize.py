"""INT8 graphs for ONNX Runtime: the shipped one is current and decides like the FP32 graph on
real faces; `maskrt quantize` makes one for any graph; stale or missing ones are refused, saying
how to make them."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest

from maskrt.backends import create_backend
from maskrt.backends.ort import int8_pays
from maskrt.graph import Graph
from maskrt.graph.quantize import SOURCE_SHA256_KEY, int8_path, int8_problem
from maskrt.graph.shipped import SHIPPED_ONNX
from tests.helpers import SHARED_DATA


def test_shipped_int8_graph_is_quantized_from_the_shipped_graph() -> None:
    """Regenerate with `maskrt quantize --onnx maskrt/models/maskrt_resnet18.onnx
    --calibration ../shared/data/facemask/train` whenever the shipped graph changes."""
    assert int8_problem(int8_path(SHIPPED_ONNX), SHIPPED_ONNX) is None


def _val_faces(n: int) -> tuple[np.ndarray, np.ndarray]:
    from maskrt.image import decode_image, resize_to_input

    if not SHARED_DATA.is_dir():
        pytest.skip(f"shared face data not found at {SHARED_DATA}")
    images, labels = [], []
    for label, name in enumerate(("with_mask", "without_mask")):
        for path in sorted((SHARED_DATA / "val" / name).glob("*.jpg"))[: n // 2]:
            images.append(resize_to_input(decode_image(path)))
            labels.append(label)
    return np.stack(images), np.array(labels)


def test_int8_backend_decides_like_fp32_on_real_faces() -> None:
    images, labels = _val_faces(96)
    with create_backend("onnxruntime", precision="fp32") as fp32, \
            create_backend("onnxruntime", precision="int8") as int8:
        assert int8.precision == "int8" and "int8" in int8.describe()
        want_logits, want_features = fp32.infer(images)
        logits, features = int8.infer(images)
    assert logits.dtype == np.float32 and features.dtype == np.float32
    assert features.shape == want_features.shape
    agreement = float((logits.argmax(1) == want_logits.argmax(1)).mean())
    assert agreement >= 0.98, f"INT8 and FP32 labels agree on {agreement:.1%} of {len(labels)} val faces"
    assert (logits.argmax(1) == labels).mean() >= 0.95
    assert not np.array_equal(logits, want_logits)  # it really ran the other graph


def test_quantize_verb_writes_the_twin_and_staleness_is_caught(tmp_path, capsys) -> None:
    from maskrt.cli import main
    from maskrt.graph.onnx_proto import read_metadata

    onnx_file = tmp_path / "graph.onnx"
    shutil.copyfile(SHIPPED_ONNX, onnx_file)
    calibration = Path(__file__).resolve().parents[1] / "maskrt" / "samples"
    with pytest.raises(ValueError, match=r"precision int8: no INT8 graph at .*graph_int8\.onnx \(make one "
                                         r"with `maskrt quantize"):
        Graph(onnx_file).int8_onnx_path()
    assert main(["quantize", "--onnx", str(onnx_file), "--calibration", str(calibration), "--count", "8"]) == 0
    assert "wrote" in capsys.readouterr().out
    twin = Graph(onnx_file).int8_onnx_path()
    assert twin == tmp_path / "graph_int8.onnx" and SOURCE_SHA256_KEY in read_metadata(twin)
    with create_backend("onnxruntime", Graph(onnx_file), precision="int8") as backend:
        logits, _ = backend.infer(np.zeros((1, 224, 224, 3), np.uint8))
        assert logits.shape == (1, 2)
    onnx_file.write_bytes(onnx_file.read_bytes() + b"\n")  # the source changes: the twin is stale
    with pytest.raises(ValueError, match="quantized from another graph"):
        Graph(onnx_file).int8_onnx_path()


def test_precision_option_is_checked(tmp_path, capsys) -> None:
    from maskrt.cli import main

    samples = str(Path(__file__).resolve().parents[1] / "maskrt" / "samples")
    assert main(["score", "--backend-option", "precision=fp16", "--regions", "frame", "--out", str(tmp_path),
                 samples]) == 2
    assert "--backend-option precision: expected auto, fp32 or int8, got 'fp16'" in capsys.readouterr().err


def test_quantize_without_enough_images_says_so(tmp_path) -> None:
    from maskrt.graph.quantize import calibration_images

    (tmp_path / "faces").mkdir()
    (tmp_path / "faces" / "broken.jpg").write_bytes(b"not a jpeg")
    with pytest.raises(ValueError, match=r"expected at least 1 readable images under .*faces, found 0"):
        calibration_images(tmp_path / "faces", count=1)


@pytest.mark.parametrize(("cpuinfo", "pays"), [
    ("processor\t: 0\nflags\t\t: fpu sse2 avx2 avx512f avx512_vnni\n", True),   # Cascade Lake+
    ("flags\t\t: fpu sse2 avx2 avx_vnni\n", True),                                # Alder Lake
    ("flags\t\t: fpu sse2 avx2 fma\n", False),                                    # AVX2 only
    ("processor\t: 0\nFeatures\t: fp asimd asimddp\n", True),                    # Arm dot product
    ("processor\t: 0\nFeatures\t: fp asimd\n", False),
    ("no flags line\n", True),                                                     # unknown: INT8
])
def test_int8_is_chosen_where_the_cpu_has_8_bit_dot_products(cpuinfo: str, pays: bool) -> None:
    assert int8_pays(cpuinfo) is pays


def test_auto_precision_follows_the_cpu() -> None:
    with create_backend("onnxruntime") as auto:
        assert auto.precision == ("int8" if int8_pays() else "fp32")
        assert auto.precision in auto.describe()
