"""Shared helpers of the streaming tests (test_sources, test_pipeline, test_score): one Engine for
the whole session, real test media made from the shared face images, and thread/accounting checks.

Not a conftest: the test modules import what they use.
"""

from __future__ import annotations

import atexit
import json
import os
import shutil
import tempfile
import threading
import time
import warnings
from collections import defaultdict
from functools import lru_cache
from pathlib import Path
from typing import Any, Iterable

import cv2
import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[1]
FACES = REPO.parent / "shared" / "data" / "facemask"

_lock = threading.Lock()


def cache_dir() -> str:
    """MASKRT_CACHE_DIR for the tests (and the CLI subprocesses they start): the one already
    set, else a temporary folder removed at exit."""
    with _lock:
        if not os.environ.get("MASKRT_CACHE_DIR"):
            path = tempfile.mkdtemp(prefix="maskrt-stream-tests-")
            atexit.register(shutil.rmtree, path, ignore_errors=True)
            os.environ["MASKRT_CACHE_DIR"] = path
        return os.environ["MASKRT_CACHE_DIR"]


@lru_cache(maxsize=1)
def shared_engine() -> Any:
    """One ONNX Runtime Engine for every streaming test (exporting the graph takes ~10 s)."""
    cache_dir()
    from maskrt.engine import Engine
    from maskrt.graph.model import UntrainedModelWarning

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UntrainedModelWarning)
        return Engine()


def read_jsonl(path: Path) -> list[dict]:
    """The JSON objects of a JSON-lines file (records.jsonl, tracks.jsonl, events.jsonl)."""
    return [json.loads(line) for line in Path(path).read_text().splitlines()]


def has_cam_kernel() -> bool:
    """Whether the engine can draw CAM overlays (the compiled extension is there)."""
    try:
        shared_engine().explain(face_frames(1)[0])
        return True
    except ImportError:
        return False


def face_paths(n: int) -> list[Path]:
    """n shared face images, alternating with_mask / without_mask (skips without the data)."""
    if not FACES.is_dir():
        pytest.skip(f"shared face data not found at {FACES}")
    per_class = [sorted((FACES / "val" / c).glob("*.jpg"))[: (n + 1) // 2]
                 for c in ("with_mask", "without_mask")]
    paths = [p for pair in zip(*per_class) for p in pair][:n]
    if len(paths) < n:
        pytest.skip(f"expected {n} face images under {FACES / 'val'}, found {len(paths)}")
    return paths


def face_frames(n: int, size: tuple[int, int] = (160, 120)) -> list[np.ndarray]:
    """n face images resized to size (w, h), BGR uint8."""
    return [cv2.resize(cv2.imread(str(p), cv2.IMREAD_COLOR), size, interpolation=cv2.INTER_AREA)
            for p in face_paths(n)]


def write_video(path: Path, n_frames: int, fps: float = 10.0,
                size: tuple[int, int] = (160, 120)) -> Path:
    """An MJPG AVI of n_frames written by cv2.VideoWriter from the shared faces."""
    frames = face_frames(min(n_frames, 16), size)
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), fps, size)
    assert writer.isOpened(), f"cv2.VideoWriter cannot write MJPG AVI to {path}"
    for i in range(n_frames):
        writer.write(frames[i % len(frames)])
    writer.release()
    return path


def write_frames_dir(directory: Path, n: int, size: tuple[int, int] = (160, 120)) -> Path:
    """n JPEG frames (what the MJPEG server serves) in directory."""
    directory.mkdir(parents=True, exist_ok=True)
    for i, frame in enumerate(face_frames(n, size)):
        cv2.imwrite(str(directory / f"{i:03d}.jpg"), frame)
    return directory


def maskrt_threads() -> list[str]:
    return [t.name for t in threading.enumerate() if t.name.startswith("maskrt-") and t.is_alive()]


def assert_threads_end(patience_s: float) -> None:
    """Every pipeline thread ends within ``patience_s`` (a test's pipelines left nothing running)."""
    deadline = time.monotonic() + patience_s
    while maskrt_threads() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert maskrt_threads() == [], f"pipeline threads left running: {maskrt_threads()}"


def check_accounting(records: Iterable[Any], counters: dict[str, Any]) -> dict[str, list[Any]]:
    """Assert the accounting contract: per source and overall read == scored + dropped + failed,
    nothing in flight, each frame read has exactly one status (one frame-level record: the
    dropped/failed record, or region 0 of a scored frame) and each frame index 0..read-1 appears
    once per source, and a scored frame has one record per region. Returns all records by
    source."""
    by_source: dict[str, list[Any]] = defaultdict(list)
    for record in records:
        by_source[record.source_id].append(record)
    total = counters["total"]
    assert total["in_flight"] == 0, counters
    assert total["read"] == total["scored"] + total["dropped"] + total["failed"], total
    frames = {s: [r for r in got if r.frame_level] for s, got in by_source.items()}
    assert total["read"] == sum(len(v) for v in frames.values()), total
    for source_id, c in counters["sources"].items():
        got = frames.get(source_id, [])
        assert c["in_flight"] == 0, (source_id, c)
        assert c["read"] == c["scored"] + c["dropped"] + c["failed"], (source_id, c)
        assert c["read"] == len(got), (source_id, c["read"], len(got))
        for status in ("scored", "dropped", "failed"):
            assert c[status] == sum(r.status == status for r in got), (source_id, status, c)
        indices = sorted(r.frame_index for r in got)
        assert indices == list(range(len(got))), (source_id, indices[:20])
        _check_regions(by_source.get(source_id, []))
    assert set(by_source) <= set(counters["sources"]), (set(by_source), set(counters["sources"]))
    return by_source


def _check_regions(records: list[Any]) -> None:
    regions: dict[int, list[Any]] = defaultdict(list)
    for r in records:
        assert r.status in ("scored", "dropped", "failed")
        if r.status != "scored":
            assert r.reason, r
            assert r.label is None and r.region_index is None and r.faces is None
            continue
        assert r.latency_ms >= 0
        if r.faces == 0:
            assert r.label is None and r.region_index is None
            continue
        if r.label is None:  # a tracked face left unclassified says why
            assert r.classified is False and r.reason, r
        else:
            assert r.label in ("with_mask", "without_mask")
            assert abs(r.p_with_mask + r.p_without_mask - 1.0) < 1e-4
        x0, y0, x1, y1 = r.box
        assert 0 <= x0 < x1 and 0 <= y0 < y1, r.box
        regions[r.frame_index].append(r)
    for index, group in regions.items():
        assert sorted(r.region_index for r in group) == list(range(group[0].faces)), (index, group)


def run_pipeline(pipeline: Any) -> tuple[list[Any], dict[str, Any]]:
    """Start ``pipeline``, take every record, stop it; the records and the final counters."""
    with pipeline:
        records = list(pipeline)
    return records, pipeline.counters()
