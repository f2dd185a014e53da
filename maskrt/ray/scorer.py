"""The scoring class of Ray actors for whole frames (``regions="frame"``; faces are scored by
:mod:`maskrt.ray.units`): the graph loaded once per actor, batches of frames scored with the
decode, resize and decision code of ``maskrt score --regions frame``.

A batch is a ``dict[str, np.ndarray]`` (Ray Data's ``numpy`` batch format): ``image`` holds uint8
BGR frames of any size (an object array of ``[H, W, 3]`` arrays, or one ``[N, H, W, 3]`` array),
other columns pass through. A row whose ``error`` column is a non-empty string could not be read
or decoded: it is not scored and comes back ``failed`` with that reason.

The whole frame is the one region (``--regions frame``): the frame is squashed to 224x224 with
:func:`maskrt.image.resize_to_input`, run through :meth:`Engine.infer` and decided by
:meth:`Engine.results_from`, exactly as the pipeline's prepare, infer and explain stages do, so the
same frames give the same labels and probabilities as ``maskrt score --regions frame``.
"""

from __future__ import annotations

import logging
import time
from typing import Any, Sequence

import numpy as np

from maskrt.devices import to_host
from maskrt.image import ImageError, limit_side, resize_to_input, to_bgr8
from maskrt.stream.records import FAILED, JSON_FIELDS, SCORED, Record

log = logging.getLogger("maskrt.ray.scorer")

IMAGE = "image"
ERROR = "error"
#: wall-clock time (``time.time()``) at which a frame was read; latency is measured from it
T_READ = "t_read"
#: (width, height) of an image as stored when it was decoded smaller (over max_side), else
#: (0, 0): the whole-frame ``box`` is given in the original's pixels, as ``maskrt score`` does
SIZE = "original_size"
_NO_OVERLAY = np.zeros((0, 0, 3), dtype=np.uint8)


class MaskScorer:
    """Scores batches of frames; made once per actor by ``map_batches`` (or a Serve replica).

    model, backend, backend_options, chunk_size: as :class:`maskrt.Engine`'s (a GPU backend,
    e.g. ``backend="torch", backend_options={"device": "cuda"}``, on actors given ``num_gpus``).
    explain: also return each frame's CAM overlay (``overlay``: uint8[H, W, 3] at its size).
    image_column: the column holding the frames.
    """

    def __init__(self, model: Any = None, backend: str = "onnxruntime", *, explain: bool = False,
                 backend_options: dict[str, Any] | None = None, chunk_size: int = 64,
                 image_column: str = IMAGE) -> None:
        from maskrt.engine import Engine

        self.engine = Engine(model, backend=backend, chunk_size=chunk_size,
                             **dict(backend_options or {}))
        self.explain = explain
        self.image_column = image_column

    def decide(self, frames: Sequence[Any], explain: bool | None = None) -> list[Any]:
        """Per frame, its :class:`maskrt.Result` (with ``overlay`` when explaining: ``explain``,
        default the scorer's), or the reason (a str) it could not be scored: not a usable image,
        or the backend failed on its chunk."""
        explain = self.explain if explain is None else explain
        decided: list[Any] = [None] * len(frames)
        images: list[np.ndarray] = []
        rows: list[int] = []
        for i, frame in enumerate(frames):
            try:
                images.append(limit_side(to_bgr8(np.asarray(frame), what=f"frame {i}")))
                rows.append(i)
            except ImageError as err:
                decided[i] = str(err)
        step = self.engine.chunk_size
        for start in range(0, len(images), step):
            chunk, owners = images[start:start + step], rows[start:start + step]
            try:
                logits, features = self.engine.infer(np.stack([resize_to_input(im) for im in chunk]))
                results = (self.engine.results_from(logits, features, chunk, heatmaps=False)
                           if explain else self.engine.results_from(logits))
            except Exception as err:  # noqa: BLE001 - a backend error fails this chunk only
                log.exception("backend error on a chunk of %d frames", len(chunk))
                results = [f"backend error: {type(err).__name__}: {err}"] * len(chunk)
            for row, result in zip(owners, results):
                if explain and not isinstance(result, str):
                    result.overlay = to_host(result.overlay)
                decided[row] = result
        return decided

    def decide_rows(self, batch: dict[str, np.ndarray]) -> list[Any]:
        """Per row of ``batch``: its Result, or the reason it was not scored (the reader's
        ``error`` column, or :meth:`decide`'s)."""
        frames = batch[self.image_column]
        errors = batch.get(ERROR)
        todo = [i for i in range(len(frames)) if errors is None or not errors[i]]
        decided = dict(zip(todo, self.decide([frames[i] for i in todo])))
        return [decided.get(i, errors[i] if errors is not None else None)
                for i in range(len(frames))]

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """The batch's columns (without the frames) plus ``status`` (scored / failed), ``reason``,
        ``label``, ``class_index`` (-1 when failed), ``p_with_mask``, ``p_without_mask`` (NaN
        when failed) and, when explaining, ``overlay`` (uint8[0, 0, 3] when failed)."""
        decided = self.decide_rows(batch)
        n = len(decided)
        out = {k: v for k, v in batch.items() if k != self.image_column}
        status, reason, label = (np.full(n, None, dtype=object) for _ in range(3))
        index = np.full(n, -1, dtype=np.int64)
        probabilities = np.full((n, 2), np.nan, dtype=np.float32)
        overlays = np.empty(n, dtype=object)  # failed rows: an empty [0, 0, 3] image (Arrow's
        for i in range(n):                     # tensor columns take no None)
            overlays[i] = _NO_OVERLAY
        for i, result in enumerate(decided):
            if isinstance(result, str):
                status[i], reason[i] = FAILED, result
                continue
            status[i], label[i], index[i] = SCORED, result.label, result.class_index
            probabilities[i] = result.probabilities
            overlays[i] = result.overlay
        out.update(status=status, reason=reason, label=label, class_index=index,
                   p_with_mask=probabilities[:, 0], p_without_mask=probabilities[:, 1])
        if self.explain:
            out["overlay"] = overlays
        return out


