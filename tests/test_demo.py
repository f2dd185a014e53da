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


def _overlap(a: list[int], b: list[int]) -> float:
    """Intersection over union of two [x0, y0, x1, y1] boxes."""
    w = min(a[2], b[2]) - max(a[0], b[0])
    h = min(a[3], b[3]) - max(a[1], b[1])
    inter = max(0, w) * max(0, h)
    area = lambda box: (box[2] - box[0]) * (box[3] - box[1])  # noqa: E731
    return inter / (area(a) + area(b) - inter)


def test_demo_finds_the_faces_of_a_photo_and_decides_an_image_without_one_whole(tmp_path,
                                                                                  capsys) -> None:
    """A photo of two people gets one decision per face (it used to be decided as one face); an
    image the detector finds no face in is decided whole, as the face crop it is taken for;
    --regions frame decides every image whole."""
    import numpy as np

    images = tmp_path / "images"
    images.mkdir()
    masked = cv2.imread(str(SAMPLES_DIR / "with_mask_019fca422dfed689.jpg"))
    bare = cv2.imread(str(SAMPLES_DIR / "without_mask_04112417f69424dd.jpg"))
    photo = np.full((300, 420, 3), 128, np.uint8)  # the two faces pasted on a plain wall
    photo[40:40 + masked.shape[0], 30:30 + masked.shape[1]] = masked
    photo[100:100 + bare.shape[0], 220:220 + bare.shape[1]] = bare
    pasted = {"with_mask": [30, 40, 30 + masked.shape[1], 40 + masked.shape[0]],
              "without_mask": [220, 100, 220 + bare.shape[1], 100 + bare.shape[0]]}
    cv2.imwrite(str(images / "photo.png"), photo)
    ramp = np.tile(np.linspace(0, 255, 64).astype(np.uint8)[None, :, None], (64, 1, 3))
    cv2.imwrite(str(images / "ramp.png"), ramp)  # no face in it for the detector
    out = tmp_path / "o"
    assert cli_main(["demo", "--images", str(images), "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    summary = json.loads((out / "summary.json").read_text())
    entries = {e["image"].rsplit("/", 1)[1]: e for e in summary["results"]}
    found = entries["photo.png"]
    assert found["whole_image"] is False and len(found["faces"]) >= 2
    for truth, box in pasted.items():  # each face found where it is, with its own decision
        face = max(found["faces"], key=lambda f: _overlap(f["box"], box))
        assert _overlap(face["box"], box) > 0.4, (truth, found["faces"])
        assert face["p_with_mask"] + face["p_without_mask"] == pytest.approx(1.0, abs=1e-5)
        if has_shipped_weights():
            assert face["label"] == truth
    assert cv2.imread(found["overlay"]).shape == (300, 840, 3)
    whole = entries["ramp.png"]
    assert whole["whole_image"] is True and whole["faces"] == []
    assert whole["label"] in ("with_mask", "without_mask")
    assert summary["faces"] == len(found["faces"]) and summary["whole_images"] == 1
    row = next(line for line in printed.splitlines() if line.startswith("ramp.png"))
    assert row.split()[5] == "whole"
    row = next(line for line in printed.splitlines() if line.startswith("photo.png"))
    assert row.split()[5] == str(len(found["faces"]))

    assert cli_main(["demo", "--images", str(images), "--out", str(out), "--regions",
                     "frame"]) == 0
    summary = json.loads((out / "summary.json").read_text())
    assert [e["whole_image"] for e in summary["results"]] == [True, True]
    assert summary["faces"] == 0 and summary["whole_images"] == 2
