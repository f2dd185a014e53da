"""A Triton model repository serving the whole faces pipeline (``maskrt export --triton-repo DIR
--pipeline faces``): a frame in, its faces (boxes, scores, landmarks, classifications) out.

Three models:

* ``maskrt``: the classifier graph, as ``--pipeline classifier`` writes it (so the ``triton``
  backend's classifier path serves from the same repository);
* ``maskrt_yunet``: the detector graph (the ``detector_model`` face option's; the fine-tuned
  ``yunet-masks`` by default), ``input`` float32[N, 3, H, W] -> YuNet's 12 outputs;
* ``maskrt_faces``: the entry model (:mod:`maskrt.serving.triton_faces_model`, Python backend),
  which calls the other two through BLS. It imports maskrt: the server's Python needs it.

The graph models are Python-backend models running ONNX Runtime (``--platform python``, the
default here) or Triton's ONNX Runtime backend (``onnxruntime_onnx``); the entry model's
``max_batch_size`` is 0: one frame per request, of any height and width (frames of different
sizes cannot share a batch axis). Batching happens behind it: all the faces of a frame go to the
classifier in one request, and its dynamic batcher joins the faces of concurrent frames.
The face settings (preset, face options) are fixed here, in the entry model's parameters.
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from maskrt.serving.triton_repo import (TRITON_TYPES, Log, Repository, RepositorySettings,
                                        TensorSpec, write_repository)

PIPELINES = ("classifier", "faces")
FACES_MODEL = "maskrt_faces"
DETECTOR_MODEL = "maskrt_yunet"
FACES_PLATFORMS = ("python", "onnxruntime_onnx")
#: the entry model's interface (name, Triton type, dims, optional)
FACES_INPUTS = (("frame", "TYPE_UINT8", (-1, -1, 3), False), ("scale", "TYPE_FP32", (1,), True),
                ("return_features", "TYPE_BOOL", (1,), True),
                ("candidates", "TYPE_BOOL", (1,), True))
FACES_OUTPUTS = (("boxes", "TYPE_FP32", (-1, 4)), ("crop_boxes", "TYPE_FP32", (-1, 4)),
                 ("scores", "TYPE_FP32", (-1,)), ("landmarks", "TYPE_FP32", (-1, 10)),
                 ("logits", "TYPE_FP32", (-1, 2)), ("probabilities", "TYPE_FP32", (-1, 2)),
                 ("features", "TYPE_FP32", (-1, 512, 7, 7)), ("used_scale", "TYPE_FP32", (1,)),
                 ("faces_found", "TYPE_INT32", (1,)))


@dataclass(frozen=True)
class FacesSettings:
    """The face settings the entry model applies: a preset and ``--face-option`` KEY=VALUE pairs
    (ValueError naming what is wrong, at export rather than when the server loads them)."""

    preset: str = "default"
    face_options: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        from maskrt.detect import RUNTIME_KEYS

        if any(";" in pair or '"' in pair for pair in self.face_options):
            raise ValueError(f"--face-option: expected KEY=VALUE without ';' or '\"', got "
                             f"{list(self.face_options)}")
        overrides = self.overrides()
        placed = sorted(set(overrides) & set(RUNTIME_KEYS) - {"detector_model"})
        if placed:
            raise ValueError(f"--face-option {placed[0]}: expected a setting of what the "
                             f"detector finds; with --pipeline faces it runs in the server's "
                             f"{DETECTOR_MODEL} model (its instance_group), got {placed}")

    def overrides(self) -> dict[str, Any]:
        from maskrt.detect import parse_face_options, preset_settings

        overrides = parse_face_options(list(self.face_options))
        preset_settings(self.preset, **overrides)  # checks the preset and the values
        return overrides

    def detector_graph(self) -> tuple[str, Path]:
        """(the ``detector_model`` name or path, its ONNX file)."""
        from maskrt.detect import PRESETS, detector_model_path

        name = str(self.overrides().get("detector_model", PRESETS[self.preset]["detector_model"]))
        if "+" in name:
            raise ValueError(f"the served faces pipeline runs one detector graph, got the ensemble "
                             f"detector_model={name!r} (preset {self.preset!r}); choose one graph "
                             "with --face-option detector_model=NAME, or a preset without one")
        return name, detector_model_path(name)


@dataclass(frozen=True)
class FacesRepository:
    """What :func:`write_faces_repository` wrote: the three models' folders and configs."""

    classifier: Repository
    detector: Repository
    config: Path
    files: tuple[Path, ...]


