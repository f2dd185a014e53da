"""records.jsonl and summary.json on a disk that refuses writes (full for a moment, or until the
end): no record is lost while the disk recovers, the file holds whole lines only, each record
once and in order, and what must be given up is counted (``records_lost``) and makes
``maskrt score`` exit 2 naming the file.

The failing disk is the sink module's ``os.write`` (ENOSPC, or a short write) - the rest is
real; as root, where ``mount -t tmpfs`` works, a real small tmpfs filled up is used as well."""

from __future__ import annotations

import errno
import json
import os
import shutil
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest
from streaming_fixtures import face_paths, maskrt_threads, shared_engine

import maskrt.stream.sinks as sinks_module
import maskrt.stream.summary as summary_module
from maskrt.cli import main as cli_main
from maskrt.stream.records import Record
from maskrt.stream.sinks import JsonlSink


class FlakyOs:
    """The real ``os`` but for ``write``: it follows ``script`` first (an int: a short write of
    that many bytes; an OSError: raised), then raises ENOSPC while ``full``, then writes."""

    def __init__(self, script: list[Any] | None = None, full: bool = False) -> None:
        self.script = list(script or [])
        self.full = full
        self.refused = 0

    def __getattr__(self, name: str) -> Any:
        return getattr(os, name)

    def write(self, fd: int, data: Any) -> int:
        step = self.script.pop(0) if self.script else None
        if isinstance(step, int):
            return os.write(fd, bytes(data[:step]))
        if step is not None or self.full:
            self.refused += 1
            raise step or OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return os.write(fd, data)


def enospc() -> OSError:
    return OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))


def record(i: int) -> Record:
    # A long reason makes lines long enough for a short write to cut one in the middle.
    return Record("cam", i, float(i), "scored", reason="x" * 40, label="with_mask",
                  p_with_mask=0.9, p_without_mask=0.1)


def read_lines(path: Path) -> list[dict]:
    text = path.read_text(encoding="utf-8")
    assert text == "" or text.endswith("\n"), f"{path} ends with half a line: {text[-60:]!r}"
    return [json.loads(line) for line in text.splitlines()]


def test_a_disk_full_for_a_while_loses_no_record(tmp_path, monkeypatch):
    flaky = FlakyOs()
    monkeypatch.setattr(sinks_module, "os", flaky)
    path = tmp_path / "records.jsonl"
    sink = JsonlSink(path, flush_every=4, max_delay_s=3600, close_retry_s=0)
    for i in range(5):  # four reach the file, one waits
        sink.write(record(i))
    # The next flush writes 30 bytes (a cut line), then the disk is full for three attempts.
    flaky.script = [30, enospc(), enospc(), enospc()]
    for i in range(5, 12):
        sink.write(record(i))  # the flushes at records 7 and 11 fail: nothing is raised
    assert not path.read_bytes().endswith(b"\n")  # the half line the short write left
    assert sink.flush() is False
    assert sink.flush() is True  # the disk is back: the rest of the line first, then the others
    for i in range(12, 15):
        sink.write(record(i))
    part = sink.close()
    assert part == {"records": str(path), "records_lost": 0} and sink.lost == 0
    assert [r["frame_index"] for r in read_lines(path)] == list(range(15))
    assert flaky.refused == 3


def test_the_background_flusher_keeps_lines_while_the_disk_is_full(tmp_path, monkeypatch):
    flaky = FlakyOs(full=True)
    monkeypatch.setattr(sinks_module, "os", flaky)
    path = tmp_path / "records.jsonl"
    sink = JsonlSink(path, flush_every=100, max_delay_s=0.02, close_retry_s=0)
    for i in range(3):
        sink.write(record(i))
    deadline = time.monotonic() + 5
    while flaky.refused < 3 and time.monotonic() < deadline:
        time.sleep(0.01)
    assert flaky.refused >= 3, "the background flusher never tried to write"
    flaky.full = False  # the disk recovers while the sink is open: the flusher writes the lines
    while path.stat().st_size == 0 and time.monotonic() < deadline:
        time.sleep(0.01)
    assert [r["frame_index"] for r in read_lines(path)] == [0, 1, 2]
    assert sink.close()["records_lost"] == 0
    assert maskrt_threads() == []


def test_a_disk_that_never_recovers_counts_the_lines_given_up(tmp_path, monkeypatch):
    flaky = FlakyOs()
    monkeypatch.setattr(sinks_module, "os", flaky)
    path = tmp_path / "records.jsonl"
    sink = JsonlSink(path, flush_every=2, max_delay_s=3600, close_retry_s=0.3)
    for i in range(4):
        sink.write(record(i))
    flaky.script, flaky.full = [25], True  # a cut line, then a disk full until the end
    for i in range(4, 10):
        sink.write(record(i))
    started = time.monotonic()
    part = sink.close()
    assert time.monotonic() - started >= 0.25  # close waited for the disk before giving up
    assert part["records_lost"] == 6 and sink.lost == 6
    assert [r["frame_index"] for r in read_lines(path)] == [0, 1, 2, 3]  # the half line is cut


