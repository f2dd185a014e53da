"""One decoder: the same bad file gives the same failure reason through every path that reads
images (Engine, ``maskrt eval``, ``maskrt score``), and odd-but-valid images are converted."""

from __future__ import annotations

import json
import shutil

import cv2
import numpy as np
import pytest

from maskrt.cli import main as cli_main
from maskrt.image import ImageError, decode_image
from streaming_fixtures import face_paths, shared_engine


@pytest.fixture(scope="module")
def engine():
    return shared_engine()


def test_a_truncated_jpeg_fails_with_one_reason_everywhere(engine, tmp_path, capsys):
    data = tmp_path / "data"
    for name, path in zip(("with_mask", "without_mask"), face_paths(2)):
        (data / name).mkdir(parents=True)
        shutil.copy(path, data / name / "ok.jpg")
    cut = data / "with_mask" / "cut.jpg"
    whole = face_paths(1)[0].read_bytes()
    cut.write_bytes(whole[: len(whole) // 2])

    with pytest.raises(ImageError) as raised:
        engine.classify(str(cut))
    reason = str(raised.value)
    assert reason == f"{cut}: truncated JPEG (no end-of-image marker)"

    report = tmp_path / "eval.json"
    assert cli_main(["eval", str(data), "--json", str(report)]) == 0
    skipped = json.loads(report.read_text())["skipped_files"]
    assert skipped == [{"path": str(cut), "reason": reason}]

    out = tmp_path / "score"
    assert cli_main(["score", str(cut), "--out", str(out), "--progress-interval", "0"]) == 0  # faces
    (record,) = [json.loads(line) for line in (out / "records.jsonl").read_text().splitlines()]
    assert record["status"] == "failed" and record["reason"] == reason
    capsys.readouterr()


def test_odd_images_are_converted_and_huge_ones_bounded(tmp_path):
    face = cv2.imread(str(face_paths(1)[0]))
    rgba = cv2.imencode(".png", cv2.cvtColor(face, cv2.COLOR_BGR2BGRA))[1].tobytes()
    deep = cv2.imencode(".png", face.astype(np.uint16) * 257)[1].tobytes()
    assert np.array_equal(decode_image(rgba), face)
    assert np.array_equal(decode_image(deep), face)
    gray = decode_image(cv2.imencode(".png", face[:, :, 0])[1].tobytes())
    assert gray.shape == face.shape and np.array_equal(gray[:, :, 0], face[:, :, 0])
    big = cv2.resize(face, (5000, 3000))
    decoded = decode_image(cv2.imencode(".jpg", big)[1].tobytes(), max_side=1000)
    assert decoded.shape == (375, 625, 3)  # decoded at 1/8: the first reduction that fits
    huge = cv2.resize(face, (9000, 300))
    assert decode_image(cv2.imencode(".png", huge)[1].tobytes(), max_side=1000).shape == (33, 1000, 3)
    with pytest.raises(ImageError, match="not a decodable image"):
        decode_image(b"GIF89a but not really" * 10, what="odd.gif")
