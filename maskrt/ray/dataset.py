"""Offline scoring on Ray Data: image files, folders and videos -> ``records.jsonl`` (or Parquet)
and ``summary.json``, like ``maskrt score``, on a pool of scoring actors.

Faces (``regions="faces"``, the default):

    units (driver) -> map_batches(UnitScorer, batch_size=1, ActorPoolStrategy(min, max))
                      each unit read and scored by maskrt score's pipeline in one actor
                      (decode -> faces -> track -> classify), detector + classifier per actor
                   -> driver: records written, counted per source; summary

Whole frames (``regions="frame"``):

    units (driver) -> read tasks (maskrt's sources, decode; num_cpus read_cpus)
                   -> map_batches(RecordScorer, ActorPoolStrategy(min, max), num_cpus, num_gpus)
                   -> driver: records written, counted per source; summary

Every frame read ends in exactly one frame-level row (dropped or failed with the reason, or
scored: its faces' rows, or one row with ``faces`` 0); whoever read a unit to its end (the read
task, or the scoring actor with faces) reports how many frames it had
(:class:`~maskrt.ray.reading.ReadLedger`, an actor kept on the driver's node so that a node
leaving mid-job cannot take the counts along), so the summary's ``read == scored + dropped +
failed`` compares two independent counts. A row seen twice (a retried task whose first output
had arrived) is written once and counted in ``duplicate_rows``. Actors that die are restarted
by Ray Data and their tasks retried (a unit from its start); read tasks lost with a node are
re-run.
"""

from __future__ import annotations

import contextlib
import os
import time
import warnings
from collections import Counter
from pathlib import Path
from typing import Any, Iterator, Sequence, TextIO

from maskrt.ray.reading import FILES_PER_UNIT, ReadLedger, plan_units, read_units
from maskrt.ray.records_out import RecordCounts, RecordWriter
from maskrt.ray.scorer import RecordScorer
from maskrt.ray.units import UnitScorer, unit_scorer_options
from maskrt.stream.summary import write_json_atomic

FORMATS = ("jsonl", "parquet")
#: the default batch_size: faces per classifier call (maskrt score's --batch-size), and frames
#: per scoring batch with regions="frame"
FACE_BATCH, FRAME_BATCH = 32, 16
#: the largest block the read tasks make (Ray Data's target_max_block_size during the job)
BLOCK_BYTES = 4 * 1024 ** 2


