"""Big, reduced and hostile images (issue 19, items 8, 10 and 13): headers are read before
anything is decoded, so a decompression bomb or a huge file fails unread with a plain reason and
a folder of them stays in bounded memory; records of an image decoded smaller give boxes in the
original's pixels; OpenCV's refusals read as plain reasons and libpng's and libjpeg's own lines
stay off stderr."""

from __future__ import annotations

import base64
import json
import os
import struct
import subprocess
import sys
import textwrap
import threading
import time
import zlib
from pathlib import Path

import cv2
import numpy as np
import pytest

from maskrt import image
from maskrt.cli import main as cli_main
from maskrt.image import (MAX_PIXELS, ImageError, decode_image, decode_with_size, image_header,
                          read_image_file)
from maskrt.stream.annotate import annotate_faces
from maskrt.stream.mqtt import face_jpeg
from maskrt.stream.pipeline import Pipeline
from maskrt.stream.records import Record, Reduction
from maskrt.stream.sources import FolderSource
from maskrt.stream.sources.base import Frame, Source
from streaming_fixtures import (REPO, cache_dir, check_accounting, face_paths, has_cam_kernel,
                                read_jsonl, run_pipeline, shared_engine)
from test_decoder import STORED, _upright, _with_orientation

SCENES = REPO.parent / "shared" / "data" / "scenes" / "val" / "images"


