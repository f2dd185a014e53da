"""Finding faces: the :class:`Detector` interface, YuNet-n, and the stage that makes regions.

* ``base.py``: :class:`Detector` and :class:`Detections` (add another model by implementing it).
* ``yunet.py``: YuNet-n (shipped in ``maskrt/models/yunet``) on ONNX Runtime, with OpenCV's
  decoding and NMS, vectorised and batched over frames.
* ``yunet_torch.py``, ``yunet_tensorrt.py``: the same on a GPU, decoded with torch ops and
  torchvision's NMS, the network run as a torch module or as a TensorRT engine (built and
  cached like the classifier's).
* ``scale.py``: the detector's input scale chosen per frame (``upscale="auto"``).
* ``sharpen.py``: blurred frames sharpened before detection and classification (``sharpen``).
* ``regions.py``: detections -> clipped face boxes and widened crops.
* ``stage.py``: :class:`FaceStage`, the pipeline stage.

Presets (chosen on the scene ``val`` split; see README, "Faces in scenes"): ``default`` favours
finding the small faces of camera scenes, ``fast`` favours images per second. Both report as
faces only candidates at or above ``report_threshold`` (or on a confirmed track): the lower ones
rank faces for ``maskrt eval``'s mAP and keep tracks alive, but are not shown to people.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from maskrt.detect.regions import check_box_fit, check_report_threshold
from maskrt.detect.scale import ScaleRule
from maskrt.detect.sharpen import Sharpener

log = logging.getLogger("maskrt.detect")

#: where the detector runs (the same in every preset): its device ("auto": the classifier's CUDA
#: device when it has one and a GPU detector can run there, else the CPU), its backend, and the
#: folder of TensorRT engines (shared with the classifier's)
_RUNTIME_DEFAULTS: dict[str, Any] = {"detector_device": "auto", "detector_backend": "auto",
                                     "detector_engine_dir": "engines", "detector_model": "yunet-masks"}
#: the settings that say where the detector runs, not what it finds (a served faces pipeline
#: runs it in the server's detector model and ignores them)
RUNTIME_KEYS = tuple(_RUNTIME_DEFAULTS)
#: the detector graphs shipped in maskrt/models/yunet, by the name ``detector_model`` takes (any
#: other value is the path of a YuNet-compatible ONNX graph): "yunet-masks", the default, is
#: YuNet-n fine-tuned on scenes train (python -m maskrt.train.detector; MODEL.md, "The face
#: detector"); "yunet" the published YuNet-n
DETECTOR_MODELS = {"yunet-masks": "yunet_n_masks.onnx", "yunet": "yunet_n_dynamic.onnx",
                   "yunet-masks-seed1": "yunet_n_masks_seed1.onnx",
                   "yunet-masks-seed2": "yunet_n_masks_seed2.onnx"}
#: the ``accurate`` preset's detector: the default graph and two reruns of its recipe (seeds 1
#: and 2), each through the scale rule, their faces fused (maskrt.detect.ensemble)
ENSEMBLE_MODEL = "yunet-masks+yunet-masks-seed1+yunet-masks-seed2"
#: the detector's inputs are zero-padded at the bottom and right to multiples of
#: ``detector_pad`` (a multiple of 32, YuNet's coarsest stride). 32 costs the least. A GPU
#: runtime plans its convolutions once per input shape (cuDNN: on an H200 a folder of photos of
#: many sizes was detected at 19.3 ms a photo against 7.1 on 16 CPU cores); 128 makes shapes
#: repeat. On the CPU, scenes val / train mAP@0.5 0.894 / 0.907 at 32 and 0.895 / 0.908 at 128
#: (2026-12-04); its speed on a GPU is for the next GPU run (benchmarks/gpu/run.sh).
_PAD_DEFAULTS: dict[str, Any] = {"detector_pad": 32}
#: the scale rule's settings (used when ``upscale`` is "auto"; see maskrt.detect.scale)
_SCALE_DEFAULTS: dict[str, Any] = {key: getattr(ScaleRule, key) for key in
                                   ("face_target", "min_scale", "max_scale",
                                    "sequence_min_scale", "probe_every", "probe_cut",
                                    "large_side")}
#: the least face score of a reported face (records, overlays, events, metrics), chosen for the
#: fine-tuned detector by 5-fold cross-validation over scenes val (the detector trained on
#: train) for the best F1 of reported faces, class-aware at IoU 0.5 (benchmarks/tune_faces.py
#: --report-threshold --cv 5 --cv-splits val). The detector's lower candidates stay: mAP ranks
#: them, and the tracker keeps a known person's track with them.
REPORT_THRESHOLD = 0.82
MODELS_DIR = Path(__file__).resolve().parents[1] / "models" / "yunet"
#: detector and region settings of each preset
PRESETS: dict[str, dict[str, Any]] = {
    # The detector's scale chosen per frame (upscale "auto", maskrt.detect.scale; face_target
    # and max_scale by 5-fold cross-validation, benchmarks/tune_faces.py --cv 5; max_scale again
    # over scenes val for the fine-tuned detector, --cv-splits val): as good as a fixed 2x on photos like scenes/, and it holds on larger ones. A low
    # threshold keeps the small faces as candidates (about 12 per photo, ranked by eval's mAP;
    # about 4 reported and classified); faces under 8 px still matter there, so min_face
    # stays small. box_fit (fitted on scenes/train, benchmarks/fit_face_boxes.py): YuNet
    # frames brow to chin, people (and the scene annotations) mean the face with its mask, 10%
    # wider and lower; faces of 10 px and less it frames differently (their own fit, the last
    # four numbers: on photos halved, mAP@0.5 0.801 -> 0.834 on scenes val). The large faces'
    # part stays 0.95 high (the script now gives 0.94 over faces of 12 px and more): the
    # shipped detector was trained against it. sharpen: blurred frames' unsharp mask weight
    # (maskrt.detect.sharpen; sharp frames are left alone), on scenes val blurred by sigma 1 px
    # mAP@0.5 0.771 -> 0.866, unchanged photos as they were.
    "default": {"upscale": "auto", "score_threshold": 0.1, "nms_iou": 0.3, "widen": 1.2,
                "min_face": 4.0, "max_faces": 200,
                "box_fit": (1.10, 0.95, 0.0, 0.11, 0.98, 0.82, -0.01, 0.07),
                "report_threshold": REPORT_THRESHOLD, "sharpen": Sharpener.amount,
                **_PAD_DEFAULTS, **_SCALE_DEFAULTS, **_RUNTIME_DEFAULTS},
    # Native size and fewer, surer faces: about 3.7 classified per photo (mAP@0.5 0.717, 0.721
    # with box_fit; at threshold 0.5 it was 0.755 with 4.4 faces, 12% slower with INT8).
    "fast": {"upscale": 1.0, "score_threshold": 0.65, "nms_iou": 0.3, "widen": 1.2,
             "min_face": 4.0, "max_faces": 200, "box_fit": (1.09, 0.94, 0.0, 0.11),
             "report_threshold": REPORT_THRESHOLD, "sharpen": 0.0, **_PAD_DEFAULTS,
             **_SCALE_DEFAULTS, **_RUNTIME_DEFAULTS},
}
# The default preset with three detectors fused (three times the detector's time): photos
# scored offline, where the faces count more than the time. Chosen on scenes val by 5-fold
# cross-validation like the default's (benchmarks/tune_faces.py --cv 5 --cv-splits val
# --face-options detector_model=...): mAP@0.5 0.900 against 0.895, the report threshold 0.82
# again (precision 0.914 / recall 0.835 / 14.3 false without_mask alarms per 100 photos against
# 0.903 / 0.842 / 18.4). On camera clips it is mixed at less than half the frames/s, so video
# keeps the default: README, "Faces in scenes".
PRESETS["accurate"] = {**PRESETS["default"], "detector_model": ENSEMBLE_MODEL}
_DETECTOR_KEYS = ("upscale", "score_threshold", "nms_iou", *_PAD_DEFAULTS, *_RUNTIME_DEFAULTS)
#: what ``detector_backend`` accepts; "auto": ONNX Runtime on the CPU, on a GPU TensorRT where it
#: is installed, else torch
DETECTOR_BACKENDS = ("auto", "onnxruntime", "torch", "tensorrt")
#: what ``--regions`` / ``Pipeline(regions=)`` accept
REGION_MODES = ("faces", "frame")


def preset_settings(preset: str = "default", **overrides: Any) -> dict[str, Any]:
    """The settings of ``preset`` with ``overrides`` (ValueError naming the choices)."""
    if preset not in PRESETS:
        raise ValueError(f"preset: expected one of {sorted(PRESETS)}, got {preset!r}")
    settings = dict(PRESETS[preset])
    unknown = sorted(set(overrides) - set(settings))
    if unknown:
        raise ValueError(f"face options: unknown {unknown}; expected some of {sorted(settings)}")
    settings.update({k: v for k, v in overrides.items() if v is not None})
    settings["report_threshold"] = check_report_threshold(settings["report_threshold"])
    return settings


def make_detector(preset: str = "default", classifier_device: Any = None,
                  threads: int | None = None, **overrides: Any) -> Any:
    """The YuNet detector of ``preset`` on ``detector_device`` ("auto", "cpu", "cuda", "cuda:1";
    see :func:`resolve_detector_device`) with ``detector_backend`` (see
    :func:`resolve_detector_backend`): ONNX Runtime on the CPU (``threads``: its intra-op
    threads, default its own choice); on a GPU its TensorRT engine, or a torch module
    (maskrt[gpu]). A ``detector_model`` of several graphs joined by "+" gives an
    :class:`~maskrt.detect.ensemble.EnsembleDetector` of them."""
    settings = preset_settings(preset, **overrides)
    options = detector_options(settings)
    device = resolve_detector_device(str(settings["detector_device"]), classifier_device)
    backend = resolve_detector_backend(device, str(settings["detector_backend"]))
    members: list[Any] = []
    try:
        for path in detector_model_paths(str(settings["detector_model"])):
            members.append(_one_detector({**options, "model": path}, device, backend, threads,
                                         settings["detector_engine_dir"]))
    except BaseException:
        for member in members:  # a later graph that fails to load leaves no session behind
            member.close()
        raise
    if len(members) == 1:
        return members[0]
    from maskrt.detect.ensemble import EnsembleDetector

    return EnsembleDetector(members)


def _one_detector(options: dict[str, Any], device: str, backend: str, threads: int | None,
                  engine_dir: Any) -> Any:
    """One YuNet graph (``options["model"]``) on ``device`` with ``backend``."""
    if backend == "onnxruntime":
        from maskrt.detect.yunet import YuNetDetector

        return YuNetDetector(**options, **({"threads": int(threads)} if threads else {}))
    from maskrt.detect.yunet_torch import YuNetTorchDetector

    return YuNetTorchDetector(device=device, runtime=backend, engine_dir=engine_dir, **options)


def detector_options(settings: dict[str, Any]) -> dict[str, Any]:
    """The YuNet constructor's keywords of preset ``settings`` (upscale "auto" becomes 1.0: the
    face stage's scale rule then gives each frame's scale); ``model`` is the first graph of an
    ensemble."""
    options = {k: settings[k] for k in _DETECTOR_KEYS
               if k not in _RUNTIME_DEFAULTS and k not in _PAD_DEFAULTS}
    options["pad"] = settings["detector_pad"]
    if options["upscale"] == "auto":
        options["upscale"] = 1.0
    options["model"] = detector_model_paths(str(settings["detector_model"]))[0]
    return options


def detector_model_paths(name: str) -> list[Path]:
    """The ONNX graphs of ``detector_model`` ``name``: one, or several joined by "+" (an
    ensemble), each a shipped one or a file (see :func:`detector_model_path`)."""
    return [detector_model_path(part.strip()) for part in name.split("+")]


def detector_model_path(name: str) -> Path:
    """The ONNX graph of ``detector_model`` ``name``: a shipped one (:data:`DETECTOR_MODELS`) or a
    file (FileNotFoundError naming both choices when it is neither)."""
    if name in DETECTOR_MODELS:
        return MODELS_DIR / DETECTOR_MODELS[name]
    path = Path(name).expanduser()
    if not path.is_file():
        raise FileNotFoundError(f"detector_model: expected one of {sorted(DETECTOR_MODELS)}, the "
                                f"path of a YuNet ONNX graph, or several joined by '+', got "
                                f"{name!r} (no such file)")
    return path


def resolve_detector_device(device: str, classifier_device: Any = None) -> str:
    """``device`` as it is, unless "auto": then the classifier's device (a torch.device or its
    name) when that is a CUDA device and a GPU detector can run there (TensorRT, or torch with
    onnx2torch and torchvision), so that a GPU classifier gets a GPU detector; else "cpu"."""
    if device != "auto":
        return device
    name = str(classifier_device) if classifier_device is not None else "cpu"
    return name if name.startswith("cuda") and gpu_detector_available() else "cpu"


def gpu_detector_available() -> bool:
    """Whether a GPU runtime for the detector is installed: TensorRT, or onnx2torch and
    torchvision (both with torch)."""
    import importlib.util

    from maskrt.backends.tensorrt.versions import tensorrt_status

    if tensorrt_status()[0]:
        return True
    return all(importlib.util.find_spec(name) is not None
               for name in ("torch", "torchvision", "onnx2torch"))


def resolve_detector_backend(device: str, backend: str) -> str:
    """The backend that runs the detector on ``device``: "auto" is ONNX Runtime on the CPU, and
    on a GPU TensorRT where it is installed, else torch. ValueError for a backend the device
    cannot take (ONNX Runtime here is CPU only; TensorRT needs a CUDA device)."""
    if backend not in DETECTOR_BACKENDS:
        raise ValueError(f"detector_backend: expected one of {list(DETECTOR_BACKENDS)}, "
                         f"got {backend!r}")
    on_cpu = device == "cpu"
    if not on_cpu and not device.startswith("cuda"):
        raise ValueError(f"detector_device: expected cpu, cuda or cuda:N, got {device!r}")
    if backend == "auto":
        from maskrt.backends.tensorrt.versions import tensorrt_status

        return "onnxruntime" if on_cpu else ("tensorrt" if tensorrt_status()[0] else "torch")
    if backend == "onnxruntime" and not on_cpu:
        raise ValueError(f"detector_backend onnxruntime runs on the CPU, got detector_device "
                         f"{device!r} (use torch or tensorrt on a GPU)")
    if backend == "tensorrt" and on_cpu:
        raise ValueError("detector_backend tensorrt needs detector_device cuda (or cuda:N)")
    return backend


def face_stage(preset: str = "default", detector: Any = None, classifier_device: Any = None,
               **overrides: Any) -> Any:
    """The pipeline stage that finds faces: ``detector`` (default: YuNet of ``preset``, beside
    the classifier's ``classifier_device`` when ``detector_device`` is "auto") and the preset's
    region settings (widen, min_face, max_faces, box_fit, report_threshold, sharpen)."""
    from maskrt.detect.stage import FaceStage

    settings = preset_settings(preset, **overrides)
    detector = detector or make_detector(preset, classifier_device,
                                         **{k: settings[k] for k in _DETECTOR_KEYS})
    return FaceStage(detector, widen=settings["widen"], min_face=settings["min_face"],
                     max_faces=settings["max_faces"], box_fit=settings["box_fit"],
                     scale_rule=scale_rule(settings),
                     report_threshold=settings["report_threshold"],
                     sharpen=Sharpener(amount=float(settings["sharpen"])))


def scale_rule(settings: dict[str, Any]) -> ScaleRule | None:
    """The :class:`~maskrt.detect.scale.ScaleRule` of ``settings`` when ``upscale`` is "auto",
    else None (a fixed factor)."""
    if settings["upscale"] != "auto":
        return None
    return ScaleRule(**{k: settings[k] for k in _SCALE_DEFAULTS})


def region_stages(regions: str, preset: str = "default", detector: Any = None,
                  options: dict[str, Any] | None = None, classifier_device: Any = None, *,
                  served: Any = None, features: bool = False) -> list[Any]:
    """The stages that make a pipeline's regions: a face stage for "faces", none for "frame".
    served: a backend's ``faces_service`` (a server running the whole faces pipeline; its face
    settings are the server's, so ``options`` must be empty): a
    :class:`~maskrt.detect.served.ServedFaceStage`, asking for CAM ``features`` when told."""
    if regions not in REGION_MODES:
        raise ValueError(f"regions: expected one of {list(REGION_MODES)}, got {regions!r}")
    if regions == "frame":
        return []
    if served is not None and detector is None:
        from maskrt.detect.served import ServedFaceStage

        info = served.faces_info
        if options:
            raise ValueError(f"face options: expected none with a served faces pipeline (its "
                             f"settings are fixed in the server's {info.name} model: preset "
                             f"{info.preset}, options {list(info.face_options) or 'none'}; "
                             f"export it again to change them), got {sorted(options)}")
        if preset != info.preset:
            log.warning("preset %s ignored: the server's %s model runs preset %s", preset,
                        info.name, info.preset)
        return [ServedFaceStage(served, features=features)]
    return [face_stage(preset, detector, classifier_device, **(options or {}))]


def parse_face_options(pairs: list[str]) -> dict[str, Any]:
    """``["max_faces=50", "upscale=1.5"]`` -> typed settings (ValueError naming the keys)."""
    options: dict[str, Any] = {}
    for pair in pairs:
        key, sep, text = pair.partition("=")
        key = key.strip().replace("-", "_")
        if not sep or key not in PRESETS["default"]:
            raise ValueError(f"--face-option: expected KEY=VALUE with KEY one of "
                             f"{sorted(PRESETS['default'])}, got {pair!r}")
        kind = type(PRESETS["default"][key])
        try:
            if key == "upscale":  # a number, or "auto" (the scale rule)
                options[key] = "auto" if text.strip() == "auto" else float(text.strip())
            elif kind is tuple:  # box_fit=1.1,0.95,0,0.11
                options[key] = check_box_fit(text.split(","))
            else:
                options[key] = kind(text.strip())
        except ValueError as err:
            expected = {int: "an integer", float: "a number", tuple: str(err)}.get(kind, "a word")
            expected = "a number or auto" if key == "upscale" else expected
            raise ValueError(f"--face-option {key}: expected {expected}, got "
                             f"{text.strip()!r}") from None
    return options