def test_lines_waiting_for_the_disk_are_bounded(tmp_path, monkeypatch):
    monkeypatch.setattr(sinks_module, "os", FlakyOs(full=True))
    line_size = len(json.dumps({**record(0).to_dict()}, ensure_ascii=False)) + 1
    sink = JsonlSink(tmp_path / "records.jsonl", flush_every=1, max_delay_s=3600,
                     max_buffered_bytes=3 * line_size + 10, close_retry_s=0)
    for i in range(10):
        sink.write(record(i))
    assert sink.lost == 7  # three lines wait, the others are counted at once
    assert sink.close()["records_lost"] == 10


@pytest.fixture(scope="module")
def images(tmp_path_factory) -> Path:
    """A folder of three face images, and the graph exported once for the CLI runs."""
    shared_engine()
    folder = tmp_path_factory.mktemp("faces")
    for i, path in enumerate(face_paths(3)):
        shutil.copy(path, folder / f"{i}.jpg")
    return folder


def score(images: Path, out: Path) -> int:
    return cli_main(["score", str(images), "--out", str(out), "--regions", "frame",
                     "--progress-interval", "0"])


def test_score_exits_2_naming_the_file_when_records_are_lost(images, tmp_path, monkeypatch,
                                                             capsys):
    monkeypatch.setattr(sinks_module, "os", FlakyOs(full=True))
    out = tmp_path / "out"
    assert score(images, out) == 2
    captured = capsys.readouterr()
    message = [line for line in captured.err.splitlines() if "could not be written" in line]
    assert len(message) == 1 and message[0].startswith("maskrt score: 3 records")
    assert str(out / "records.jsonl") in message[0]
    assert "records lost: 3" in captured.out
    summary = json.loads((out / "summary.json").read_text())
    assert summary["outputs"]["records_lost"] == 3 and summary["counts"]["scored"] == 3
    assert (out / "records.jsonl").read_bytes() == b""


def test_score_writes_records_lost_0_normally(images, tmp_path):
    out = tmp_path / "out"
    assert score(images, out) == 0
    assert json.loads((out / "summary.json").read_text())["outputs"]["records_lost"] == 0
    assert len(read_lines(out / "records.jsonl")) == 3


class NoReplaceOs:
    """The real ``os``, but the rename that puts the summary in place fails (a full disk)."""

    def __getattr__(self, name: str) -> Any:
        return getattr(os, name)

    def replace(self, src: str, dst: Any) -> None:
        raise enospc()


def test_score_exits_2_naming_the_summary_it_cannot_write(images, tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(summary_module, "os", NoReplaceOs())
    out = tmp_path / "out"
    assert score(images, out) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err
    assert f"maskrt score: cannot write the summary {out / 'summary.json'}" in err
    assert sorted(p.name for p in out.iterdir()) == ["records.jsonl"]  # no temporary file left
    assert len(read_lines(out / "records.jsonl")) == 3


@pytest.fixture
def small_tmpfs(tmp_path):
    """A 1 MiB tmpfs mounted at tmp_path/disk (root only; skips where mount fails)."""
    if not hasattr(os, "geteuid") or os.geteuid() != 0 or shutil.which("mount") is None:
        pytest.skip("mounting a tmpfs needs root and mount(8)")
    disk = tmp_path / "disk"
    disk.mkdir()
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(disk)],
                          capture_output=True, text=True)
    if done.returncode != 0:
        pytest.skip(f"mount -t tmpfs failed: {done.stderr.strip()}")
    try:
        yield disk
    finally:
        subprocess.run(["umount", "-l", str(disk)], check=False)


def fill(disk: Path) -> Path:
    """Write a file into ``disk`` until it is full (ENOSPC); returns it."""
    filler = disk / "filler"
    fd = os.open(filler, os.O_WRONLY | os.O_CREAT, 0o644)
    try:
        while True:
            os.write(fd, b"\0" * 4096)
    except OSError as err:
        assert err.errno == errno.ENOSPC, err
    finally:
        os.close(fd)
    return filler


def test_a_real_tmpfs_full_for_a_while_loses_no_record(small_tmpfs):
    path = small_tmpfs / "records.jsonl"
    sink = JsonlSink(path, flush_every=4, max_delay_s=3600, close_retry_s=0)
    for i in range(4):
        sink.write(record(i))
    filler = fill(small_tmpfs)
    for i in range(4, 40):
        sink.write(record(i))
    assert sink.flush() is False  # the disk is really full
    filler.unlink()
    for i in range(40, 44):
        sink.write(record(i))
    assert sink.close()["records_lost"] == 0
    assert [r["frame_index"] for r in read_lines(path)] == list(range(44))


def test_score_on_a_real_full_tmpfs_exits_2(images, small_tmpfs, capsys):
    fill(small_tmpfs)
    out = small_tmpfs / "out"
    assert score(images, out) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err
    assert f"3 records could not be written to {out / 'records.jsonl'}" in err
    assert f"cannot write the summary {out / 'summary.json'}" in err