def solid_webp(width: int, height: int, bgr: tuple[int, int, int] = (40, 80, 120)) -> bytes:
    """A valid lossless WebP of one colour in 32 bytes, at any size up to 16384x16384: no
    transforms, and five prefix codes of one symbol each (green, red, blue, alpha, distance),
    so every pixel takes 0 bits. What a decompression bomb looks like."""
    fields = [(0x2F, 8), (width - 1, 14), (height - 1, 14), (0, 1), (0, 3),  # header, version 0
              (0, 1), (0, 1), (0, 1)]  # no transform, no colour cache, no meta prefix codes
    for symbol in (bgr[1], bgr[2], bgr[0], 255):  # simple code, 1 symbol, 8 bits, the symbol
        fields += [(1, 1), (0, 1), (1, 1), (symbol, 8)]
    fields += [(1, 1), (0, 1), (0, 1), (0, 1)]  # distance: simple code, 1 symbol, 1 bit: 0
    value = shift = 0
    for field_value, bits in fields:
        value |= field_value << shift
        shift += bits
    payload = value.to_bytes((shift + 7) // 8, "little")
    payload += b"\0" * (len(payload) % 2)
    chunk = b"VP8L" + struct.pack("<I", len(payload)) + payload
    return b"RIFF" + struct.pack("<I", 4 + len(chunk)) + b"WEBP" + chunk


def tiff_header(width: int, height: int) -> bytes:
    """A little-endian TIFF whose first directory says width x height, 8-bit gray, one
    uncompressed strip that is not there (the header is all that is read)."""
    entries = [(256, 4, width), (257, 4, height), (258, 3, 8), (259, 3, 1), (262, 3, 1),
               (273, 4, 8), (277, 3, 1), (278, 4, height), (279, 4, width * height)]
    ifd = struct.pack("<H", len(entries)) + b"".join(
        struct.pack("<HHI", tag, kind, 1) + (struct.pack("<HH", value, 0) if kind == 3
                                             else struct.pack("<I", value))
        for tag, kind, value in entries) + struct.pack("<I", 0)
    return b"II*\0" + struct.pack("<I", 8) + ifd


# --------------------------------------------------------------------------- headers first

ENCODED = [(".png", 3), (".jpg", 3), (".webp", 3), (".tiff", 3), (".bmp", 3), (".ppm", 3),
           (".pgm", 1), (".pbm", 1), (".pam", 3), (".sr", 3), (".gif", 3), (".avif", 3),
           (".jp2", 3), (".pfm", "float"), (".hdr", "float")]


@pytest.mark.parametrize("ext, channels", ENCODED, ids=[e for e, _ in ENCODED])
def test_headers_give_the_size_of_every_format_opencv_decodes(ext, channels):
    rng = np.random.default_rng(0)
    picture = (rng.random((93, 157, 3)) * 255).astype(np.uint8)  # not square: w, h not swapped
    if channels == 1:
        picture = picture[:, :, 0]
    elif channels == "float":
        picture = picture.astype(np.float32) / 255.0
    ok, encoded = cv2.imencode(ext, picture)
    assert ok, ext
    data = encoded.tobytes()
    kind, size = image_header(data)
    assert size == (157, 93), (ext, kind)
    if ext == ".jp2":  # also the raw codestream inside it
        assert image_header(data[data.find(b"\xff\x4f\xff\x51"):])[1] == (157, 93)


def test_headers_crafted_by_hand():
    big_tiff = (b"II+\0" + struct.pack("<HHQ", 8, 0, 16) + struct.pack("<Q", 2)
                + struct.pack("<HHQQ", 256, 16, 1, 70000) + struct.pack("<HHQQ", 257, 3, 1, 900))
    assert image_header(big_tiff) == ("TIFF", (70000, 900))
    assert image_header(tiff_header(20000, 20000)) == ("TIFF", (20000, 20000))
    commented = b"P5\n# made by hand\n  640 # width\n480\n255\n" + bytes(10)
    assert image_header(commented) == ("PNM", (640, 480))
    top_down = bytearray(cv2.imencode(".bmp", np.zeros((30, 20, 3), np.uint8))[1].tobytes())
    top_down[22:26] = struct.pack("<i", -30)  # a negative height: rows stored top-down
    assert image_header(bytes(top_down)) == ("BMP", (20, 30))
    assert image_header(b"#?RADIANCE\nFORMAT=32-bit_rle_rgbe\n\n-Y 480 +X 640\n") == \
        ("Radiance HDR", (640, 480))
    assert image_header(solid_webp(16383, 9)) == ("WebP", (16383, 9))
    assert image_header(b"plain text, not an image") is None
    # A known format whose header gives no size is refused undecoded: it could be a bomb.
    no_frame = b"\xff\xd8\xff\xe0" + bytes(range(1, 250)) + b"\xff\xd9"
    assert image_header(no_frame) == ("JPEG", None)
    with pytest.raises(ImageError, match=r"^x.jpg: not a decodable image \(255 bytes; a corrupt "
                                         r"JPEG header: expected the image size in it\)$"):
        decode_image(no_frame, what="x.jpg")


def test_a_webp_bomb_is_refused_from_its_header_at_once(tmp_path):
    bomb = tmp_path / "bomb.webp"
    bomb.write_bytes(solid_webp(16383, 16383))
    assert bomb.stat().st_size == 32
    small = decode_image(solid_webp(64, 48))  # the same kind of file, small: decodes
    assert small.shape == (48, 64, 3) and (small == (40, 80, 120)).all()
    start = time.perf_counter()
    with pytest.raises(ImageError) as raised:
        decode_image(bomb)  # decoded, 1.8 GB and 12 s
    assert time.perf_counter() - start < 1.0
    assert str(raised.value) == (
        f"{bomb}: image too large: its WebP header says 16383x16383 = 268402689 pixels, the "
        f"limit is {MAX_PIXELS} (max_pixels; maskrt score --max-pixels)")
    face = face_paths(1)[0]
    w, h = cv2.imread(str(face)).shape[1::-1]
    with pytest.raises(ImageError, match=rf"says {w}x{h} = {w * h} pixels, the limit is 1000 "):
        decode_image(face, max_pixels=1000)
    assert decode_image(face, max_pixels=w * h).shape == (h, w, 3)


def test_a_file_over_the_size_limit_is_refused_unread(tmp_path, monkeypatch):
    sparse = tmp_path / "huge.png"
    with open(sparse, "wb") as f:
        f.truncate(2**31)  # 2 GiB that take no disk
    expected = (f"{sparse}: file too large for an image: expected at most 268435456 bytes "
                "(256 MiB), got 2147483648 bytes (2048 MiB)")
    start = time.perf_counter()
    with pytest.raises(ImageError) as raised:
        decode_image(sparse)
    assert str(raised.value) == expected and time.perf_counter() - start < 1.0
    with pytest.raises(ImageError, match="file too large"):
        read_image_file(sparse)
    # The folder reader checks too, before reading (the limit is read when a file is).
    face = tmp_path / "face.jpg"
    face.write_bytes(face_paths(1)[0].read_bytes())
    frames = list(FolderSource(tmp_path).frames(threading.Event()))
    assert [f.error for f in frames] == [None, expected]
    monkeypatch.setattr(image, "MAX_FILE_BYTES", 100)
    first = next(iter(FolderSource(tmp_path).frames(threading.Event())))
    assert first.data is None and "expected at most 100 bytes" in first.error


# The peak is VmHWM, this process's own high-water mark: getrusage's ru_maxrss would count the
# memory pytest had when it started the process.
MEASURED_RUN = textwrap.dedent("""
    import json, re, sys
    from maskrt.cli import main
    status = main(["score", sys.argv[1], "--out", sys.argv[2], "--regions", "frame",
                   "--progress-interval", "0"])
    status_text = open("/proc/self/status").read()
    peak_mb = int(re.search(r"VmHWM:\\s+(\\d+) kB", status_text)[1]) / 1024
    print(json.dumps({"status": status, "peak_mb": peak_mb}))
""")


@pytest.mark.skipif(not Path("/proc/self/status").is_file(), reason="peak memory read from /proc")
def test_a_folder_of_bombs_fails_each_in_bounded_memory(tmp_path):
    folder = tmp_path / "drop"
    folder.mkdir()
    (folder / "a_bomb.webp").write_bytes(solid_webp(16383, 16383))  # decoded: 1.8 GB
    (folder / "b_big.tif").write_bytes(tiff_header(20000, 20000))  # decoded: 2.46 GB
    with open(folder / "c_sparse.jpg", "wb") as f:
        f.truncate(2**31)  # read whole: 2.3 GB
    (folder / "d_face.jpg").write_bytes(face_paths(1)[0].read_bytes())
    out = tmp_path / "out"
    env = {**os.environ, "MASKRT_CACHE_DIR": cache_dir()}
    run = subprocess.run([sys.executable, "-c", MEASURED_RUN, str(folder), str(out)], env=env,
                         capture_output=True, text=True, timeout=300, cwd=REPO)
    assert run.returncode == 0, run.stderr
    result = json.loads(run.stdout.splitlines()[-1])
    assert result["status"] == 0
    assert result["peak_mb"] < 400, result  # a run of small images alone: about 120 MB
    reasons = {Path(r["uri"]).name: r["reason"] for r in read_jsonl(out / "records.jsonl")}
    assert reasons == {
        "a_bomb.webp": f"{folder / 'a_bomb.webp'}: image too large: its WebP header says "
                       f"16383x16383 = 268402689 pixels, the limit is {MAX_PIXELS} (max_pixels; "
                       "maskrt score --max-pixels)",
        "b_big.tif": f"{folder / 'b_big.tif'}: image too large: its TIFF header says "
                     f"20000x20000 = 400000000 pixels, the limit is {MAX_PIXELS} (max_pixels; "
                     "maskrt score --max-pixels)",
        "c_sparse.jpg": f"{folder / 'c_sparse.jpg'}: file too large for an image: expected at "
                        "most 268435456 bytes (256 MiB), got 2147483648 bytes (2048 MiB)",
        "d_face.jpg": None}


def test_score_takes_max_pixels(tmp_path, capsys):
    face = tmp_path / "face.jpg"
    face.write_bytes(face_paths(1)[0].read_bytes())
    out = tmp_path / "out"
    assert cli_main(["score", str(face), "--out", str(out), "--regions", "frame",
                     "--max-pixels", "1000", "--progress-interval", "0"]) == 0
    (record,) = read_jsonl(out / "records.jsonl")
    assert record["status"] == "failed" and "the limit is 1000 (max_pixels" in record["reason"]
    assert "--max-pixels N" in cli_help("score")
    capsys.readouterr()


def cli_help(verb: str) -> str:
    run = subprocess.run([sys.executable, "-m", "maskrt", verb, "--help"], capture_output=True,
                         text=True, timeout=60, cwd=REPO)
    return run.stdout


# --------------------------------------------------------------------------- OpenCV's refusals

def _png_saying(width: int, height: int) -> bytes:
    """A small PNG whose header (with a valid CRC, so libpng believes it) says width x height."""
    png = bytearray(cv2.imencode(".png", np.full((16, 16, 3), 90, np.uint8))[1].tobytes())
    png[16:24] = struct.pack(">II", width, height)
    png[29:33] = struct.pack(">I", zlib.crc32(bytes(png[12:29])))
    return bytes(png)


def test_opencv_refusals_read_as_plain_reasons(monkeypatch):
    with pytest.raises(ImageError) as raised:  # was a cv2.error: "pixels <= CV_IO_MAX_IMAGE..."
        decode_image(_png_saying(40000, 40000), what="wide.png", max_pixels=None)
    assert str(raised.value) == ("wide.png: image too large: 40000x40000 is 1600000000 pixels, "
                                 "more than OpenCV decodes (OPENCV_IO_MAX_IMAGE_PIXELS, "
                                 "1073741824 by default)")
    try:  # the error OpenCV gives an empty buffer (maskrt never passes one: mapped all the same)
        cv2.imdecode(np.zeros(0, np.uint8), cv2.IMREAD_COLOR)
        pytest.fail("OpenCV decoded an empty buffer")
    except cv2.error as err:
        empty = err

    def refuse(*args):
        raise empty

    monkeypatch.setattr(image.cv2, "imdecode", refuse)
    with pytest.raises(ImageError) as raised:
        decode_image(b"\x01\x02\x03", what="odd.bin")
    assert str(raised.value) == "odd.bin: empty or unreadable image data (3 bytes)"
    assert "Assertion" not in str(raised.value) and "buf" not in str(raised.value)


def _corrupt(ext: str, n: int, seed: int = 1) -> list[bytes]:
    """n copies of a noisy image as ext, each with a few bytes changed after the header: PNGs
    then fail their CRC ("libpng error: IDAT: CRC error"), JPEGs decode with a warning
    ("Corrupt JPEG data: ... extraneous bytes")."""
    rng = np.random.default_rng(seed)
    picture = (rng.random((120, 160, 3)) * 255).astype(np.uint8)
    data = cv2.imencode(ext, picture)[1].tobytes()
    out = []
    for _ in range(n):
        changed = bytearray(data)
        for at in rng.integers(len(data) // 2, len(data) - 32, 5):  # past the headers
            changed[at] ^= 0x5A
        out.append(bytes(changed))
    return out


DECODER_LINES = ("libpng", "Corrupt JPEG", "Premature end of JPEG")


def test_decoder_lines_stay_off_the_stderr_of_a_run(tmp_path):
    folder = tmp_path / "fuzzed"
    folder.mkdir()
    for ext in (".png", ".jpg"):
        for k, data in enumerate(_corrupt(ext, 4)):
            (folder / f"{k}{ext}").write_bytes(data)
    env = {k: v for k, v in os.environ.items() if not k.startswith("OPENCV_")}
    env["MASKRT_CACHE_DIR"] = cache_dir()
    runs = {}
    for flags in ([], ["--debug"]):
        out = tmp_path / f"out{len(flags)}"
        runs[bool(flags)] = subprocess.run(
            [sys.executable, "-m", "maskrt", *flags, "score", str(folder), "--out", str(out),
             "--regions", "frame", "--progress-interval", "0.01"],
            env=env, capture_output=True, text=True, timeout=300, cwd=REPO)
        assert runs[bool(flags)].returncode == 0, runs[bool(flags)].stderr
    quiet, debug = runs[False].stderr, runs[True].stderr
    assert not [line for line in quiet.splitlines() if line.startswith(DECODER_LINES)], quiet
    assert "8 read" in quiet  # maskrt's own progress lines still come through
    # The files do make the decoders talk: --debug leaves their lines on.
    assert "libpng error" in debug and "Corrupt JPEG data" in debug
    failed = [r for r in read_jsonl(tmp_path / "out0" / "records.jsonl") if r["status"] == "failed"]
    assert failed and all("png" in r["uri"] and "not a decodable image" in r["reason"]
                          for r in failed)


CHATTY_DECODES = textwrap.dedent("""
    import ctypes, sys, threading, time
    from maskrt.cli.common import quiet_native_logs
    from maskrt.image import decode_image
    files = sys.argv[1:]
    done, written = threading.Event(), [0]
    libc = ctypes.CDLL(None)
    libc.fputs.argtypes = [ctypes.c_char_p, ctypes.c_void_p]
    c_stderr = ctypes.c_void_p.in_dll(libc, "stderr")

    def chatter():
        for i in range(100000):
            if done.is_set():
                return
            print(f"other thread line {i}", file=sys.stderr)
            libc.fputs(f"native line {i}\\n".encode(), c_stderr.value)  # as C code writes
            written[0] = i + 1
            time.sleep(0.0005)

    with quiet_native_logs():
        thread = threading.Thread(target=chatter)
        thread.start()
        rounds = 0
        while rounds < 10 or written[0] < 50:  # decodes while it talks, however slow it is
            for path in files:
                decode_image(path)
            rounds += 1
        done.set()
        thread.join()
    print("the end", file=sys.stderr)
""")


def test_other_threads_lines_pass_while_the_decoders_are_kept_quiet(tmp_path):
    """Python's lines (through fd 2) pass whole, in order and at once; another thread's C lines
    written during a decode pass too, after it."""
    paths = []
    for k, data in enumerate(_corrupt(".jpg", 6, seed=3)):
        paths.append(tmp_path / f"{k}.jpg")
        paths[-1].write_bytes(data)
    env = {k: v for k, v in os.environ.items() if not k.startswith("OPENCV_")}
    run = subprocess.run([sys.executable, "-c", CHATTY_DECODES, *map(str, paths)], env=env,
                         capture_output=True, text=True, timeout=120, cwd=REPO)
    assert run.returncode == 0, run.stderr
    lines = run.stderr.splitlines()
    assert lines[-1] == "the end" and not [x for x in lines if x.startswith(DECODER_LINES)]
    others = [x for x in lines[:-1] if x.startswith("other thread")]
    native = [x for x in lines[:-1] if x.startswith("native")]
    assert len(others) + len(native) == len(lines) - 1  # nothing else, nothing mangled
    assert len(others) >= 50  # it did talk while the decodes ran
    assert others == [f"other thread line {i}" for i in range(len(others))]  # all, in order
    assert sorted(native) == sorted(f"native line {i}" for i in range(len(others)))  # all


# --------------------------------------------------------------------------- reduced images

class _ArraySource(Source):
    """One in-memory frame (a camera's, say) larger than max_side."""

    kind = "arrays"

    def __init__(self, frame, **kw):
        self.frame = frame
        super().__init__(**kw)

    def frames(self, stop):
        yield Frame(0, 0.0, image=self.frame)


def test_whole_frame_boxes_of_reduced_images_are_in_the_originals_pixels(tmp_path):
    photo = tmp_path / "photo.jpg"  # 6000x4000: decoded at 1/2 straight from the JPEG
    assert cv2.imwrite(str(photo), cv2.resize(cv2.imread(str(face_paths(1)[0])), (6000, 4000)))
    wide = tmp_path / "wide.png"  # 5000x40: not a JPEG, decoded at full size, then halved
    assert cv2.imwrite(str(wide), np.full((40, 5000, 3), 90, np.uint8))
    turned = tmp_path / "turned.jpg"  # 4200x40 upright, stored turned: the header says 40x4200
    turned.write_bytes(_with_orientation(STORED[6](_upright(40, 4200)), 6))
    records, counters = run_pipeline(Pipeline(
        shared_engine(), [photo, wide, turned, _ArraySource(np.zeros((100, 5000, 3), np.uint8),
                                                             id="camera")], regions="frame"))
    check_accounting(records, counters)
    boxes = {Path(r.uri).name if r.uri else r.source_id: r.box for r in records}
    assert boxes == {"photo.jpg": [0, 0, 6000, 4000], "wide.png": [0, 0, 5000, 40],
                     "turned.jpg": [0, 0, 4200, 40], "camera": [0, 0, 5000, 100]}
    frames = {Path(r.uri).name if r.uri else r.source_id: r.frame_box for r in records}
    assert frames == {"photo.jpg": [0, 0, 3000, 2000], "wide.png": [0, 0, 2500, 20],
                      "turned.jpg": [0, 0, 2100, 20], "camera": [0, 0, 4096, 82]}
    assert decode_with_size(turned)[1] == (4200, 40)


def test_face_boxes_and_landmarks_of_a_reduced_photo_scale_back(tmp_path):
    scene = sorted(SCENES.glob("*.jpg"))[:1]
    if not scene:
        pytest.skip(f"no scene photos under {SCENES}")
    picture = cv2.imread(str(scene[0]))
    h, w = picture.shape[:2]
    k = 4400 / max(h, w)  # over 4096: decoded at 1/2, 2200 px
    big = tmp_path / "big.jpg"
    assert cv2.imwrite(str(big), cv2.resize(picture, (round(w * k), round(h * k))))
    decoded, original = decode_with_size(big)
    reduction = Reduction(original, (decoded.shape[1], decoded.shape[0]))
    assert reduction.decoded[0] < reduction.original[0] / 1.9
    engine = shared_engine()
    expected = engine.faces(decoded)  # the faces in the decoded frame, its pixels
    assert expected, "the scene should have faces"
    explain = has_cam_kernel()
    records, counters = run_pipeline(Pipeline(engine, [big], explain=explain))
    check_accounting(records, counters)
    got = sorted(records, key=lambda r: r.region_index)
    assert [r.frame_box for r in got] == [e.box for e in expected]
    assert [r.box for r in got] == [reduction.box(e.box) for e in expected]
    sx, sy = original[0] / decoded.shape[1], original[1] / decoded.shape[0]
    for record, face in zip(got, expected):
        want = [[x * sx, y * sy] for x, y in face.landmarks]
        np.testing.assert_allclose(record.landmarks, want, atol=0.06)
        x0, y0, x1, y1 = record.box
        assert 0 <= x0 < x1 <= original[0] and 0 <= y0 < y1 <= original[1]
    if explain:  # overlays are drawn on the decoded frame, with its boxes
        assert got[0].overlay.shape == decoded.shape
    # Tracked (the same photo three times: its faces become people), the best face's box in
    # tracks.jsonl is in the original's pixels too.
    folder = tmp_path / "again"
    folder.mkdir()
    for name in ("a.jpg", "b.jpg", "c.jpg"):
        (folder / name).write_bytes(big.read_bytes())
    records, _ = run_pipeline(Pipeline(engine, [folder], track="on"))
    ended = [e for r in records for e in r.events if e["event"] == "track_ended"]
    # (a confirmed track reports its faces below report_threshold too: every candidate counts)
    candidates = [reduction.box(f.box) for f in engine.faces(decoded, report_threshold=0)]
    assert ended and all(e["best_box"] in candidates for e in ended)


def test_sinks_draw_and_cut_with_the_frame_box():
    frame = np.zeros((100, 200, 3), np.uint8)
    frame[10:30, 20:60] = 255  # the face, in the decoded frame
    record = Record("s", 0, None, "scored", label="with_mask", p_with_mask=0.9,
                    p_without_mask=0.1, region_index=0, box=[40, 20, 120, 60], faces=1,
                    face_score=0.9, frame_box=[20, 10, 60, 30])
    crop = cv2.imdecode(np.frombuffer(base64.b64decode(face_jpeg(record, frame, None)), np.uint8),
                        cv2.IMREAD_COLOR)
    assert crop.shape == (20, 40, 3) and crop.mean() > 200  # the face, not what box says
    drawn = annotate_faces(np.zeros((100, 200, 3), np.uint8), [record])
    assert drawn[29, 59].any() and not drawn[59, 119].any()  # the frame box's corner, not box's
