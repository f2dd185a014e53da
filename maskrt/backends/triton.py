"""A Triton Inference Server as a backend: the graph runs in the server, maskrt sends uint8 batches.

The server serves the repository ``maskrt export --triton-repo DIR`` writes (any platform), over
gRPC (default, ``localhost:8001``) or HTTP (``localhost:8000``) with ``tritonclient``, imported
when the backend is made (``pip install 'maskrt[triton]'``). Batches larger than the model's
``max_batch_size`` go as several requests. CAM weights come from the local graph (``--model``,
default the shipped one): the server's config names its graph's SHA-256 and a mismatch is logged.

Failures: a server that cannot be reached, a model that is not ready, a request that times out
raise :class:`TritonUnavailable` naming the server and the reason; in streams that batch's frames
become ``failed`` records with it. The backend then drops its connection and reconnects on a
later call, after a back-off (0.5 s doubling to 8 s, like live sources): calls during the back-off
fail at once, saying when the next attempt is. Other server errors raise :class:`TritonError`.
Both are :class:`BackendUnavailable`, so the command line reports them in one line.

``pipeline="faces"``: the server also serves the whole faces pipeline (``maskrt export
--triton-repo DIR --pipeline faces``): :meth:`TritonBackend.served_faces` sends a frame to its
entry model (``faces_model``, default ``maskrt_faces``) and gets its faces, classified, back
(``backends/triton_faces.py``); the pipeline's face stage is then
:class:`~maskrt.detect.served.ServedFaceStage`. Crops the pipeline still classifies itself
(a tracked candidate under report_threshold) go to the classifier model as before.
"""

from __future__ import annotations

import logging
import threading
import time
from typing import Any

import numpy as np

from maskrt.backends.base import Backend, BackendUnavailable
from maskrt.backends.triton_faces import (FACES_MODEL, FacesModel, ServedFaces,
                                          describe_faces_model, faces_inputs, faces_outputs,
                                          parse_faces)
from maskrt.graph.export import INPUT_NAME, OUTPUT_NAMES
from maskrt.labels import FEATURE_CHANNELS, FEATURE_SIZE, INPUT_SIZE

log = logging.getLogger("maskrt.backends.triton")

PROTOCOLS = ("grpc", "http")
PIPELINES = ("classifier", "faces")
DEFAULT_URLS = {"grpc": "localhost:8001", "http": "localhost:8000"}
DEFAULT_MODEL = "maskrt"
INSTALL_HINT = "pip install 'maskrt[triton]'"
BACKOFF_START_S, BACKOFF_MAX_S = 0.5, 8.0
#: gRPC statuses (and words in HTTP errors) that mean "not now": reconnect after a back-off.
TRANSIENT_STATUSES = ("UNAVAILABLE", "DEADLINE_EXCEEDED", "NOT_FOUND", "ABORTED", "CANCELLED")
TRANSIENT_WORDS = ("unavailable", "not ready", "unknown model", "no available version",
                   "not healthy", "timed out", "timeout", "deadline", "connect", "reset by peer",
                   "broken pipe", "socket closed")


class TritonError(BackendUnavailable):
    """The server refused or failed a request; the message names the server and the reason."""


class TritonUnavailable(TritonError):
    """The server cannot serve the model now (unreachable, model not ready, timed out); the
    backend reconnects on a later call, after a back-off."""


def client_api(protocol: str) -> Any:
    """``tritonclient.grpc`` or ``tritonclient.http``; BackendUnavailable naming the extra to
    install when tritonclient (or the protocol's part of it) is missing."""
    if protocol not in PROTOCOLS:
        raise ValueError(f"triton backend: protocol: expected one of {', '.join(PROTOCOLS)}, got "
                         f"{protocol!r}")
    try:
        if protocol == "grpc":
            import tritonclient.grpc as api
        else:
            import tritonclient.http as api
    except ImportError as err:
        raise BackendUnavailable(f"the triton backend needs tritonclient[{protocol}], which is not "
                                 f"installed here ({err}): {INSTALL_HINT}") from err
    return api


