"""Hostile folder contents: file names that are not valid UTF-8 (recorded in an escaped form, the
run goes on) and files that are clearly not media (skipped and counted, never read as frames)."""

from __future__ import annotations

import json
import os
import shutil
import threading
from pathlib import Path

import pytest

from maskrt.cli import main as cli_main
from maskrt.stream.sources import FolderSource
from maskrt.stream.sources.base import display_path
from streaming_fixtures import face_paths, shared_engine, write_video

#: a name with the byte 0xE9 (é in Latin-1), which is not UTF-8
ODD = b"caf\xe9"
#: how the odd name appears in ids, uris and messages
SHOWN = "caf\\xe9"


@pytest.fixture(scope="module", autouse=True)
def cached_graph():
    """Export the graph once (into MASKRT_CACHE_DIR), so every CLI run below only loads it."""
    return shared_engine()


def odd_path(folder: Path, suffix: bytes) -> Path:
    """A path in ``folder`` whose name is not valid UTF-8, as Python shows it (with a surrogate)."""
    return Path(os.fsdecode(os.path.join(os.fsencode(folder), ODD + suffix)))


def score(*argv: str) -> tuple[int, list[dict], dict]:
    """Runs ``maskrt score``; its exit status, records and summary, all read as strict UTF-8."""
    out = Path(argv[argv.index("--out") + 1])
    rc = cli_main(["score", *argv, "--regions", "frame", "--progress-interval", "0"])
    lines = (out / "records.jsonl").read_bytes().decode("utf-8").splitlines()
    summary = json.loads((out / "summary.json").read_bytes().decode("utf-8"))
    return rc, [json.loads(line) for line in lines], summary


def test_display_path_escapes_only_what_is_not_utf8() -> None:
    assert display_path("visage é.jpg") == "visage é.jpg"
    assert display_path(os.fsdecode(ODD + b".jpg")) == SHOWN + ".jpg"
    assert display_path(ODD + b".jpg") == SHOWN + ".jpg"
    assert display_path("x\ud800.jpg").encode("utf-8")  # a surrogate made by code, not a disk


def test_a_name_that_is_not_utf8_is_recorded_escaped_and_the_run_goes_on(tmp_path: Path) -> None:
    folder = tmp_path / "in"
    folder.mkdir()
    first, second = face_paths(2)
    with open(os.path.join(os.fsencode(folder), ODD + b".jpg"), "wb") as f:
        f.write(first.read_bytes())
    shutil.copy(second, folder / "z.jpg")
    rc, records, summary = score(str(folder), "--out", str(tmp_path / "out"))
    assert rc == 0
    assert [r["status"] for r in records] == ["scored", "scored"], records
    assert records[0]["uri"] == str(folder / (SHOWN + ".jpg"))  # read by its real name
    assert summary["accounting_ok"] is True
    assert summary["counts"] == {"read": 2, "scored": 2, "dropped": 0, "failed": 0}


def test_a_drop_folder_named_and_fed_oddly_keeps_running(tmp_path: Path) -> None:
    drop = odd_path(tmp_path, b"_drop")
    drop.mkdir()
    first, second = face_paths(2)
    shutil.copy(first, odd_path(drop, b".jpg"))
    (drop / "event.xml").write_text("<event/>")  # a camera's note beside its crop: skipped
    shutil.copy(second, drop / "z.jpg")
    rc, records, summary = score(f"drop:{drop}", "--out", str(tmp_path / "out"), "--settle", "0",
                                 "--frames", "2")
    assert rc == 0
    source_id = f"drop:{tmp_path / SHOWN}_drop"
    assert {r["source_id"] for r in records} == {source_id}
    assert sorted(Path(r["uri"]).name for r in records) == [SHOWN + ".jpg", "z.jpg"]
    assert all(r["status"] == "scored" for r in records), records
    assert summary["accounting_ok"] is True and summary["counts"]["scored"] == 2
    assert summary["sources"][source_id]["skipped_files"] == 1


def test_a_video_whose_name_is_not_utf8_is_read(tmp_path: Path) -> None:
    # OpenCV crashes the process on such a name: the source must never hand it over as it is.
    write_video(tmp_path / "clip.avi", 4, fps=8).rename(odd_path(tmp_path, b".avi"))
    frames = list(FolderSource(tmp_path).frames(threading.Event()))
    assert len(frames) == 4 and all(f.error is None for f in frames), [f.error for f in frames]
    assert {f.uri for f in frames} == {str(tmp_path / (SHOWN + ".avi"))}


def test_files_that_are_not_media_are_skipped_and_counted(tmp_path: Path) -> None:
    folder = tmp_path / "voc"
    (folder / "annotations").mkdir(parents=True)
    for i, path in enumerate(face_paths(2)):
        shutil.copy(path, folder / f"{i}.jpg")
    (folder / "README.md").write_text("# faces\n")
    (folder / "annotations" / "0.xml").write_text("<annotation/>")
    (folder / "stray.weird").write_bytes(b"not known, so still tried")
    rc, records, summary = score(str(folder), "--out", str(tmp_path / "out"))
    assert rc == 0
    statuses = {Path(r["uri"]).name: r["status"] for r in records}
    assert statuses == {"0.jpg": "scored", "1.jpg": "scored", "stray.weird": "failed"}
    assert summary["counts"] == {"read": 3, "scored": 2, "dropped": 0, "failed": 1}
    assert summary["sources"][str(folder)]["skipped_files"] == 2
    assert summary["skipped_files"] == 2
    assert summary["accounting_ok"] is True
