"""Reading for offline scoring on Ray: the sources split into units of work (on the driver), and
the read task that turns a unit into rows of decoded frames (on the cluster).

Units: a run of up to ``files_per_unit`` image files of one source (a folder without videos is
split into many, so its files are read and decoded in parallel), or one whole source read through
its own :class:`~maskrt.stream.sources.Source` (a video file, a folder holding videos: their frame
indices depend on what came before). Frames are read by maskrt's own sources and decoded by the
pipeline's decode stage (OpenCV, :func:`maskrt.image.decode_image`), so a frame has the source id,
frame index, timestamp, uri and pixels that ``maskrt score`` gives it.

Every frame read becomes one row: decoded (``error`` empty), or with the reason it could not be
read or decoded. When a unit is read to its end, the read task tells the :class:`ReadLedger` how
many frames it read (keyed by unit, so a retried task counts once): the summary's ``read``.
"""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path
from typing import Any, Iterator

import numpy as np

from maskrt.image import ImageError
from maskrt.ray.scorer import ERROR, IMAGE, SIZE, T_READ
from maskrt.stream.sources import FolderSource, ImageFileSource, Source, VideoFileSource
from maskrt.stream.sources.base import VIDEO_EXTENSIONS, Frame
from maskrt.stream.sources.spec import InvalidSource, open_source, open_sources
from maskrt.stream.stages import DecodeStage
from maskrt.stream.work import FrameTask, SourceHandle

#: image files per unit of a folder without videos
FILES_PER_UNIT = 32
#: the frame of a row that has none (a failed read): variable-shaped tensor columns need an array
_NO_FRAME = np.zeros((1, 1, 3), dtype=np.uint8)


class ReadLedger:
    """A Ray actor (``num_cpus=0``): per unit, the source and the number of frames read."""

    def __init__(self) -> None:
        self.units: dict[int, tuple[str, int]] = {}

    def note(self, unit_id: int, source_id: str, frames: int) -> None:
        self.units[int(unit_id)] = (source_id, int(frames))

    def read_counts(self) -> dict[int, tuple[str, int]]:
        return dict(self.units)


def unique_ids(ids: list[str]) -> list[str]:
    """``ids`` with repeats made unique as the pipeline does: the second ``x`` is ``x#2``."""
    seen: set[str] = set()
    unique = []
    for base in ids:
        source_id, k = base, 2
        while source_id in seen:
            source_id, k = f"{base}#{k}", k + 1
        seen.add(source_id)
        unique.append(source_id)
    return unique


def plan_units(specs: list[Any], files_per_unit: int = FILES_PER_UNIT, *,
               whole_folders: bool = False) -> tuple[list[dict[str, Any]], list[Source]]:
    """The units of work of ``specs`` (files, folders, videos) and the sources they came from
    (ids made unique as the pipeline does). A spec naming nothing usable is one unit that yields
    one failed frame; a live source (camera, stream, drop folder) is a ValueError.
    whole_folders: every folder is one unit, read in order (a folder of photos tracked as one
    sequence, ``track="on"``); else a folder without videos is split into runs of files."""
    if files_per_unit < 1:
        raise ValueError(f"files_per_unit: expected >= 1, got {files_per_unit}")
    sources, _ = open_sources(list(specs))
    for source, source_id in zip(sources, unique_ids([s.id for s in sources])):
        source.id = source_id
    units: list[dict[str, Any]] = []
    for source in sources:
        if not source.finite or source.live:
            raise ValueError(f"source {source.id!r}: expected image files, folders or video files "
                             f"for offline scoring, got a live {source.kind} source (send live "
                             "sources to the Serve deployment: maskrt ray serve --ingest)")
        for files, spec in _source_units(source, files_per_unit, whole_folders):
            units.append({"unit_id": len(units), "source_id": source.id, "kind": source.kind,
                          "spec": spec, "files": json.dumps(files)})
    return units, sources


def _source_units(source: Source, per_unit: int,
                  whole_folders: bool = False) -> Iterator[tuple[list[list[Any]], str]]:
    """(files as [[index, path], ...], "") for runs of image files; ([], spec) for a source read
    whole; ([], "") for an invalid spec (its reason is the source's)."""
    if isinstance(source, InvalidSource):
        yield [], json.dumps({"invalid": source.spec, "reason": source.reason})
    elif isinstance(source, ImageFileSource):
        yield [[0, str(source.path)]], ""
    elif isinstance(source, FolderSource):
        files = [str(p) for p in source.files()]
        if whole_folders or any(Path(p).suffix.lower() in VIDEO_EXTENSIONS for p in files):
            yield [], str(source.path)  # frame indices run on through the videos: read in order
            return
        for start in range(0, len(files), per_unit):
            yield [[start + k, p] for k, p in enumerate(files[start:start + per_unit])], ""
    elif isinstance(source, VideoFileSource):
        yield [], str(source.path)
    else:
        raise ValueError(f"source {source.id!r}: a {source.kind} source cannot be split into units")