def score_dataset(sources: Sequence[Any], out: str | os.PathLike[str], *,
                  address: str | None = None, num_cpus: int | None = None,
                  actors: tuple[int, int] = (1, 2), batch_size: int | None = None,
                  cpus_per_actor: float = 0.5, gpus_per_actor: float | None = None,
                  read_cpus: float = 0.25, format: str = "jsonl", model: Any = None,
                  backend: str = "onnxruntime", backend_options: dict[str, Any] | None = None,
                  regions: str = "faces", preset: str = "default",
                  face_options: dict[str, Any] | None = None, track: Any = "auto",
                  reuse: bool = True, track_options: dict[str, Any] | None = None,
                  files_per_unit: int = FILES_PER_UNIT, scorer: type | None = None,
                  scorer_options: dict[str, Any] | None = None,
                  ray_remote_args: dict[str, Any] | None = None, progress: TextIO | None = None,
                  progress_interval: float = 2.0) -> dict[str, Any]:
    """Score ``sources`` (image files, folders, video files) on Ray and write ``out/records.jsonl``
    (``format="parquet"``: ``out/records.parquet``) and ``out/summary.json``; returns the summary.

    regions "faces" (default): every face, as ``maskrt score`` finds, tracks and decides them
    (``preset``, ``face_options``, ``track``, ``reuse``, ``track_options``: its flags); each
    unit (a run of photos, a whole video) runs through ``maskrt score``'s pipeline inside one
    scoring actor (:class:`~maskrt.ray.units.UnitScorer`, detector and classifier loaded once
    per actor). regions "frame": the whole frame is the one decision; read tasks decode the
    frames and the actors score batches of them (:class:`RecordScorer`).
    address: the cluster (None: start a local one with ``num_cpus`` logical CPUs; "auto"; or
    "HOST:PORT"). actors: (min, max) scoring actors (Ray Data adds actors up to max while work
    waits). batch_size: faces per classifier call (default 32, ``maskrt score``'s); "frame":
    frames per scoring batch (default 16). cpus_per_actor, read_cpus: logical CPUs each
    actor / read task holds: fractions, so reading is never starved of CPUs by the actors.
    gpus_per_actor: GPUs per actor (None: 1 when the cluster has GPUs and the backend is not
    onnxruntime, else 0). backend_options: for ONNX Runtime, ``threads`` (the classifier's and
    the detector's) defaults to this machine's cores / max actors. scorer: a subclass of the
    scoring class, given ``scorer_options`` too; ray_remote_args: for its actors (e.g.
    ``scheduling_strategy``). progress: a stream for a progress line every
    ``progress_interval`` seconds.
    """
    job = _Job(regions, unit_scorer_options(regions, preset, face_options, track, reuse,
                                            track_options),
               batch_size or (FRAME_BATCH if regions == "frame" else FACE_BATCH),
               cpus_per_actor, read_cpus, scorer, scorer_options, ray_remote_args)
    job.actors = _check_options(actors, job.batch_size, cpus_per_actor, read_cpus, format)
    model, backend = _check_model(model, backend, dict(backend_options or {}))
    units, planned = plan_units(list(sources), files_per_unit, whole_folders=job.whole_folders)
    from maskrt.ray.cluster import cluster_gpus, connect

    ray = connect(address, num_cpus=num_cpus)
    job.gpus = _gpus_per_actor(gpus_per_actor, backend, cluster_gpus())
    job.engine = {"model": model, "backend": backend,
                  "backend_options": _backend_options(backend, backend_options, job.actors[1])}
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    ledger = _ledger(ray)
    t0 = time.perf_counter()
    counts = RecordCounts([s.id for s in planned])
    writer = RecordWriter(out, format)
    stopped_by = None
    try:
        if units:
            with _small_blocks():
                _consume(job.rows(ray, units, ledger), writer, counts,
                         _Progress(progress, progress_interval, counts, t0))
    except KeyboardInterrupt:
        stopped_by = "interrupt"
    except BaseException:
        ray.kill(ledger)  # a named actor: it would outlive the job on a shared cluster
        raise
    finally:
        writer.close()
    read = ray.get(ledger.read_counts.remote()) if stopped_by is None else {}
    ray.kill(ledger)
    summary = counts.summary(
        read, {s.id: s.kind for s in planned}, elapsed_s=time.perf_counter() - t0,
        backend=backend, model=str(model) if model is not None else "shipped",
        settings={**job.settings(), "format": format, "files_per_unit": files_per_unit,
                  "units": len(units)},
        outputs={"records": str(writer.path)}, stopped_by=stopped_by, cluster=_cluster(ray),
        specs=[str(s) for s in sources])
    write_json_atomic(out / "summary.json", summary)
    if stopped_by is not None:
        raise KeyboardInterrupt
    return summary


