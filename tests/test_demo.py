"""maskrt demo: the README's main job on the shipped sample faces."""

from __future__ import annotations

import json

import cv2
import pytest

from maskrt.cli import main as cli_main
from maskrt.graph.model import has_shipped_weights
from maskrt.samples import SAMPLES_DIR


def test_demo_writes_overlays_and_summary(tmp_path, capsys) -> None:
    out = tmp_path / "demo"
    assert cli_main(["demo", "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    summary = json.loads((out / "summary.json").read_text())
    samples = sorted(SAMPLES_DIR.glob("*.jpg"))
    assert summary["images"] == len(samples) == len(summary["results"])
    for entry, sample in zip(summary["results"], samples):
        panel = cv2.imread(entry["overlay"])
        frame = cv2.imread(str(sample))
        # the frame beside its overlay, at the frame's own size
        assert panel.shape == (frame.shape[0], 2 * frame.shape[1], 3)
        assert entry["p_with_mask"] + entry["p_without_mask"] == pytest.approx(1.0, abs=1e-5)
        assert entry["label"] in printed
        # the samples are named after their class: the truth is known and shown beside it
        truth = "without_mask" if sample.name.startswith("without_mask") else "with_mask"
        assert entry["truth"] == truth and entry["correct"] == (entry["label"] == truth)
        row = next(line for line in printed.splitlines() if line.startswith(sample.name))
        assert row.split()[1:3] == [entry["label"], truth]
    right = sum(entry["correct"] for entry in summary["results"])
    assert summary["truth_known"] == len(samples) and summary["right"] == right
    assert f"{right} of {len(samples)} right" in printed
    if has_shipped_weights():
        assert summary["model"] == "trained" and "RANDOMLY" not in printed
    else:
        assert summary["model"].startswith("random-init") and "RANDOMLY INITIALISED" in printed


def test_demo_on_an_empty_folder_says_so(tmp_path, capsys) -> None:
    assert cli_main(["demo", "--images", str(tmp_path), "--out", str(tmp_path / "o")]) == 2
    assert "no images" in capsys.readouterr().err


def test_demo_bad_backend_option_is_a_clear_error(tmp_path, capsys) -> None:
    code = cli_main(["demo", "--out", str(tmp_path / "o"), "--backend-option", "threads=0x"])
    assert code == 2
    err = capsys.readouterr().err
    assert err.startswith("maskrt demo: --backend-option threads:") and "Traceback" not in err
    assert not (tmp_path / "o").exists()


def test_demo_skips_unreadable_images_saying_why(tmp_path, capsys) -> None:
    images = tmp_path / "images"
    images.mkdir()
    sample = sorted(SAMPLES_DIR.glob("*.jpg"))[0]
    (images / sample.name).write_bytes(sample.read_bytes())
    (images / "broken.jpg").write_bytes(b"\xff\xd8\xff not a jpeg")
    assert cli_main(["demo", "--images", str(images), "--out", str(tmp_path / "o")]) == 0
    assert f"maskrt demo: skipping {images / 'broken.jpg'}: truncated JPEG" in capsys.readouterr().err
    summary = json.loads((tmp_path / "o" / "summary.json").read_text())
    assert [entry["image"] for entry in summary["results"]] == [str(images / sample.name)]


@pytest.mark.parametrize("path, truth", [
    ("with_mask_004a.jpg", "with_mask"),
    ("without_mask_0297.jpg", "without_mask"),
    ("without_mask.png", "without_mask"),
    ("with_maskless.jpg", None),           # a class name must end at a separator
    ("face.jpg", None),
    ("without_mask/face.jpg", "without_mask"),
    ("with_mask/without_mask_1.jpg", "with_mask"),  # the folder wins
])
def test_true_label_from_the_file_name_or_folder(path, truth) -> None:
    from pathlib import Path

    from maskrt.cli.demo import true_label

    assert true_label(Path("/data") / path) == truth


def test_demo_counts_only_images_whose_truth_is_known(tmp_path, capsys) -> None:
    images = tmp_path / "with_mask"  # the folder names the class of what is in it
    images.mkdir()
    samples = sorted(SAMPLES_DIR.glob("with_mask_*.jpg"))[:2]
    (images / "face.jpg").write_bytes(samples[0].read_bytes())
    (images / samples[1].name).write_bytes(samples[1].read_bytes())
    assert cli_main(["demo", "--images", str(images), "--out", str(tmp_path / "o")]) == 0
    printed = capsys.readouterr().out
    summary = json.loads((tmp_path / "o" / "summary.json").read_text())
    assert [e["truth"] for e in summary["results"]] == ["with_mask", "with_mask"]
    assert f"{summary['right']} of 2 right" in printed

    unlabelled = tmp_path / "mixed"
    unlabelled.mkdir()
    (unlabelled / "face.jpg").write_bytes(samples[0].read_bytes())
    (unlabelled / samples[1].name).write_bytes(samples[1].read_bytes())
    assert cli_main(["demo", "--images", str(unlabelled), "--out", str(tmp_path / "o2")]) == 0
    printed = capsys.readouterr().out
    summary = json.loads((tmp_path / "o2" / "summary.json").read_text())
    face = next(e for e in summary["results"] if e["image"].endswith("face.jpg"))
    assert face["truth"] is None and face["correct"] is None
    assert summary["truth_known"] == 1
    assert f"{summary['right']} of 1 right (1 without a known label not counted)" in printed
