"""``maskrt check``: the metrics on known inputs, the image loading, and the verb end to end."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
import torch

from maskrt.backends.tensorrt import versions as trt_compat
from maskrt.cli import main as cli_main
from maskrt.graph.model import MaskNet
from maskrt.samples import SAMPLES_DIR
from maskrt.tools.check import (
    compare,
    label_from_name,
    load_check_images,
    logits_relative_error,
    run_check,
)


@pytest.fixture(scope="module")
def outputs():
    rng = np.random.default_rng(0)
    logits = rng.normal(size=(6, 2)).astype(np.float32) * 4
    features = rng.random((6, 512, 7, 7), dtype=np.float32)
    weight = rng.normal(size=(2, 512)).astype(np.float32)
    return logits, features, weight


def test_identical_outputs_agree_fully(outputs) -> None:
    logits, features, weight = outputs
    metrics = compare(logits, features, logits, features, weight, names=list("abcdef"))
    assert metrics["label_agreement"] == 1.0 and metrics["passed"]
    assert metrics["logits_rel_err_max"] == 0.0 and metrics["heatmap_err_max"] == 0.0
    assert metrics["disagreements"] == [] and "accuracy" not in metrics


def test_a_flipped_label_is_reported_with_its_margin(outputs) -> None:
    logits, features, weight = outputs
    flipped = logits.copy()
    flipped[2] = flipped[2, ::-1]
    labels = np.array([-1, -1, 0, 1, 0, 1])
    metrics = compare(flipped, features, logits, features, weight, names=list("abcdef"),
                      labels=labels)
    assert metrics["label_agreement"] == pytest.approx(5 / 6) and not metrics["passed"]
    [item] = metrics["disagreements"]
    assert item["image"] == "c"
    assert item["reference_margin"] == pytest.approx(abs(logits[2, 0] - logits[2, 1]))
    assert metrics["accuracy"]["labelled_images"] == 4
    lenient = compare(flipped, features, logits, features, weight, names=list("abcdef"),
                      min_agreement=0.8)
    assert lenient["passed"]


def test_feature_noise_shows_in_the_heatmap_error(outputs) -> None:
    logits, features, weight = outputs
    noisy = features + np.random.default_rng(1).normal(0, 0.05, features.shape).astype(np.float32)
    metrics = compare(logits, noisy, logits, features, weight, names=list("abcdef"))
    assert 0 < metrics["heatmap_err_mean"] <= metrics["heatmap_err_max"] <= 1


def test_logits_relative_error_is_per_image_and_scale_free() -> None:
    reference = np.array([[10.0, -20.0], [0.5, 0.25]])
    logits = np.array([[10.0, -19.0], [0.5, 0.3]])
    np.testing.assert_allclose(logits_relative_error(logits, reference), [1 / 20, 0.05 / 0.5])
    np.testing.assert_allclose(logits_relative_error(reference * 1e3 + 1, reference * 1e3 + 1), 0)


def test_labels_from_sample_names() -> None:
    assert label_from_name("with_mask_004a.jpg") == 0
    assert label_from_name("without_mask_00cd.jpg") == 1
    assert label_from_name("face.jpg") == -1


def test_loads_flat_folders_and_imagefolder_trees(tmp_path) -> None:
    flat = load_check_images(SAMPLES_DIR)
    assert flat.images.shape == (8, 224, 224, 3) and flat.images.dtype == np.uint8
    assert sorted(flat.labels.tolist()) == [0] * 4 + [1] * 4
    for name in ("with_mask", "without_mask"):
        (tmp_path / name).mkdir()
        for path in sorted(SAMPLES_DIR.glob(f"{name}_*.jpg"))[:2]:
            shutil.copy(path, tmp_path / name / path.name)
    tree = load_check_images(tmp_path, limit=3)
    assert tree.images.shape[0] == 3 and tree.labels.tolist() == [0, 0, 1]
    assert tree.names[0].startswith("with_mask/")
    with pytest.raises(FileNotFoundError, match="no such folder"):
        load_check_images(tmp_path / "missing")


def test_check_verb_torch_cpu_passes_and_writes_json(tmp_path, capsys) -> None:
    report = tmp_path / "check.json"
    code = cli_main(["check", "--backend", "torch", "--backend-option", "device=cpu", "--limit", "4",
                     "--json", str(report)])
    out = capsys.readouterr().out
    assert code == 0, out
    assert "label agreement" in out and "PASS" in out
    data = json.loads(report.read_text())
    assert data["images"] == 4 and data["label_agreement"] == 1.0
    assert data["logits_rel_err_max"] < 1e-4 and data["heatmap_err_max"] < 1e-3
    assert data["backend"].startswith("torch") and data["reference"].startswith("onnxruntime")


@pytest.mark.parametrize("argv, message", [
    (["--batch", "0"], "expected --batch >= 1"),
    (["--min-agreement", "1.5"], "expected a fraction in [0, 1], got 1.5"),
    (["--data", "/nonexistent/folder"], "no such folder"),
    (["--backend-option", "threads=2"], "backend torch: unknown option(s) ['threads']"),
    (["--backend-option", "half=maybe"], "--backend-option half: expected true/false, got 'maybe'"),
    (["--backend-option", "device"], "--backend-option: expected KEY=VALUE, got 'device'"),
])
def test_check_verb_rejects_bad_arguments(argv, message, capsys) -> None:
    assert cli_main(["check", "--backend-option", "device=cpu", *argv]) == 2
    assert message in capsys.readouterr().out


@pytest.mark.skipif(trt_compat.tensorrt_status()[0], reason="TensorRT is installed here")
def test_check_verb_tensorrt_without_tensorrt_says_why(capsys) -> None:
    assert cli_main(["check", "--backend", "tensorrt", "--limit", "2"]) == 2
    assert "pip install tensorrt" in capsys.readouterr().out


def test_run_check_gives_both_backends_one_graph(monkeypatch) -> None:
    """One Graph for the candidate and the reference: one export, CAM weights read once."""
    import maskrt.backends

    created = []
    create_backend = maskrt.backends.create_backend

    def recording_create_backend(name, model=None, **options):
        backend = create_backend(name, model, **options)
        created.append(backend)
        return backend

    monkeypatch.setattr(maskrt.backends, "create_backend", recording_create_backend)
    torch.manual_seed(3)
    net = MaskNet().eval()
    report = run_check("torch", load_check_images(SAMPLES_DIR, limit=2), model=net,
                       options={"device": "cpu"})
    candidate, reference = created
    assert candidate.name == "torch" and reference.name == "onnxruntime"
    assert candidate.graph is reference.graph
    assert candidate.cam_weights is reference.cam_weights
    assert report.passed and report.images == 2
