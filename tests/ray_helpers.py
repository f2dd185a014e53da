"""What the Ray tests run inside Ray workers (importable there: the test cluster's PYTHONPATH
names this folder), and their media and comparison helpers. Not a conftest."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from maskrt.ray.scorer import RecordScorer
from maskrt.ray.units import UnitScorer


class DieOnFirstBatch(RecordScorer):
    """A scoring actor whose process exits (``os._exit``) on the first batch of the whole job:
    the first actor to take a batch creates ``marker`` and dies with the batch unscored."""

    def __init__(self, *args: Any, marker: str, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.marker = marker

    def __call__(self, batch: dict[str, np.ndarray]) -> Any:
        try:
            os.close(os.open(self.marker, os.O_CREAT | os.O_EXCL | os.O_WRONLY))
        except FileExistsError:
            return super().__call__(batch)
        os._exit(1)


def _claim(marker: str) -> bool:
    """True for the first caller in the whole job (it creates ``marker``)."""
    try:
        os.close(os.open(marker, os.O_CREAT | os.O_EXCL | os.O_WRONLY))
    except FileExistsError:
        return False
    return True


class DieMidUnit(UnitScorer):
    """A face-scoring actor whose process exits (``os._exit``) in the middle of the first unit
    of the job that has more than ``after`` tables of records (``rows_per_table`` 4): after it
    has handed on ``after`` tables, so the retried unit repeats rows that already left."""

    def __init__(self, *args: Any, marker: str, after: int = 2, **kwargs: Any) -> None:
        super().__init__(*args, rows_per_table=4, **kwargs)
        self.marker, self.after = marker, after

    def score_unit(self, unit: dict[str, Any]) -> Any:
        for k, table in enumerate(super().score_unit(unit)):
            if k == self.after and _claim(self.marker):
                os._exit(1)
            yield table


class NoteNode(RecordScorer):
    """A scoring actor that writes the id of the node it runs on into ``folder`` when made."""

    def __init__(self, *args: Any, folder: str, **kwargs: Any) -> None:
        import ray

        super().__init__(*args, **kwargs)
        node = ray.get_runtime_context().get_node_id()
        Path(folder, f"{os.getpid()}.node").write_text(node)


def make_media(root: Path, faces: list[Path], video_frames: int = 24) -> dict[str, Path]:
    """A folder of face images plus one corrupt image, an MJPG video, a video file of garbage
    bytes and an AVI whose codec (FourCC) nobody knows."""
    from streaming_fixtures import write_video

    folder = root / "faces"
    folder.mkdir(parents=True)
    for path in faces:
        shutil.copy(path, folder / path.name)
    rng = np.random.default_rng(0)
    (folder / "zz_corrupt.jpg").write_bytes(b"\xff\xd8\xff\xe0" + rng.bytes(600) + b"\xff\xd9")
    video = write_video(root / "clip.avi", video_frames)
    garbage = root / "garbage.avi"
    garbage.write_bytes(rng.bytes(20000))
    unknown = root / "unknown_codec.avi"
    data = write_video(root / "tmp.avi", 6).read_bytes()
    unknown.write_bytes(data.replace(b"MJPG", b"QQQQ"))
    (root / "tmp.avi").unlink()
    return {"folder": folder, "video": video, "garbage": garbage, "unknown": unknown}


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


def by_frame(rows: list[dict[str, Any]]) -> dict[tuple[str, int], dict[str, Any]]:
    """Rows keyed by (source_id, frame_index); fails on a frame with two rows."""
    keyed: dict[tuple[str, int], dict[str, Any]] = {}
    for row in rows:
        key = (row["source_id"], row["frame_index"])
        if key in keyed:
            raise AssertionError(f"frame {key} has two rows: {keyed[key]} and {row}")
        keyed[key] = row
    return keyed


def assert_same_records(ray_rows: list[dict[str, Any]], score_rows: list[dict[str, Any]],
                        tolerance: float = 1e-5) -> None:
    """``maskrt ray score``'s rows equal ``maskrt score --regions frame``'s: the same frames, and
    per frame the same status, label, box, uri, timestamp and reason, probabilities within
    ``tolerance``."""
    ours, theirs = by_frame(ray_rows), by_frame(score_rows)
    assert sorted(ours) == sorted(theirs)
    for key, row in theirs.items():
        mine = ours[key]
        for field in ("status", "label", "box", "uri", "region_index", "faces", "reason"):
            assert mine[field] == row[field], (key, field, mine[field], row[field])
        for field in ("p_with_mask", "p_without_mask", "source_timestamp"):
            if row[field] is None:
                assert mine[field] is None, (key, field)
            else:
                assert abs(mine[field] - row[field]) <= tolerance, (key, field, mine, row)


def by_face(rows: list[dict[str, Any]]) -> dict[tuple[str, int, Any], dict[str, Any]]:
    """Rows keyed by (source_id, frame_index, region_index); fails on a key with two rows."""
    keyed: dict[tuple[str, int, Any], dict[str, Any]] = {}
    for row in rows:
        key = (row["source_id"], row["frame_index"], row["region_index"])
        if key in keyed:
            raise AssertionError(f"face {key} has two rows: {keyed[key]} and {row}")
        keyed[key] = row
    return keyed


#: the fields of a face record that must be equal (the others are numbers within a tolerance,
#: or latency)
FACE_FIELDS = ("status", "reason", "label", "uri", "box", "faces", "track_id", "track_label",
               "track_frames", "classified")
NEAR_FIELDS = ("p_with_mask", "p_without_mask", "source_timestamp", "face_score",
               "p_track_without_mask")


def assert_same_face_records(ray_rows: list[dict[str, Any]], score_rows: list[dict[str, Any]],
                             tolerance: float = 1e-5) -> None:
    """``maskrt ray score``'s rows equal ``maskrt score``'s records: the same faces of the same
    frames, each with the same status, label, box, track and reason; landmarks within 0.1 px,
    probabilities and scores within ``tolerance``."""
    ours, theirs = by_face(ray_rows), by_face(score_rows)
    assert sorted(ours, key=str) == sorted(theirs, key=str)
    for key, row in theirs.items():
        mine = ours[key]
        for field in FACE_FIELDS:
            assert mine[field] == row[field], (key, field, mine[field], row[field])
        for field in NEAR_FIELDS:
            if row[field] is None:
                assert mine[field] is None, (key, field)
            else:
                assert abs(mine[field] - row[field]) <= tolerance, (key, field, mine, row)
        assert (mine["landmarks"] is None) == (row["landmarks"] is None), key
        if row["landmarks"] is not None:
            assert np.allclose(mine["landmarks"], row["landmarks"], atol=0.1001), key


def encode_jpeg(frame: np.ndarray) -> bytes:
    ok, data = cv2.imencode(".jpg", frame)
    if not ok:
        raise ValueError("cv2.imencode failed")
    return data.tobytes()