def onnx_io(onnx_path: str | Path) -> tuple[tuple[TensorSpec, ...], tuple[TensorSpec, ...]]:
    """A graph's inputs and outputs without their (dynamic) batch axis; named dims are -1."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    session = ort.InferenceSession(str(onnx_path), options, providers=["CPUExecutionProvider"])

    def spec(arg: Any) -> TensorSpec:
        shape = list(arg.shape)
        if arg.type not in TRITON_TYPES or not shape or isinstance(shape[0], int):
            raise ValueError(f"{onnx_path}: {arg.name}: expected a tensor of "
                             f"{sorted(TRITON_TYPES)} with a dynamic batch axis first, got "
                             f"{arg.type} {shape}")
        dims = tuple(d if isinstance(d, int) and d > 0 else -1 for d in shape[1:])
        return TensorSpec(arg.name, TRITON_TYPES[arg.type], dims)

    return (tuple(spec(a) for a in session.get_inputs()),
            tuple(spec(a) for a in session.get_outputs()))


def faces_config_text(settings: RepositorySettings, faces: FacesSettings,
                      parameters: dict[str, str]) -> str:
    """config.pbtxt of the entry model."""
    def dims(values: tuple[int, ...]) -> str:
        return ", ".join(str(d) for d in values)

    inputs = [f'  {{ name: "{n}" data_type: {t} dims: [ {dims(d)} ]'
              f'{" optional: true" if optional else ""} }}' for n, t, d, optional in FACES_INPUTS]
    outputs = [f'  {{ name: "{n}" data_type: {t} dims: [ {dims(d)} ] }}'
               for n, t, d in FACES_OUTPUTS]
    lines = [f'name: "{FACES_MODEL}"', 'backend: "python"', "max_batch_size: 0",
             "input [\n" + ",\n".join(inputs) + "\n]", "output [\n" + ",\n".join(outputs) + "\n]",
             f"instance_group [ {{ count: {settings.instances} kind: KIND_CPU }} ]"]
    values = {"preset": faces.preset, "face_options": ";".join(faces.face_options), **parameters}
    for key, value in values.items():
        text = value.replace("\\", "\\\\").replace('"', '\\"')
        lines.append(f'parameters {{ key: "{key}" value: {{ string_value: "{text}" }} }}')
    return "\n".join(lines) + "\n"


def write_faces_repository(root: str | Path, settings: RepositorySettings, faces: FacesSettings,
                           onnx_path: str | Path, *, log: Log = print) -> FacesRepository:
    """Write the classifier, detector and entry models under ``root`` (ValueError for a
    platform the faces pipeline does not take)."""
    if settings.platform not in FACES_PLATFORMS:
        raise ValueError(f"--platform: expected one of {', '.join(FACES_PLATFORMS)} with "
                         f"--pipeline faces (the detector graph runs there too), got "
                         f"{settings.platform!r}")
    graph_name, graph = faces.detector_graph()
    detector_io = onnx_io(graph)
    classifier = write_repository(root, settings, onnx_path, log=log)
    detector = write_repository(root, replace(settings, name=DETECTOR_MODEL), graph,
                                io=detector_io, log=log)
    version_dir = Path(root) / FACES_MODEL / "1"
    version_dir.mkdir(parents=True, exist_ok=True)
    model = version_dir / "model.py"
    partial = model.with_name("model.py.part")
    shutil.copyfile(Path(__file__).with_name("triton_faces_model.py"), partial)
    partial.replace(model)
    parameters = {"classifier_model": settings.name,
                  "classifier_max_batch": str(settings.max_batch), "detector_model": DETECTOR_MODEL,
                  "detector_outputs": ",".join(s.name for s in detector_io[1]),
                  "detector_graph": graph_name, "maskrt_onnx_sha256": classifier.onnx_sha256,
                  "detector_onnx_sha256": detector.onnx_sha256}
    config = version_dir.parent / "config.pbtxt"
    config.write_text(faces_config_text(settings, faces, parameters), encoding="utf-8")
    return FacesRepository(classifier, detector, config, (model,))
