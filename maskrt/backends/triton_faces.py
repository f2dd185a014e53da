"""The client side of a served faces pipeline (``--backend triton --backend-option
pipeline=faces``): whole frames to the ``maskrt_faces`` model of a repository that ``maskrt
export --triton-repo DIR --pipeline faces`` wrote, and its faces back.

The requests, the answers' checks and the model's description only; the connection, its errors
and the back-off are :class:`~maskrt.backends.triton.TritonBackend`'s, which calls these.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from maskrt.labels import FEATURE_CHANNELS, FEATURE_SIZE

FACES_MODEL = "maskrt_faces"
#: the outputs asked for (``features`` too when asked)
FACE_OUTPUTS = ("boxes", "crop_boxes", "scores", "landmarks", "logits", "used_scale",
                "faces_found")


@dataclass
class ServedFaces:
    """One frame's faces as the server found and classified them.

    boxes, crop_boxes: float32[F, 4] frame pixels (the face; what was classified); scores:
    float32[F]; landmarks: float32[F, 5, 2]. The first ``reported`` faces are the reported ones,
    with ``logits`` float32[R, 2] and, when asked, ``features`` float32[R, 512, 7, 7]; the
    others (when candidates were asked for) are the candidates under report_threshold.
    scale: the detector's factor; found: the candidates before the max_faces cap.
    """

    boxes: np.ndarray
    crop_boxes: np.ndarray
    scores: np.ndarray
    landmarks: np.ndarray
    logits: np.ndarray
    features: np.ndarray | None
    scale: float
    found: int

    @property
    def reported(self) -> int:
        return len(self.logits)


@dataclass(frozen=True)
class FacesModel:
    """What the served entry model's config says: its face settings and graphs."""

    name: str
    preset: str
    face_options: tuple[str, ...]
    detector_graph: str
    onnx_sha256: str | None


def describe_faces_model(client: Any, model: str, version: str, as_json: dict[str, Any]
                         ) -> FacesModel:
    """The entry model's settings (ValueError naming what was expected when its interface is
    not maskrt_faces')."""
    metadata = client.get_model_metadata(model, version, **as_json)
    config = client.get_model_config(model, version, **as_json)
    config = config.get("config", config)  # gRPC wraps it
    inputs = {t["name"]: (t["datatype"], [int(d) for d in t["shape"]])
              for t in metadata.get("inputs", [])}
    outputs = {t["name"] for t in metadata.get("outputs", [])}
    if inputs.get("frame") != ("UINT8", [-1, -1, 3]) or not set(FACE_OUTPUTS) <= outputs:
        raise ValueError(f"model {model}: expected input frame UINT8[-1,-1,3] and outputs "
                         f"{list(FACE_OUTPUTS)} (maskrt export --pipeline faces), got inputs "
                         f"{inputs} and outputs {sorted(outputs)}")
    parameters = {key: value.get("string_value", "")
                  for key, value in config.get("parameters", {}).items()}
    pairs = tuple(p for p in parameters.get("face_options", "").split(";") if p.strip())
    return FacesModel(model, parameters.get("preset") or "default", pairs,
                      parameters.get("detector_graph", "?"),
                      parameters.get("maskrt_onnx_sha256") or None)


def faces_inputs(api: Any, frame: np.ndarray, scale: float | None, features: bool,
                 candidates: bool) -> list[Any]:
    """The request's inputs (ValueError naming what came when ``frame`` is not uint8[H, W, 3])."""
    if not isinstance(frame, np.ndarray) or frame.dtype != np.uint8 or frame.ndim != 3 \
            or frame.shape[2] != 3:
        got = f"{frame.dtype}{list(frame.shape)}" if isinstance(frame, np.ndarray) else \
            type(frame).__name__
        raise ValueError(f"frame: expected a uint8[H, W, 3] BGR array, got {got}")
    tensor = api.InferInput("frame", list(frame.shape), "UINT8")
    tensor.set_data_from_numpy(np.ascontiguousarray(frame))
    inputs = [tensor]
    for name, value, datatype in (("scale", scale, "FP32"), ("return_features", features, "BOOL"),
                                  ("candidates", candidates, "BOOL")):
        if value is None or value is False:
            continue
        extra = api.InferInput(name, [1], datatype)
        extra.set_data_from_numpy(np.array([value], np.float32 if datatype == "FP32" else bool))
        inputs.append(extra)
    return inputs


def faces_outputs(api: Any, features: bool) -> list[Any]:
    return [api.InferRequestedOutput(name)
            for name in (*FACE_OUTPUTS, *(("features",) if features else ()))]


def parse_faces(result: Any, features: bool) -> ServedFaces:
    """The answer as :class:`ServedFaces` (ValueError naming the shapes when they disagree)."""
    arrays = {name: result.as_numpy(name) for name in FACE_OUTPUTS}
    missing = sorted(name for name, array in arrays.items() if array is None)
    feats = result.as_numpy("features") if features else None
    if missing or (features and feats is None):
        raise ValueError(f"expected outputs {list(FACE_OUTPUTS)}"
                         f"{' and features' if features else ''}, got none for "
                         f"{missing or ['features']}")
    n = len(arrays["scores"])
    r = len(arrays["logits"])
    shapes = {name: tuple(a.shape) for name, a in arrays.items()}
    expected = {"boxes": (n, 4), "crop_boxes": (n, 4), "scores": (n,), "landmarks": (n, 10),
                "logits": (r, 2), "used_scale": (1,), "faces_found": (1,)}
    if feats is not None:
        shapes["features"] = tuple(feats.shape)
        expected["features"] = (r, FEATURE_CHANNELS, FEATURE_SIZE, FEATURE_SIZE)
    if shapes != expected or r > n:
        raise ValueError(f"expected output shapes {expected} (at most as many classified as "
                         f"faces), got {shapes}")
    return ServedFaces(arrays["boxes"], arrays["crop_boxes"], arrays["scores"],
                       arrays["landmarks"].reshape(n, 5, 2), arrays["logits"], feats,
                       float(arrays["used_scale"][0]), int(arrays["faces_found"][0]))
