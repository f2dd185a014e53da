"""One decoder: the same bad file gives the same failure reason through every path that reads
images (Engine, ``maskrt eval``, ``maskrt score``), and odd-but-valid images are converted."""

from __future__ import annotations

import json
import shutil
import struct

import cv2
import numpy as np
import pytest

from maskrt.cli import main as cli_main
from maskrt.image import ImageError, decode_image
from maskrt.stream.pipeline import Pipeline
from maskrt.stream.sources.base import Frame, Source
from streaming_fixtures import check_accounting, face_frames, face_paths, run_pipeline, shared_engine


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
        decode_image(b"GIF89a\x10\x00\x10\x00 but not really" * 10, what="odd.gif")
    # The header is read first: this one says 25120x29813 ("bu", "t ") and is refused unread.
    with pytest.raises(ImageError, match="image too large: its GIF header says 25120x29813"):
        decode_image(b"GIF89a but not really" * 10, what="odd.gif")


# ---- EXIF orientation, thin images, float frames

def _with_orientation(image: np.ndarray, orientation: int) -> bytes:
    """``image`` as a JPEG whose EXIF (APP1, big-endian TIFF, one IFD entry) says Orientation."""
    jpeg = cv2.imencode(".jpg", image)[1].tobytes()
    entry = struct.pack(">HHIHH", 0x0112, 3, 1, orientation, 0)  # tag, SHORT, count 1, value
    tiff = b"MM\x00\x2a" + struct.pack(">IH", 8, 1) + entry + struct.pack(">I", 0)
    payload = b"Exif\x00\x00" + tiff
    return jpeg[:2] + b"\xff\xe1" + struct.pack(">H", len(payload) + 2) + payload + jpeg[2:]


def _upright(h: int, w: int) -> np.ndarray:
    """Dark, with the top-left quarter bright: any rotation or flip moves the bright part."""
    image = np.full((h, w, 3), 30, np.uint8)
    image[: h // 2, : w // 2] = 220
    return image


def _bright_quarter(image: np.ndarray) -> str:
    h, w = image.shape[0] // 2, image.shape[1] // 2
    quarters = {"top-left": image[:h, :w], "top-right": image[:h, w:],
                "bottom-left": image[h:, :w], "bottom-right": image[h:, w:]}
    return max(quarters, key=lambda k: float(quarters[k].mean()))


# The stored pixels of an upright picture for each EXIF orientation: 3 = stored upside down,
# 6 = stored turned 90 degrees counter-clockwise (the viewer turns it clockwise).
STORED = {3: lambda up: cv2.rotate(up, cv2.ROTATE_180),
          6: lambda up: cv2.rotate(up, cv2.ROTATE_90_COUNTERCLOCKWISE)}


@pytest.mark.parametrize("orientation", sorted(STORED))
@pytest.mark.parametrize("h, w", [(48, 64), (4200, 40)])  # the full-size and the reduced path
def test_exif_orientation_is_applied_at_every_size(orientation, h, w):
    data = _with_orientation(STORED[orientation](_upright(h, w)), orientation)
    decoded = decode_image(data, max_side=4096)
    assert _bright_quarter(decoded) == "top-left"
    longer = max(h, w) if max(h, w) <= 4096 else max(h, w) // 2  # reduced: decoded at 1/2
    assert decoded.shape[:2] == (h * longer // max(h, w), w * longer // max(h, w))


@pytest.mark.parametrize("w, h", [(1, 5000), (3, 9000), (9000, 3)])
def test_thin_images_decode_and_classify(w, h, tmp_path):
    # Reduced decoding divides both sides: 1/2 of 1 px, or 1/4 of 3 px, was a 0-pixel side.
    path = tmp_path / "thin.png"
    assert cv2.imwrite(str(path), np.full((h, w, 3), 90, np.uint8))
    decoded = decode_image(path, max_side=4096)
    assert min(decoded.shape[:2]) >= 1 and max(decoded.shape[:2]) == 4096
    assert decoded.dtype == np.uint8 and decoded.shape[2] == 3
    for result in shared_engine().classify([decoded, str(path)]):
        assert result.label in ("with_mask", "without_mask")


FLOAT_REFUSED = (r"expected dtype uint8 \(BGR \[H, W, 3\]; or uint16, gray \[H, W\] or "
                 r"BGRA \[H, W, 4\]\), got float")


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_float_frames_are_refused_by_engine(dtype):
    engine = shared_engine()
    frame = face_frames(1)[0]
    assert engine.faces(frame, report_threshold=0.0)  # the same frame as uint8 has a face
    for call in (engine.classify, engine.faces):
        with pytest.raises(ValueError, match=FLOAT_REFUSED + rf"{np.finfo(dtype).bits}\b"):
            call(frame.astype(dtype))
        with pytest.raises(ValueError, match=FLOAT_REFUSED):
            call([frame, frame.astype(dtype) / 255.0])


def test_float_tensors_are_refused_like_float_arrays():
    torch = pytest.importorskip("torch")
    frame = torch.from_numpy(face_frames(1)[0])
    with pytest.raises(ValueError, match=FLOAT_REFUSED + "32"):
        shared_engine().classify(frame.float())
    with pytest.raises(ValueError, match=FLOAT_REFUSED + "16"):
        shared_engine().classify([frame.half()])


class _FloatFrameSource(Source):
    """Three frames, the middle one float64 (a user's camera wrapper that forgot to convert)."""

    kind = "float-frames"

    def frames(self, stop):
        frame = face_frames(1)[0]
        for i, image in enumerate((frame, frame.astype(np.float64) / 255.0, frame)):
            yield Frame(i, float(i), image=image)


def test_a_float_frame_fails_alone_in_a_pipeline():
    records, counters = run_pipeline(Pipeline(shared_engine(), [_FloatFrameSource(id="floats")],
                                              regions="frame"))
    by_index = {r.frame_index: r for r in check_accounting(records, counters)["floats"]}
    assert [by_index[i].status for i in range(3)] == ["scored", "failed", "scored"]
    assert by_index[1].reason == ("frame 1: expected dtype uint8 (BGR [H, W, 3]; or uint16, gray "
                                  "[H, W] or BGRA [H, W, 4]), got float64 (float frames are refused: "
                                  "convert to uint8 in 0..255 first)")
