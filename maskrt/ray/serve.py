"""Online scoring on Ray Serve: ``serve run maskrt.ray.serve:app`` (defaults), or
``serve run maskrt.ray.serve:build_app max_batch=16 replicas=2`` (options as ``key=value``), or
``maskrt ray serve``.

The deployment (:class:`MaskDeployment`) loads the classifier and, with ``regions="faces"`` (the
default), ``maskrt score``'s face detector once per replica, and batches requests across callers
with ``@serve.batch`` (``max_batch`` frames, or ``batch_wait_ms`` after the first). Each frame
gives every face, found and decided as :meth:`maskrt.Engine.faces` (``maskrt score`` on a photo)
does (:mod:`maskrt.ray.serve_faces`); ``regions="frame"``: the whole frame's one decision, the
same as ``maskrt score --regions frame``.

* HTTP: ``POST /`` with an encoded image as the body (JPEG, PNG, ...) -> ``{"status": "scored",
  "faces": [{region_index, box, face_score, landmarks, label, class_index, p_with_mask,
  p_without_mask}, ...]}`` (boxes in the image's pixels, best face score first);
  ``POST /?explain=1`` adds ``overlay``: the frame with its faces' CAMs, boxes and labels, JPEG
  as base64. ``regions="frame"``: the decision JSON (``status``, ``label``, ``class_index``,
  ``p_with_mask``, ``p_without_mask``, ``box``, ``faces`` 1). ``POST /`` with JSON ``{"images":
  [base64, ...]}`` -> ``{"results": [...]}``. An image that cannot be decoded: HTTP 400 with
  ``status`` "failed" and the ``reason``. A full queue: HTTP 503 (Serve's back-pressure).
* Python: ``handle.score.remote(frame, explain=False).result()`` with a uint8 BGR ``[H, W, 3]``
  array; ``handle.score_encoded.remote(data)`` with encoded bytes; :func:`score_with_retry`
  retries what a lost replica failed and lets back-pressure through.

Admission: ``max_ongoing_requests`` per replica, ``max_queued_requests`` per caller (beyond it
Serve answers ``BackPressureError`` at once instead of queueing: the caller decides, e.g. the
ingest actors record the frame as ``dropped``); ``replicas`` fixed or ``autoscale`` (MIN, MAX).
"""

from __future__ import annotations

import asyncio
import base64
import json
import os
import time
from typing import Any

import numpy as np

from maskrt.ray import require_ray

require_ray("serve")

from ray import serve  # noqa: E402 - after the check that names pip install maskrt[ray]

from maskrt.image import ImageError, decode_with_size  # noqa: E402
from maskrt.ray.serve_faces import FaceScorer, frame_answers  # noqa: E402
from maskrt.stream.records import FAILED, SCORED  # noqa: E402

APP_NAME = "maskrt"
DEPLOYMENT_NAME = "MaskDeployment"
#: the options of :func:`build_app` and their defaults
DEFAULTS: dict[str, Any] = {
    "replicas": 1, "autoscale": None, "max_batch": 8, "batch_wait_ms": 10.0,
    "max_ongoing_requests": 16, "max_queued_requests": 64, "num_cpus": 0.5, "num_gpus": 0.0,
    "model": None, "backend": "onnxruntime", "backend_options": None,
    "regions": "faces", "preset": "default", "face_options": None,
}
#: what ``?explain=`` takes as yes
_YES = ("1", "true", "yes", "on")


@serve.deployment(name=DEPLOYMENT_NAME)
class MaskDeployment:
    """One scorer per replica; requests batched across callers (see the module docstring)."""

    def __init__(self, model: Any = None, backend: str = "onnxruntime",
                 backend_options: dict[str, Any] | None = None, max_batch: int = 8,
                 batch_wait_ms: float = 10.0, regions: str = "faces", preset: str = "default",
                 face_options: dict[str, Any] | None = None) -> None:
        from maskrt.ray.cluster import quiet_worker
        from maskrt.ray.scorer import MaskScorer

        quiet_worker()
        self.regions = regions
        if regions == "frame":
            self.scorer: Any = MaskScorer(model, backend, backend_options=backend_options)
        else:
            self.scorer = FaceScorer(model, backend, backend_options=backend_options,
                                     preset=preset, face_options=face_options)
        self.score_frames.set_max_batch_size(int(max_batch))
        self.score_frames.set_batch_wait_timeout_s(float(batch_wait_ms) / 1000.0)
        self.batches = self.frames = self.largest = 0  # for stats()

    @serve.batch(max_batch_size=8, batch_wait_timeout_s=0.01)
    async def score_frames(self, items: list[tuple[Any, Any, bool]]) -> list[dict[str, Any]]:
        # In a thread: the replica's event loop keeps answering Serve's probes meanwhile.
        answers = await asyncio.to_thread(self._answers, items)
        self.batches, self.frames = self.batches + 1, self.frames + len(items)
        self.largest = max(self.largest, len(items))
        return answers

    def _answers(self, items: list[tuple[Any, Any, bool]]) -> list[dict[str, Any]]:
        if self.regions == "frame":
            return frame_answers(self.scorer, items)
        return self.scorer.answers(items)

    async def score(self, frame: np.ndarray, explain: bool = False) -> dict[str, Any]:
        """One uint8 BGR frame [H, W, 3] of any size -> its faces (``regions="frame"``: its
        decision); ``explain``: with the frame's ``overlay`` (JPEG, base64)."""
        return await self.score_frames((frame, None, bool(explain)))

    async def score_encoded(self, data: bytes, explain: bool = False) -> dict[str, Any]:
        """Encoded image bytes -> as :meth:`score` (``failed`` with the reason when
        undecodable); boxes in the pixels of the image as stored (also when decoded smaller)."""
        try:
            frame, original = decode_with_size(data, what="request body")
        except ImageError as err:
            return {"status": FAILED, "reason": str(err)}
        return await self.score_frames((frame, original, bool(explain)))

    async def __call__(self, request: Any) -> Any:
        from starlette.responses import JSONResponse

        body = await request.body()
        explain = request.query_params.get("explain", "").lower() in _YES
        if request.headers.get("content-type", "").startswith("application/json"):
            try:
                images = [base64.b64decode(item, validate=True)
                          for item in json.loads(body)["images"]]
            except (ValueError, KeyError, TypeError) as err:
                return JSONResponse({"status": FAILED, "reason": "expected JSON {\"images\": "
                                     f"[base64 of an encoded image, ...]}}, got: {err}"}, 400)
            results = await asyncio.gather(*(self.score_encoded(data, explain)
                                             for data in images))
            return JSONResponse({"results": list(results)})
        result = await self.score_encoded(body, explain)
        return JSONResponse(result, status_code=200 if result["status"] == SCORED else 400)

    def stats(self) -> dict[str, Any]:
        """This replica's process id, what it scores (``regions``) and the sizes of the batches
        it scored."""
        return {"pid": os.getpid(), "regions": self.regions, "batches": self.batches,
                "frames": self.frames, "largest": self.largest}