class TritonBackend(Backend):
    """Runs the graph on a Triton Inference Server.

    url: ``host:port`` (default localhost:8001 for grpc, localhost:8000 for http). model_name:
    the model's name in the server's repository (default "maskrt"; ``--backend-option model=``
    on the command line); version: "" for the latest.
    protocol: "grpc" or "http". timeout: seconds a request (and a connection check) may take.
    pipeline: "classifier" (default) or "faces" (frames to ``faces_model``; see the module).
    The server must be up and the model ready when the backend is made; later outages are
    survived (see the module's docstring).
    """

    name = "triton"
    precision = "fp32"

    def __init__(self, graph: Any, *, url: str | None = None, model_name: str = DEFAULT_MODEL,
                 version: str = "", protocol: str = "grpc", timeout: float = 30.0,
                 pipeline: str = "classifier", faces_model: str = FACES_MODEL) -> None:
        super().__init__(graph)
        self._api = client_api(protocol)
        if not timeout > 0:
            raise ValueError(f"triton backend: timeout: expected seconds > 0, got {timeout}")
        if pipeline not in PIPELINES:
            raise ValueError(f"triton backend: pipeline: expected one of {', '.join(PIPELINES)}, "
                             f"got {pipeline!r}")
        #: the served faces pipeline's entry model (None: classifier only)
        self.faces_model = faces_model if pipeline == "faces" else None
        self.faces_info: FacesModel | None = None
        from tritonclient.utils import InferenceServerException

        self._server_error = InferenceServerException
        self.protocol, self.url = protocol, url or DEFAULT_URLS[protocol]
        self.model, self.version, self.timeout = model_name, str(version), float(timeout)
        self._lock = threading.Lock()
        self._client: Any = None
        self._failures, self._retry_at, self._last_error = 0, 0.0, ""
        self.reconnects = 0
        try:
            self._client = self._connect()
            self._describe_model(self._client)
            if self.faces_model is not None:
                self.faces_info = describe_faces_model(self._client, self.faces_model,
                                                       self.version, self._as_json())
        except (InferenceServerException, OSError) as err:
            self.close()
            raise TritonUnavailable(f"{self._where()}: {self._reason(err)[0]}") from err
        except BaseException:
            self.close()
            raise

    # ------------------------------------------------------------------ inference

    def _infer_host(self, images: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        try:
            client = self._ready_client()
            parts = [self._request(client, images[i:i + self.max_batch])
                     for i in range(0, len(images), self.max_batch)]
        except TritonError:
            raise  # already reported (a back-off, a failed reconnection, a malformed answer)
        except (self._server_error, OSError) as err:
            raise self._failed(err) from err
        self._succeeded()
        if len(parts) == 1:
            return parts[0]
        return (np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts]))

    def _request(self, client: Any, images: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        tensor = self._api.InferInput(INPUT_NAME, list(images.shape), "UINT8")
        tensor.set_data_from_numpy(images)
        outputs = [self._api.InferRequestedOutput(name) for name in OUTPUT_NAMES]
        timeout = {"client_timeout": self.timeout} if self.protocol == "grpc" else {}
        result = client.infer(self.model, [tensor], model_version=self.version, outputs=outputs,
                              **timeout)
        logits, features = (result.as_numpy(name) for name in OUTPUT_NAMES)
        n = len(images)
        expected = ((n, 2), (n, FEATURE_CHANNELS, FEATURE_SIZE, FEATURE_SIZE))
        got = tuple(None if a is None else tuple(a.shape) for a in (logits, features))
        if got != expected:
            raise TritonError(f"{self._where()}: expected outputs logits{list(expected[0])} and "
                              f"features{list(expected[1])}, got {got}")
        return logits, features

    @property
    def faces_service(self) -> "TritonBackend | None":
        """This backend when it serves the faces pipeline (the face stage asks for it)."""
        return self if self.faces_model is not None else None

    def served_faces(self, frame: np.ndarray, *, scale: float | None = None,
                     features: bool = False, candidates: bool = True) -> ServedFaces:
        """One frame's faces from the faces model (see ``backends/triton_faces.py``): detected
        at ``scale`` when given (else by the server's scale rule), with the candidates under
        report_threshold after the reported faces (``candidates``) and the reported faces' CAM
        features (``features``). ValueError for a frame that is not uint8[H, W, 3]."""
        if self.faces_model is None:
            raise ValueError(f"{self._where()}: served_faces needs pipeline=faces")
        inputs = faces_inputs(self._api, frame, scale, features, candidates)
        timeout = {"client_timeout": self.timeout} if self.protocol == "grpc" else {}
        try:
            client = self._ready_client()
            result = client.infer(self.faces_model, inputs, model_version=self.version,
                                  outputs=faces_outputs(self._api, features), **timeout)
            faces = parse_faces(result, features)
        except TritonError:
            raise
        except ValueError as err:
            raise TritonError(f"{self._where(self.faces_model)}: {err}") from err
        except (self._server_error, OSError) as err:
            raise self._failed(err, self.faces_model) from err
        self._succeeded()
        return faces

    # ------------------------------------------------------------------ connection and back-off

    def _ready_client(self) -> Any:
        """The connected client; during a back-off TritonUnavailable at once, after it a new
        connection (whose failure starts the next, longer back-off)."""
        with self._lock:
            if self._client is not None:
                return self._client
            wait = self._retry_at - time.monotonic()
            if wait > 0:
                raise TritonUnavailable(f"{self._where()}: {self._last_error}; next reconnection "
                                        f"attempt in {wait:.1f} s")
        try:
            client = self._connect()
        except (self._server_error, OSError, TritonUnavailable) as err:
            raise self._failed(err) from err
        with self._lock:
            if self._client is None:
                self._client = client
                return client
        client.close()  # another thread reconnected first
        return self._client

    def _connect(self) -> Any:
        """A new client, once the server is live and the model ready (TritonUnavailable if not)."""
        if self.protocol == "grpc":
            client = self._api.InferenceServerClient(self.url)
            timeout: dict[str, Any] = {"client_timeout": self.timeout}
        else:
            client = self._api.InferenceServerClient(self.url, connection_timeout=self.timeout,
                                                     network_timeout=self.timeout)
            timeout = {}
        try:
            if not client.is_server_live(**timeout):
                raise TritonUnavailable(f"{self._where()}: the server is not live")
            for model in (self.model, self.faces_model):
                if model is not None and not client.is_model_ready(model, self.version,
                                                                   **timeout):
                    raise TritonUnavailable(f"{self._where()}: model {model!r} (version "
                                            f"{self.version or 'latest'}) is not ready on the "
                                            f"server")
        except BaseException:
            client.close()
            raise
        return client

    def _failed(self, err: BaseException, model: str | None = None) -> TritonError:
        """The error to raise for ``err`` (a request to ``model``, default the classifier's); a
        transient one drops the connection and starts a back-off before the next attempt."""
        reason, transient = self._reason(err)
        if not transient:
            return TritonError(f"{self._where(model)}: {reason}")
        with self._lock:
            client, self._client = self._client, None
            self._failures += 1
            delay = min(BACKOFF_MAX_S, BACKOFF_START_S * 2 ** (self._failures - 1))
            self._retry_at = time.monotonic() + delay
            self._last_error = reason
        if client is not None:
            client.close()
        (log.warning if self._failures == 1 else log.info)(
            "%s: %s; reconnecting in %.1f s (attempt %d failed)", self._where(model), reason,
            delay, self._failures)
        return TritonUnavailable(f"{self._where(model)}: {reason}; reconnecting in {delay:.1f} s")

    def _succeeded(self) -> None:
        if self._failures:
            with self._lock:
                failures, self._failures = self._failures, 0
                self.reconnects += 1
            log.warning("%s: reconnected after %d failed attempt(s)", self._where(), failures)

    def _reason(self, err: BaseException) -> tuple[str, bool]:
        """(what went wrong, in one line; whether it is worth reconnecting for)."""
        if isinstance(err, TritonError):
            text = str(err).removeprefix(f"{self._where()}: ")
            return text, isinstance(err, TritonUnavailable)
        if isinstance(err, self._server_error):
            status = str(err.status() or "")
            lines = (err.message() or str(err)).strip().splitlines()
            text = lines[0] if lines else status or type(err).__name__
            lowered = text.lower()
            transient = any(s in status for s in TRANSIENT_STATUSES) or \
                any(w in lowered for w in TRANSIENT_WORDS)
            if "DEADLINE_EXCEEDED" in status or "deadline exceeded" in lowered:
                text = f"no answer within {self.timeout:g} s (timeout): {text}"
            elif "UNAVAILABLE" in status:
                text = f"server unreachable: {text}"
            return text, transient
        if isinstance(err, TimeoutError):
            return f"no answer within {self.timeout:g} s (timeout): {err}", True
        if isinstance(err, OSError):
            return f"server unreachable: {type(err).__name__}: {err}", True
        return f"{type(err).__name__}: {err}", False

    # ------------------------------------------------------------------ the model's description

    def _describe_model(self, client: Any) -> None:
        """Check the served model's interface, read its max batch size and platform."""
        metadata = client.get_model_metadata(self.model, self.version, **self._as_json())
        config = client.get_model_config(self.model, self.version, **self._as_json())
        config = config.get("config", config)  # gRPC wraps it
        server = client.get_server_metadata(**self._as_json())
        self.server_version = str(server.get("version", "?"))
        inputs = {t["name"]: (t["datatype"], [int(d) for d in t["shape"]])
                  for t in metadata.get("inputs", [])}
        outputs = [t["name"] for t in metadata.get("outputs", [])]
        expected = ("UINT8", [-1, INPUT_SIZE, INPUT_SIZE, 3])
        if inputs.get(INPUT_NAME) != expected or not set(OUTPUT_NAMES) <= set(outputs):
            raise ValueError(f"{self._where()}: expected input {INPUT_NAME} UINT8[-1,{INPUT_SIZE},"
                             f"{INPUT_SIZE},3] and outputs {list(OUTPUT_NAMES)}, got inputs "
                             f"{inputs} and outputs {outputs}")
        self.max_batch = int(config.get("max_batch_size", 0))
        if self.max_batch < 1:
            raise ValueError(f"{self._where()}: expected a model with max_batch_size >= 1 (as "
                             f"maskrt export --triton-repo writes), got {self.max_batch}")
        self.platform = config.get("platform") or config.get("backend") or "?"
        parameters = config.get("parameters", {})
        self.server_onnx_sha256 = parameters.get("maskrt_onnx_sha256", {}).get("string_value")
        self._compare_graphs()

    def _as_json(self) -> dict[str, Any]:
        return {"as_json": True} if self.protocol == "grpc" else {}

    def _compare_graphs(self) -> None:
        """Log when the server runs another graph than the local one the CAM weights come from
        (only when both are known without exporting anything)."""
        if not self.server_onnx_sha256 or self.graph.source is not None:
            return
        from maskrt.graph.export import file_sha256

        local = file_sha256(self.graph.onnx_path())
        if local != self.server_onnx_sha256:
            log.warning("%s serves graph %s..., the local graph (%s, which the CAM weights come "
                        "from) is %s...; give --model the graph the repository was written from",
                        self._where(), self.server_onnx_sha256[:16], self.graph.origin, local[:16])

    def _where(self, model: str | None = None) -> str:
        return f"triton server {self.url} ({self.protocol}), model {model or self.model}"

    def describe(self) -> str:
        faces = "" if self.faces_info is None else \
            (f"; faces model {self.faces_info.name} (preset {self.faces_info.preset}, face "
             f"options {list(self.faces_info.face_options) or 'none'})")
        return (f"triton {self.server_version} {self.protocol} {self.url}, model {self.model} "
                f"({self.platform}, max batch {self.max_batch}){faces}")

    def close(self) -> None:
        with self._lock:
            client, self._client = self._client, None
        if client is not None:
            client.close()
        super().close()