class RecordScorer(MaskScorer):
    """A :class:`MaskScorer` whose output is ``maskrt score``'s records: a pyarrow Table with
    :data:`maskrt.stream.records.JSON_FIELDS`, one row per frame (whole-frame region: ``box`` the
    frame, ``faces`` 1; failed frames: the reason, no region). Input columns: ``source_id``,
    ``frame_index``, ``source_timestamp`` (NaN: none), ``uri`` (empty: none), ``t_read``,
    ``image``, ``error``, optionally ``original_size`` (:data:`SIZE`)."""

    def __call__(self, batch: dict[str, np.ndarray]) -> Any:  # -> pyarrow.Table
        import pyarrow as pa

        frames, now = batch[self.image_column], time.time()
        rows = [_record(batch, i, result, frames[i], now).to_dict()
                for i, result in enumerate(self.decide_rows(batch))]
        return pa.Table.from_pylist(rows, schema=record_schema())


def _record(batch: dict[str, np.ndarray], i: int, result: Any, frame: Any, now: float) -> Record:
    """The record of row ``i``: scored (whole frame) with ``result``, or failed with the reason."""
    timestamp = float(batch["source_timestamp"][i]) if "source_timestamp" in batch else np.nan
    t_read = float(batch[T_READ][i]) if T_READ in batch else now
    uri = str(batch["uri"][i]) if "uri" in batch and batch["uri"][i] else None
    record = Record(source_id=str(batch["source_id"][i]), frame_index=int(batch["frame_index"][i]),
                    source_timestamp=None if np.isnan(timestamp) else timestamp,
                    status=FAILED, latency_ms=max(0.0, (now - t_read) * 1000.0), uri=uri)
    if isinstance(result, str) or result is None:
        record.reason = result or "not scored: no frame"
        return record
    h, w = np.asarray(frame).shape[:2]
    if SIZE in batch and batch[SIZE][i][0] > 0:
        w, h = batch[SIZE][i]
    record.status, record.label = SCORED, result.label
    record.p_with_mask, record.p_without_mask = result.p_with_mask, result.p_without_mask
    record.region_index, record.box, record.faces = 0, [0, 0, int(w), int(h)], 1
    record.classified = True
    return record


def record_schema() -> Any:
    """The pyarrow schema of the records (``JSON_FIELDS``, in order), for Parquet and Ray Data."""
    import pyarrow as pa

    types = {"frame_index": pa.int64(), "region_index": pa.int64(), "faces": pa.int64(),
             "box": pa.list_(pa.int64()), "landmarks": pa.list_(pa.list_(pa.float64())),
             "source_timestamp": pa.float64(), "p_with_mask": pa.float64(),
             "p_without_mask": pa.float64(), "latency_ms": pa.float64(),
             "face_score": pa.float64(), "track_id": pa.int64(), "track_frames": pa.int64(),
             "p_track_without_mask": pa.float64(), "classified": pa.bool_()}
    return pa.schema([(name, types.get(name, pa.string())) for name in JSON_FIELDS])
