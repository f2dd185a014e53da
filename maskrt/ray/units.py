"""The scoring actor of ``maskrt ray score`` with faces (the default): each unit of work runs
through ``maskrt score``'s own :class:`~maskrt.stream.pipeline.Pipeline`, inside the actor.

A unit (see :mod:`maskrt.ray.reading`) is a run of photos of a folder, or a whole video (a
folder holding videos, a folder tracked with ``track="on"``): the actor reads it with maskrt's
sources, in frame order, and scores it with the decode, face, track, prepare, infer and explain
stages of ``maskrt score`` (same ``regions``, ``preset``, ``face_options``, ``track``, ``reuse``,
``track_options``), so its rows are ``maskrt score``'s records by construction: one per face
(box, face_score, landmarks, faces, track fields), one per dropped or failed frame, one with
``faces`` 0 for a scored frame without a face. A video is one unit, so it is tracked within
one actor, its people followed from its first frame to its last.

The classifier (an :class:`~maskrt.engine.Engine`) and the face detector are loaded once per
actor and shared by the units' pipelines (the detector beside the classifier: on a GPU actor,
on its GPU when a GPU detector can run there). When a unit has been read to its end, the actor
notes in the :class:`~maskrt.ray.reading.ReadLedger` how many frames its pipeline read: the
summary's ``read``, checked against the statuses of the rows on the driver.
"""

from __future__ import annotations

import os
from typing import Any, Iterator, Sequence

import numpy as np

from maskrt.detect.base import Detections, Detector
from maskrt.ray.reading import UnitSource

#: records per table an actor hands on while a unit is scored (a long video's rows flow on)
ROWS_PER_TABLE = 64


class SharedDetector(Detector):
    """An actor's detector lent to each unit's pipeline: the pipeline's face stage closes its
    detector when the pipeline stops, which must not close the actor's."""

    def __init__(self, detector: Detector) -> None:
        self.detector = detector
        self.name = detector.name

    def detect(self, frames: Sequence[np.ndarray],
               scales: Sequence[float] | None = None) -> list[Detections]:
        return self.detector.detect(frames, scales)

    def describe(self) -> str:
        return self.detector.describe()

    def close(self) -> None:
        """Nothing: the actor's detector lives as long as the actor."""


def actor_detector(preset: str, face_options: dict[str, Any], classifier_device: Any,
                   threads: int | None) -> Detector:
    """The detector ``maskrt score`` would make for ``preset`` and ``face_options`` (see
    :func:`maskrt.detect.make_detector`); on the CPU with ONNX Runtime, given the classifier's
    ``threads`` (actors share a node's cores)."""
    from maskrt.detect import make_detector

    return make_detector(preset, classifier_device, threads=threads or None, **face_options)


class UnitScorer:
    """Scores units of work (``map_batches(UnitScorer, batch_size=1)`` over the units); made
    once per actor. Yields pyarrow Tables of records (:func:`maskrt.ray.scorer.record_schema`).

    model, backend, backend_options, chunk_size: as :class:`maskrt.Engine`'s. regions, preset,
    face_options, track, reuse, track_options, batch_size, max_wait_ms: as
    :class:`maskrt.Pipeline`'s (``maskrt score``'s flags). ledger: the ReadLedger actor (None:
    counts not noted). cwd: the driver's working folder (relative paths are read from there).
    """

    def __init__(self, model: Any = None, backend: str = "onnxruntime", *,
                 backend_options: dict[str, Any] | None = None, chunk_size: int = 64,
                 regions: str = "faces", preset: str = "default",
                 face_options: dict[str, Any] | None = None, track: Any = "auto",
                 reuse: bool = True, track_options: dict[str, Any] | None = None,
                 batch_size: int = 32, max_wait_ms: float = 20.0, ledger: Any = None,
                 cwd: str | None = None, rows_per_table: int = ROWS_PER_TABLE) -> None:
        from maskrt.engine import Engine
        from maskrt.ray.cluster import quiet_worker

        quiet_worker(cwd)
        options = dict(backend_options or {})
        self.engine = Engine(model, backend=backend, chunk_size=chunk_size, **options)
        self.face_options = dict(face_options or {})
        self.detector = None
        if regions == "faces":
            self.detector = SharedDetector(actor_detector(
                preset, self.face_options, self.engine.input_device, options.get("threads")))
        self.settings = {"regions": regions, "preset": preset, "track": track, "reuse": reuse,
                         "track_options": dict(track_options or {}), "batch_size": batch_size,
                         "max_wait_ms": max_wait_ms}
        self.ledger = ledger
        self.rows_per_table = max(1, int(rows_per_table))

    def __call__(self, batch: dict[str, np.ndarray]) -> Iterator[Any]:
        for k in range(len(batch["unit_id"])):
            unit = {key: batch[key][k] for key in ("unit_id", "source_id", "kind", "spec", "files")}
            yield from self.score_unit(unit)

    def pipeline(self, unit: dict[str, Any]) -> Any:
        """The pipeline of one unit: ``maskrt score``'s, with the actor's engine and detector."""
        from maskrt.stream.pipeline import Pipeline

        s = self.settings
        return Pipeline(self.engine, [UnitSource(unit)], batch_size=s["batch_size"],
                        max_wait_ms=s["max_wait_ms"], regions=s["regions"], preset=s["preset"],
                        detector=self.detector, face_options=self.face_options,
                        track=s["track"], reuse=s["reuse"], track_options=s["track_options"])

    def score_unit(self, unit: dict[str, Any]) -> Iterator[Any]:
        """Tables of the unit's records as its pipeline makes them; then its read count noted."""
        import pyarrow as pa

        from maskrt.ray.scorer import record_schema

        schema = record_schema()
        pipeline = self.pipeline(unit)
        rows: list[dict[str, Any]] = []
        try:
            for record in pipeline:
                rows.append(record.to_dict())
                if len(rows) >= self.rows_per_table:
                    yield pa.Table.from_pylist(rows, schema=schema)
                    rows = []
        finally:
            pipeline.stop()
        if rows:
            yield pa.Table.from_pylist(rows, schema=schema)
        read = pipeline.counters()["total"]["read"]
        if self.ledger is not None:
            import ray

            ray.get(self.ledger.note.remote(int(unit["unit_id"]), str(unit["source_id"]), read))


def unit_scorer_options(regions: str, preset: str, face_options: dict[str, Any] | None,
                        track: Any, reuse: bool, track_options: dict[str, Any] | None
                        ) -> dict[str, Any]:
    """The face and track settings checked on the driver, before any actor starts (ValueError
    naming what is wrong), as UnitScorer's keywords."""
    from maskrt.detect import REGION_MODES, preset_settings
    from maskrt.track.settings import TrackSettings, check_track_mode

    if regions not in REGION_MODES:
        raise ValueError(f"regions: expected one of {list(REGION_MODES)}, got {regions!r}")
    preset_settings(preset, **dict(face_options or {}))
    TrackSettings().with_options(track_options)
    return {"regions": regions, "preset": preset, "face_options": dict(face_options or {}),
            "track": check_track_mode(track), "reuse": bool(reuse),
            "track_options": dict(track_options or {}), "cwd": os.getcwd()}