def read_units(batch: dict[str, np.ndarray], *, ledger: Any = None, rows_per_batch: int = 16,
               cwd: str | None = None) -> Iterator[dict[str, np.ndarray]]:
    """The read task (``map_batches`` over the units, ``batch_size=1``): yields batches of up to
    ``rows_per_batch`` rows, one per frame read, then notes the unit's count in ``ledger``.
    ``cwd``: the driver's working folder (relative paths are read from there)."""
    import ray

    from maskrt.ray.cluster import quiet_worker

    quiet_worker(cwd)
    for k in range(len(batch["unit_id"])):
        unit_id, source_id = int(batch["unit_id"][k]), str(batch["source_id"][k])
        rows: list[dict[str, Any]] = []
        count = 0
        for frame in unit_frames(str(batch["kind"][k]), str(batch["spec"][k]),
                                 json.loads(str(batch["files"][k]))):
            rows.append(frame_row(source_id, frame))
            count += 1
            if len(rows) >= rows_per_batch:
                yield rows_to_batch(rows)
                rows = []
        if rows:
            yield rows_to_batch(rows)
        if ledger is not None:
            ray.get(ledger.note.remote(unit_id, source_id, count))


def unit_frames(kind: str, spec: str, files: list[list[Any]],
                stop: threading.Event | None = None) -> Iterator[Frame]:
    """The frames of a unit, read by maskrt's sources (until ``stop`` is set)."""
    stop = stop or threading.Event()
    if files:
        for index, path in files:
            if stop.is_set():
                return
            for frame in ImageFileSource(path).frames(stop):
                frame.index = int(index)
                yield frame
    elif kind == InvalidSource.kind:
        invalid = json.loads(spec)
        yield from InvalidSource(invalid["invalid"], invalid["reason"]).frames(stop)
    else:
        yield from open_source(spec).frames(stop)


class UnitSource(Source):
    """A unit of work as a pipeline source (the actors that run ``maskrt score``'s pipeline):
    its frames under its source's id and kind, so frame indices, uris, timestamps and what is
    tracked (``FrameTask.sequence_key``) are those of ``maskrt score``'s source."""

    def __init__(self, unit: dict[str, Any]) -> None:
        super().__init__(str(unit["source_id"]))
        self.kind = str(unit["kind"])
        self.spec = str(unit["spec"])
        self.files = json.loads(str(unit["files"]))

    def frames(self, stop: threading.Event) -> Iterator[Frame]:
        self.state = "reading"
        yield from unit_frames(self.kind, self.spec, self.files, stop)
        self.state = "finished"


_DECODE = DecodeStage()


def frame_row(source_id: str, frame: Frame) -> dict[str, Any]:
    """One row: the frame's identity, and its decoded pixels or why there are none."""
    row = {"source_id": source_id, "frame_index": frame.index,
           "source_timestamp": np.nan if frame.timestamp is None else float(frame.timestamp),
           "uri": frame.uri or "", T_READ: time.time(), IMAGE: _NO_FRAME, SIZE: (0, 0),
           ERROR: frame.error or ""}
    if frame.error is None:
        task = FrameTask(SourceHandle(Source(source_id)), frame)
        try:  # the pipeline's decode stage, and its reasons (stages.run_stage)
            row[IMAGE] = _DECODE.process(task).image
            if task.reduction is not None:  # decoded smaller: records give the original's size
                row[SIZE] = task.reduction.original
        except ImageError as err:
            row[ERROR] = str(err)
        except Exception as err:  # noqa: BLE001 - one bad frame fails alone
            row[ERROR] = f"decode error: {type(err).__name__}: {err}"
    return row


def rows_to_batch(rows: list[dict[str, Any]]) -> dict[str, np.ndarray]:
    """Rows -> a numpy batch; frames of different sizes go in an object array."""
    images = np.empty(len(rows), dtype=object)
    for i, row in enumerate(rows):
        images[i] = row[IMAGE]
    return {"source_id": np.array([r["source_id"] for r in rows], dtype=object),
            "frame_index": np.array([r["frame_index"] for r in rows], dtype=np.int64),
            "source_timestamp": np.array([r["source_timestamp"] for r in rows], dtype=np.float64),
            "uri": np.array([r["uri"] for r in rows], dtype=object),
            T_READ: np.array([r[T_READ] for r in rows], dtype=np.float64),
            ERROR: np.array([r[ERROR] for r in rows], dtype=object),
            SIZE: np.array([r[SIZE] for r in rows], dtype=np.int64).reshape(-1, 2),
            IMAGE: images}
