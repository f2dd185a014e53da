"""The faces pipeline's entry model, ``maskrt_faces`` (copied as ``<repo>/maskrt_faces/1/model.py``
by ``maskrt export --triton-repo DIR --pipeline faces``): one whole frame in, its faces out.

Per request (one frame: ``max_batch_size`` 0, so frames of any size; see triton_faces_repo.py):
the detector graph runs in the repository's detector model (``maskrt_yunet``) through BLS
(``pb_utils.InferenceRequest``), decoded, NMS'd, scaled (the ``upscale="auto"`` rule) and made
into regions by maskrt's own code (:class:`~maskrt.detect.yunet.YuNetDetector` with a BLS
session, :func:`~maskrt.detect.face_stage`'s settings, :func:`~maskrt.detect.regions.face_regions`);
the reported faces' crops (:func:`maskrt.image.resize_to_input`) go to the classifier model
(``maskrt``) in ONE request (several when they exceed its max batch), where Triton's dynamic
batcher can join them with other frames' faces. Same faces as ``Engine.faces`` by construction.

Not self-contained: the server's Python needs maskrt (and so OpenCV and NumPy) installed, the
version that exported the repository. The face settings (preset, face options) are fixed at
export, in config.pbtxt's parameters.

Inputs: ``frame`` uint8[H, W, 3] BGR; optional ``scale`` float32[1] (detect at this factor, one
pass, no probe: a video's steady frames), ``return_features`` bool[1] (add ``features``),
``candidates`` bool[1] (append the candidates under report_threshold, unclassified, after the
reported faces). Outputs: ``boxes`` float32[F, 4] (x0, y0, x1, y1 frame pixels), ``crop_boxes``
float32[F, 4] (what was classified), ``scores`` float32[F], ``landmarks`` float32[F, 10];
for the R reported faces (the first R rows): ``logits`` and ``probabilities`` float32[R, 2]
(with_mask, without_mask), ``features`` float32[R, 512, 7, 7] when asked; ``used_scale``
float32[1] (the detector's factor), ``faces_found`` int32[1] (candidates before max_faces).

Tensors cross the stub through DLPack (see triton_model.py for why).
"""

import json
import math

import numpy as np

FRAME, SCALE, WANT_FEATURES, CANDIDATES = "frame", "scale", "return_features", "candidates"


class TritonPythonModel:
    """Triton's Python-backend entry points: initialize, execute, finalize."""

    def initialize(self, args):
        config = json.loads(args["model_config"])
        parameters = {key: value.get("string_value", "")
                      for key, value in config.get("parameters", {}).items()}
        self.faces = FrameFaces(parameters)

    def execute(self, requests):
        import triton_python_backend_utils as pb_utils

        return [self._answer(pb_utils, request) for request in requests]

    def _answer(self, pb_utils, request):
        try:
            frame = _input(pb_utils, request, FRAME)
            scale, want, candidates = (_input(pb_utils, request, name)
                                       for name in (SCALE, WANT_FEATURES, CANDIDATES))
            outputs = self.faces.answer(frame, scale, _flag(want, WANT_FEATURES),
                                        _flag(candidates, CANDIDATES), Bls(pb_utils))
        except Exception as err:  # noqa: BLE001 - this request gets the error, the model lives on
            error = pb_utils.TritonError(f"maskrt_faces: {err}")
            return pb_utils.InferenceResponse(output_tensors=[], error=error)
        tensors = [pb_utils.Tensor.from_dlpack(name, np.ascontiguousarray(array))
                   for name, array in outputs.items()]
        return pb_utils.InferenceResponse(output_tensors=tensors)

    def finalize(self):
        self.faces = None


def _input(pb_utils, request, name):
    tensor = pb_utils.get_input_tensor_by_name(request, name)
    return None if tensor is None else np.from_dlpack(tensor)


def _flag(value, name):
    if value is None:
        return False
    if value.size != 1:
        raise ValueError(f"{name}: expected one bool, got {value.dtype}{list(value.shape)}")
    return bool(value.reshape(-1)[0])


class Bls:
    """Requests to the repository's other models from inside ``execute`` (BLS)."""

    def __init__(self, pb_utils):
        self.pb_utils = pb_utils

    def run(self, model, name, array, outputs):
        """``model``'s ``outputs`` (NumPy copies) for the input ``name`` = ``array``."""
        pb_utils = self.pb_utils
        request = pb_utils.InferenceRequest(
            model_name=model, requested_output_names=list(outputs),
            inputs=[pb_utils.Tensor.from_dlpack(name, np.ascontiguousarray(array))])
        response = request.exec()
        if response.has_error():
            raise RuntimeError(f"model {model}: {response.error().message()}")
        return [np.array(np.from_dlpack(pb_utils.get_output_tensor_by_name(response, output)))
                for output in outputs]


class BlsSession:
    """ONNX Runtime's session interface (what YuNetDetector calls) over the detector model."""

    def __init__(self, model, outputs):
        from types import SimpleNamespace

        self.model = model
        self._outputs = [SimpleNamespace(name=name) for name in outputs]
        self.bls = None  # set per request: BLS works inside execute only

    def get_outputs(self):
        return list(self._outputs)

    def run(self, names, feeds):
        (name, array), = feeds.items()
        return self.bls.run(self.model, name, array, names)