class _Job:
    """How a job scores: its regions, the actors' settings, the scoring dataset."""

    def __init__(self, regions: str, faces: dict[str, Any], batch_size: int,
                 cpus_per_actor: float, read_cpus: float, scorer: type | None,
                 scorer_options: dict[str, Any] | None,
                 ray_remote_args: dict[str, Any] | None) -> None:
        self.regions, self.faces, self.batch_size = regions, faces, batch_size
        self.cpus_per_actor, self.read_cpus = cpus_per_actor, read_cpus
        self.scorer = scorer or (RecordScorer if regions == "frame" else UnitScorer)
        self.scorer_options = dict(scorer_options or {})
        self.remote_args = dict(ray_remote_args or {})
        self.actors, self.gpus, self.engine = (1, 1), 0.0, {}  # set once checked

    @property
    def whole_folders(self) -> bool:
        """A folder of photos tracked as one sequence is one unit (one actor, in order)."""
        return self.regions == "faces" and self.faces["track"] == "on"

    def rows(self, ray: Any, units: list[dict[str, Any]], ledger: Any) -> Any:
        """The scored rows: for faces, each unit through an actor's pipeline (one task per
        unit, at most one more waiting at a busy actor; the pool starts with as many actors as
        there are units, up to MAX: Ray Data's autoscaler did not add actors for the few long
        tasks of a job of units); for frames, read tasks then batches of frames."""
        lo, hi = self.actors
        if self.regions == "frame":
            return _dataset(ray, units, ledger, self.batch_size, self.read_cpus).map_batches(
                self.scorer, batch_size=self.batch_size, batch_format="numpy",
                num_cpus=self.cpus_per_actor, num_gpus=self.gpus,
                compute=ray.data.ActorPoolStrategy(min_size=lo, max_size=hi),
                fn_constructor_kwargs={**self.engine, **self.scorer_options}, **self.remote_args)
        import ray.data

        options = {key: value for key, value in self.faces.items() if key != "regions"}
        units_ds = ray.data.from_items(units, override_num_blocks=len(units))
        return units_ds.map_batches(
            self.scorer, batch_size=1, batch_format="numpy", num_cpus=self.cpus_per_actor,
            num_gpus=self.gpus, compute=ray.data.ActorPoolStrategy(
                min_size=lo, max_size=hi, initial_size=max(lo, min(hi, len(units))),
                max_tasks_in_flight_per_actor=2),
            fn_constructor_kwargs={**self.engine, **options, "regions": self.regions,
                                   "batch_size": self.batch_size, "ledger": ledger,
                                   **self.scorer_options}, **self.remote_args)

    def settings(self) -> dict[str, Any]:
        """The summary's ``settings`` of the job."""
        faces = {k: v for k, v in self.faces.items() if k not in ("cwd", "regions")}
        return {"actors": list(self.actors), "batch_size": self.batch_size,
                "cpus_per_actor": self.cpus_per_actor, "gpus_per_actor": self.gpus,
                "read_cpus": self.read_cpus if self.regions == "frame" else None,
                "backend_options": self.engine.get("backend_options"), "regions": self.regions,
                **(faces if self.regions == "faces" else {}),
                "detector": "in the scoring actors" if self.regions == "faces" else None}