def app_options(args: dict[str, Any] | None = None) -> dict[str, Any]:
    """The options of :func:`build_app`, defaults filled in and ``serve run``'s strings parsed;
    unknown keys are a ValueError naming the known ones."""
    options = dict(DEFAULTS)
    unknown = sorted(set(args or {}) - set(DEFAULTS))
    if unknown:
        raise ValueError(f"maskrt.ray.serve: unknown option(s) {unknown}; expected {sorted(DEFAULTS)}")
    for key, value in (args or {}).items():
        if isinstance(value, str) and key in ("replicas", "max_batch", "max_ongoing_requests",
                                              "max_queued_requests"):
            value = int(value)
        elif isinstance(value, str) and key in ("batch_wait_ms", "num_cpus", "num_gpus"):
            value = float(value)
        elif isinstance(value, str) and key == "autoscale":
            value = tuple(int(v) for v in value.split(","))
        options[key] = value
    if options["autoscale"] is not None:
        lo, hi = options["autoscale"]
        if not 1 <= lo <= hi:
            raise ValueError(f"autoscale: expected MIN,MAX with 1 <= MIN <= MAX, got {lo},{hi}")
    for key in ("replicas", "max_batch", "max_ongoing_requests"):
        if int(options[key]) < 1:
            raise ValueError(f"{key}: expected >= 1, got {options[key]}")
    if isinstance(options["face_options"], str):  # serve run: "key=value;key=value"
        from maskrt.detect import parse_face_options

        options["face_options"] = parse_face_options(
            [pair for pair in options["face_options"].split(";") if pair.strip()])
    from maskrt.ray.units import unit_scorer_options

    unit_scorer_options(options["regions"], options["preset"], options["face_options"], "auto",
                        True, None)  # ValueError naming what is wrong, before any replica starts
    return options


def build_app(args: dict[str, Any] | None = None) -> Any:
    """The Serve application (``serve.run(build_app({...}))``); options: :data:`DEFAULTS`."""
    o = app_options(args)
    deployment: dict[str, Any] = {
        "max_ongoing_requests": int(o["max_ongoing_requests"]),
        "max_queued_requests": int(o["max_queued_requests"]),
        "ray_actor_options": {"num_cpus": float(o["num_cpus"]), "num_gpus": float(o["num_gpus"])},
        # a line per request is the metrics' job; the replicas log warnings and errors
        "logging_config": {"enable_access_log": False, "log_level": "WARNING"},
    }
    if o["autoscale"] is not None:
        lo, hi = o["autoscale"]
        deployment["autoscaling_config"] = {
            "min_replicas": lo, "max_replicas": hi,
            "target_ongoing_requests": max(1, int(o["max_batch"]))}
    else:
        deployment["num_replicas"] = int(o["replicas"])
    return MaskDeployment.options(**deployment).bind(
        model=o["model"], backend=o["backend"], backend_options=o["backend_options"],
        max_batch=int(o["max_batch"]), batch_wait_ms=float(o["batch_wait_ms"]),
        regions=o["regions"], preset=o["preset"], face_options=o["face_options"])


def retryable_errors() -> tuple[type[BaseException], ...]:
    """Errors of a request that a retry can cure: its replica died or became unreachable."""
    from ray.exceptions import ActorUnavailableError, RayActorError
    from ray.serve.exceptions import ReplicaUnavailableError

    return (RayActorError, ActorUnavailableError, ReplicaUnavailableError)


def score_with_retry(handle: Any, frame: np.ndarray, *, retries: int = 3,
                     timeout_s: float = 60.0) -> dict[str, Any]:
    """``handle.score.remote(frame).result()``, sent again (up to ``retries`` times, backing off)
    when the replica that had it died; ``BackPressureError`` and other errors pass through."""
    errors = retryable_errors()
    attempt = 0
    while True:
        try:
            return handle.score.remote(frame).result(timeout_s=timeout_s)
        except errors:
            if attempt >= retries:
                raise
            time.sleep(min(2.0, 0.1 * 2 ** attempt))
            attempt += 1


def get_handle(app_name: str = APP_NAME) -> Any:
    """The handle of the running deployment of application ``app_name``."""
    return serve.get_deployment_handle(DEPLOYMENT_NAME, app_name=app_name)


#: ``serve run maskrt.ray.serve:app``: the deployment with the defaults
app = build_app()