class FrameFaces:
    """The faces of one frame with the face settings of config.pbtxt's parameters."""

    def __init__(self, parameters):
        from maskrt.detect import RUNTIME_KEYS, face_stage, parse_face_options, preset_settings
        from maskrt.detect.yunet import YuNetDetector

        preset = parameters.get("preset") or "default"
        pairs = [pair for pair in parameters.get("face_options", "").split(";") if pair.strip()]
        overrides = {key: value for key, value in parse_face_options(pairs).items()
                     if key not in RUNTIME_KEYS}
        settings = preset_settings(preset, **overrides)
        self.session = BlsSession(parameters["detector_model"],
                                  parameters["detector_outputs"].split(","))
        upscale = 1.0 if settings["upscale"] == "auto" else float(settings["upscale"])
        detector = YuNetDetector(score_threshold=settings["score_threshold"],
                                 nms_iou=settings["nms_iou"], upscale=upscale,
                                 pad=settings["detector_pad"],
                                 model=parameters.get("detector_graph", "yunet"),
                                 session=self.session)
        self.stage = face_stage(preset, detector, **overrides)
        self.classifier = parameters["classifier_model"]
        self.classifier_batch = max(1, int(parameters.get("classifier_max_batch") or 1))

    def answer(self, frame, scale, want_features, candidates, bls):
        """The outputs (name -> array) for one request."""
        from maskrt.detect.regions import face_regions, split_reported

        check_frame(frame)
        self.session.bls = bls
        frame = self.stage.sharpened(frame)  # as the local face stage: crops of it too
        found, used = self.detect(frame, check_scale(scale))
        stage = self.stage
        regions, _ = face_regions(found, frame.shape, widen=stage.widen, min_face=stage.min_face,
                                  max_faces=max(1, len(found)), box_fit=stage.box_fit)
        count, regions = len(regions), regions[:stage.max_faces]
        reported, unreported = split_reported(regions, stage.report_threshold)
        logits, features = self.classify(frame, reported, want_features, bls)
        faces = reported + (unreported if candidates else [])
        outputs = {
            "boxes": np.array([r.box for r in faces], np.float32).reshape(-1, 4),
            "crop_boxes": np.array([r.area for r in faces], np.float32).reshape(-1, 4),
            "scores": np.array([r.score for r in faces], np.float32).reshape(-1),
            "landmarks": np.array([np.asarray(r.landmarks).reshape(10) for r in faces],
                                  np.float32).reshape(-1, 10),
            "logits": logits, "probabilities": probabilities(logits),
            "used_scale": np.array([used], np.float32),
            "faces_found": np.array([count], np.int32)}
        if want_features:
            outputs["features"] = features
        return outputs

    def detect(self, frame, scale):
        """(the frame's detections, the detector's factor): at ``scale`` when given, else by
        the scale rule (probe, then the chosen scale), else at the preset's fixed upscale."""
        stage = self.stage
        if scale is not None:
            return stage.detector.detect([frame], [scale])[0], scale
        if stage.scale_rule is not None:
            chosen = []
            return stage.scale_rule.detect(stage.detector, [frame], chosen)[0], chosen[0]
        return stage.detector.detect([frame])[0], stage.detector.upscale

    def classify(self, frame, regions, want_features, bls):
        """(logits float32[R, 2], features float32[R, 512, 7, 7] or None) of the regions' crops,
        in as few classifier requests as its max batch allows (one, usually)."""
        from maskrt.image import resize_to_input

        if not regions:
            return np.zeros((0, 2), np.float32), np.zeros((0, 512, 7, 7), np.float32)
        crops = np.stack([resize_to_input(region.crop(frame)) for region in regions])
        names = ["logits", "features"] if want_features else ["logits"]
        parts = [bls.run(self.classifier, "images", crops[i:i + self.classifier_batch], names)
                 for i in range(0, len(crops), self.classifier_batch)]
        logits = np.concatenate([part[0] for part in parts]).astype(np.float32)
        features = np.concatenate([part[1] for part in parts]) if want_features else None
        return logits, features


def probabilities(logits):
    """maskrt's decision rule's softmax (engine.softmax: float64, then float32)."""
    values = np.asarray(logits, np.float64)
    if not len(values):
        return np.zeros((0, 2), np.float32)
    exp = np.exp(values - values.max(axis=-1, keepdims=True))
    return (exp / exp.sum(axis=-1, keepdims=True)).astype(np.float32)


def check_frame(frame):
    """ValueError naming what came unless ``frame`` is uint8[H, W, 3] within maskrt's max side."""
    from maskrt.image import MAX_SIDE

    shape = list(getattr(frame, "shape", ()))
    ok = (frame is not None and frame.dtype == np.uint8 and len(shape) == 3 and shape[2] == 3
          and 1 <= min(shape[:2]) and max(shape[:2]) <= MAX_SIDE)
    if not ok:
        what = "nothing" if frame is None else f"{frame.dtype}{shape}"
        raise ValueError(f"frame: expected uint8[H, W, 3] BGR with 1 <= H, W <= {MAX_SIDE}, "
                         f"got {what}")


def check_scale(scale):
    """The ``scale`` input as a float (None when not given); ValueError unless one finite > 0."""
    if scale is None:
        return None
    value = float(scale.reshape(-1)[0]) if scale.size == 1 else math.nan
    if not (math.isfinite(value) and value > 0):
        raise ValueError(f"scale: expected one finite factor > 0, got {scale.tolist()}")
    return value