def _backend_options(backend: str, options: dict[str, Any] | None, actors: int) -> dict[str, Any]:
    """ONNX Runtime's threads default to this machine's cores / max actors."""
    options = dict(options or {})
    if backend == "onnxruntime" and "threads" not in options:
        options["threads"] = max(1, (os.cpu_count() or 1) // actors)
    return options


def _dataset(ray: Any, units: list[dict[str, Any]], ledger: Any, rows_per_batch: int,
             read_cpus: float) -> Any:
    """The units, one block each, turned into rows of frames by the read tasks."""
    import ray.data

    units_ds = ray.data.from_items(units, override_num_blocks=len(units))
    return units_ds.map_batches(read_units, batch_size=1, num_cpus=read_cpus,
                                fn_kwargs={"ledger": ledger, "rows_per_batch": rows_per_batch,
                                           "cwd": os.getcwd()})


def _ledger(ray: Any) -> Any:
    """The ReadLedger actor, on the driver's node: a node that leaves mid-job must not take the
    read counts with it (and when the driver's node goes, the job goes too)."""
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    here = NodeAffinitySchedulingStrategy(ray.get_runtime_context().get_node_id(), soft=False)
    return ray.remote(num_cpus=0, scheduling_strategy=here)(ReadLedger).remote()


def _cluster(ray: Any) -> dict[str, Any]:
    from maskrt.ray.cluster import cluster_cpus, cluster_gpus

    return {"cpus": cluster_cpus(), "gpus": cluster_gpus(),
            "nodes": len([n for n in ray.nodes() if n.get("Alive")])}


def _check_options(actors: tuple[int, int], batch_size: int, cpus_per_actor: float,
                   read_cpus: float, format: str) -> tuple[int, int]:
    lo, hi = (int(a) for a in actors)
    if not 1 <= lo <= hi:
        raise ValueError(f"actors: expected (MIN, MAX) with 1 <= MIN <= MAX, got {tuple(actors)}")
    if batch_size < 1:
        raise ValueError(f"batch_size: expected >= 1, got {batch_size}")
    if cpus_per_actor < 0 or read_cpus < 0:
        raise ValueError(f"cpus_per_actor, read_cpus: expected >= 0, got {cpus_per_actor}, "
                         f"{read_cpus}")
    if format not in FORMATS:
        raise ValueError(f"format: expected one of {FORMATS}, got {format!r}")
    return lo, hi


def _check_model(model: Any, backend: str, options: dict[str, Any]) -> tuple[Any, str]:
    """Before any actor starts: the backend and its options are known, a model path exists
    (made absolute: the actors may run elsewhere). Returns the model and the backend's name
    (aliases resolved). Raises ValueError saying what is wrong."""
    from maskrt.backends.registry import check_options, resolve

    backend = resolve(backend).name
    check_options(backend, options)
    if isinstance(model, (str, os.PathLike)):
        if not Path(model).is_file():
            raise ValueError(f"model: expected a checkpoint or .onnx file, got {str(model)!r}, "
                             "which does not exist")
        return str(Path(model).resolve()), backend
    return model, backend


def _gpus_per_actor(requested: float | None, backend: str, available: float) -> float:
    if requested is None:
        return 1.0 if available >= 1 and backend != "onnxruntime" else 0.0
    if requested < 0:
        raise ValueError(f"gpus_per_actor: expected >= 0, got {requested}")
    if requested > 0 and available <= 0:
        raise ValueError(f"gpus_per_actor: expected a cluster with GPUs for {requested} GPU(s) per "
                         "actor, but the cluster has none")
    return float(requested)


def _consume(rows: Any, writer: RecordWriter, counts: RecordCounts, progress: "_Progress") -> None:
    """Take the scored rows as they come (pyarrow tables), write and count each frame once."""
    with warnings.catch_warnings():  # Ray Data counts one read task per video as one input
        # and warns that actors will idle; small blocks (_small_blocks) feed them all
        warnings.filterwarnings("ignore", "The minimum number of concurrent actors")
        for table in rows.iter_batches(batch_size=None, batch_format="pyarrow"):
            writer.write(counts.add(table.to_pylist()))
            progress.maybe_print()
    progress.finish()


@contextlib.contextmanager
def _small_blocks() -> Iterator[None]:
    """Ray Data's target_max_block_size at BLOCK_BYTES while a job is built and runs: a read
    task's rows go on as they come, to every actor (with the default 128 MiB, all of a video's
    frames would be one block, scored by one actor)."""
    from ray.data import DataContext

    context = DataContext.get_current()
    saved = context.target_max_block_size
    context.target_max_block_size = BLOCK_BYTES
    try:
        yield
    finally:
        context.target_max_block_size = saved


class _Progress:
    """A line on ``stream`` every ``interval`` s: rows so far, scored, failed, frames/s."""

    def __init__(self, stream: TextIO | None, interval: float, counts: RecordCounts,
                 t0: float) -> None:
        self.stream, self.interval, self.counts, self.t0 = stream, interval, counts, t0
        self._next = t0 + interval

    def maybe_print(self) -> None:
        if self.stream is not None and self.interval > 0 and time.perf_counter() >= self._next:
            self._next = time.perf_counter() + self.interval
            self._print()

    def finish(self) -> None:
        if self.stream is not None and self.interval > 0:
            self._print()

    def _print(self) -> None:
        elapsed = time.perf_counter() - self.t0
        total: Counter[str] = self.counts.totals()
        rate = total["scored"] / elapsed if elapsed > 0 else 0.0
        self.stream.write(f"[{elapsed:6.1f}s] {len(self.counts)} rows: {sum(total.values())} "  # type: ignore[union-attr]
                          f"frames, {total['scored']} scored, {total['failed']} failed, "
                          f"{rate:.1f} fr/s\n")
        self.stream.flush()  # type: ignore[union-attr]

