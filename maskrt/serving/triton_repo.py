"""A Triton Inference Server model repository of the deployed graph (``maskrt export
--triton-repo DIR``).

``DIR/maskrt/config.pbtxt`` and ``DIR/maskrt/1/`` holding, by platform:

* ``onnxruntime_onnx``: ``model.onnx``, the graph itself (Triton's ONNX Runtime backend);
* ``tensorrt_plan``: ``model.plan``, an FP16 engine built by maskrt's TensorRT build code
  (``backends/tensorrt/build.py``), for the TensorRT version the server runs;
* ``python``: ``model.py`` (:mod:`maskrt.serving.triton_model`) running ``model.onnx`` beside it
  with ONNX Runtime (Triton's Python backend).

The configuration declares the graph's interface as the graph has it (names, types and dims read
from the ONNX file; the batch axis becomes ``max_batch_size``), dynamic batching with the given
queue delay, and the instance group. Its ``maskrt_onnx_sha256`` parameter names the graph, so
the ``triton`` backend can tell whether the server runs the graph its CAM weights come from.
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from maskrt.graph.export import INPUT_NAME, MAX_EXPORT_BATCH, OUTPUT_NAMES
from maskrt.labels import INPUT_SIZE

PLATFORMS = ("onnxruntime_onnx", "tensorrt_plan", "python")
DEFAULT_PLATFORM = "onnxruntime_onnx"
MODEL_NAME = "maskrt"
DEFAULT_MAX_BATCH = 32
DEFAULT_QUEUE_DELAY_US = 2000
#: The file each platform loads from the version folder.
MODEL_FILES = {"onnxruntime_onnx": "model.onnx", "tensorrt_plan": "model.plan",
               "python": "model.py"}
#: ONNX Runtime's type strings -> Triton's config data types.
TRITON_TYPES = {"tensor(uint8)": "TYPE_UINT8", "tensor(float)": "TYPE_FP32",
                "tensor(float16)": "TYPE_FP16", "tensor(int64)": "TYPE_INT64"}
SHA_PARAMETER = "maskrt_onnx_sha256"

Log = Callable[[str], None]


@dataclass(frozen=True)
class RepositorySettings:
    """What ``config.pbtxt`` says beyond the graph's interface (ValueError when invalid)."""

    platform: str = DEFAULT_PLATFORM
    max_batch: int = DEFAULT_MAX_BATCH
    max_queue_delay_us: int = DEFAULT_QUEUE_DELAY_US
    instances: int = 1
    name: str = MODEL_NAME

    def __post_init__(self) -> None:
        if self.platform not in PLATFORMS:
            raise ValueError(f"platform: expected one of {', '.join(PLATFORMS)}, got "
                             f"{self.platform!r}")
        if not 1 <= self.max_batch <= MAX_EXPORT_BATCH:
            raise ValueError(f"max-batch: expected 1..{MAX_EXPORT_BATCH} (the batch axis the "
                             f"graph declares), got {self.max_batch}")
        if self.max_queue_delay_us < 0:
            raise ValueError(f"max-queue-delay-us: expected >= 0, got {self.max_queue_delay_us}")
        if self.instances < 1:
            raise ValueError(f"instances: expected >= 1, got {self.instances}")
        if not self.name or "/" in self.name or self.name.startswith("."):
            raise ValueError(f"model name: expected a plain folder name, got {self.name!r}")


@dataclass(frozen=True)
class TensorSpec:
    """One input or output of the graph, without its batch axis."""

    name: str
    data_type: str  # Triton's TYPE_*
    dims: tuple[int, ...]


@dataclass(frozen=True)
class Repository:
    """What :func:`write_repository` wrote."""

    root: Path
    config: Path
    files: tuple[Path, ...]
    inputs: tuple[TensorSpec, ...]
    outputs: tuple[TensorSpec, ...]
    onnx_sha256: str


def graph_io(onnx_path: str | Path) -> tuple[tuple[TensorSpec, ...], tuple[TensorSpec, ...]]:
    """The graph's inputs and outputs as ONNX Runtime reads them (no graph optimisation).

    ValueError naming what was expected when the graph is not maskrt's interface: input
    ``images`` uint8[N,224,224,3], outputs ``logits`` and ``features``, batch axis dynamic.
    """
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    session = ort.InferenceSession(str(onnx_path), options, providers=["CPUExecutionProvider"])
    inputs = tuple(_spec(arg, onnx_path) for arg in session.get_inputs())
    outputs = tuple(_spec(arg, onnx_path) for arg in session.get_outputs())
    expected = TensorSpec(INPUT_NAME, "TYPE_UINT8", (INPUT_SIZE, INPUT_SIZE, 3))
    if inputs != (expected,):
        raise ValueError(f"{onnx_path}: expected one input {INPUT_NAME} uint8[N,{INPUT_SIZE},"
                         f"{INPUT_SIZE},3], got {[_describe(s) for s in inputs]}")
    if tuple(s.name for s in outputs) != OUTPUT_NAMES:
        raise ValueError(f"{onnx_path}: expected outputs {list(OUTPUT_NAMES)}, got "
                         f"{[s.name for s in outputs]}")
    return inputs, outputs


def _spec(arg: Any, onnx_path: str | Path) -> TensorSpec:
    data_type = TRITON_TYPES.get(arg.type)
    if data_type is None:
        raise ValueError(f"{onnx_path}: {arg.name}: expected one of {sorted(TRITON_TYPES)}, got "
                         f"{arg.type}")
    shape = list(arg.shape)
    if not shape or isinstance(shape[0], int) and shape[0] > 0:
        raise ValueError(f"{onnx_path}: {arg.name}: expected a dynamic batch axis first, got "
                         f"shape {shape}")
    dims = shape[1:]
    if not all(isinstance(d, int) and d > 0 for d in dims):
        raise ValueError(f"{onnx_path}: {arg.name}: expected fixed dims after the batch axis, "
                         f"got {dims}")
    return TensorSpec(arg.name, data_type, tuple(dims))


def _describe(spec: TensorSpec) -> str:
    return f"{spec.name} {spec.data_type}{list(spec.dims)}"


def config_text(settings: RepositorySettings, inputs: tuple[TensorSpec, ...],
                outputs: tuple[TensorSpec, ...], onnx_sha256: str) -> str:
    """config.pbtxt (protobuf text format) for ``settings`` and the graph's interface."""
    platform = settings.platform
    lines = [f'name: "{settings.name}"',
             'backend: "python"' if platform == "python" else f'platform: "{platform}"',
             f"max_batch_size: {settings.max_batch}"]
    for section, specs in (("input", inputs), ("output", outputs)):
        items = [f'  {{ name: "{s.name}" data_type: {s.data_type} '
                 f'dims: [ {", ".join(str(d) for d in s.dims)} ] }}' for s in specs]
        lines.append(f"{section} [\n" + ",\n".join(items) + "\n]")
    lines.append(f"dynamic_batching {{ max_queue_delay_microseconds: "
                 f"{settings.max_queue_delay_us} }}")
    # python: model.py runs ONNX Runtime on the CPU; tensorrt_plan needs a GPU; onnxruntime_onnx:
    # Triton's default kind (the GPU when the server has one, else the CPU).
    kind = {"python": " kind: KIND_CPU", "tensorrt_plan": " kind: KIND_GPU"}.get(platform, "")
    lines.append(f"instance_group [ {{ count: {settings.instances}{kind} }} ]")
    parameters = {SHA_PARAMETER: onnx_sha256}
    if platform == "python":
        parameters.update(onnx_file="model.onnx", intra_op_threads="0")
    for key, value in parameters.items():
        lines.append(f'parameters {{ key: "{key}" value: {{ string_value: "{value}" }} }}')
    return "\n".join(lines) + "\n"


def write_repository(root: str | Path, settings: RepositorySettings, onnx_path: str | Path, *,
                     engine_dir: str | Path | None = None, log: Log = print,
                     io: tuple[tuple[TensorSpec, ...], tuple[TensorSpec, ...]] | None = None
                     ) -> Repository:
    """Write ``root/<name>/config.pbtxt`` and ``root/<name>/1/<model file>`` for ``onnx_path``.
    ``io``: the graph's inputs and outputs when it is not the classifier (default: read and
    checked by :func:`graph_io`; the faces pipeline's detector gives its own).

    tensorrt_plan builds the engine first (raises BackendUnavailable naming what is missing when
    TensorRT is not installed), so a failed build leaves the repository as it was. Model files of
    other platforms left in the version folder by an earlier export are removed.
    """
    from maskrt.graph.export import file_sha256

    onnx_path = Path(onnx_path)
    if not onnx_path.is_file():
        raise FileNotFoundError(f"ONNX graph not found: {onnx_path}")
    inputs, outputs = io or graph_io(onnx_path)
    sha256 = file_sha256(onnx_path)
    plan = _build_plan(onnx_path, settings, engine_dir, log) \
        if settings.platform == "tensorrt_plan" else None
    model_dir = Path(root) / settings.name
    version_dir = model_dir / "1"
    version_dir.mkdir(parents=True, exist_ok=True)
    files: list[Path] = []
    if settings.platform == "tensorrt_plan":
        files.append(_copy(plan, version_dir / "model.plan"))  # type: ignore[arg-type]
    else:
        files.append(_copy(onnx_path, version_dir / "model.onnx"))
    if settings.platform == "python":
        files.append(_copy(Path(__file__).with_name("triton_model.py"), version_dir / "model.py"))
    for stale in set(MODEL_FILES.values()) - {f.name for f in files}:
        (version_dir / stale).unlink(missing_ok=True)
    config = model_dir / "config.pbtxt"
    config.write_text(config_text(settings, inputs, outputs, sha256), encoding="utf-8")
    return Repository(Path(root), config, tuple(files), inputs, outputs, sha256)


def _copy(source: Path, target: Path) -> Path:
    """Copy through a temporary name, so a server watching the folder never reads half a file."""
    partial = target.with_name(target.name + ".part")
    shutil.copyfile(source, partial)
    partial.replace(target)
    return target


def _build_plan(onnx_path: Path, settings: RepositorySettings, engine_dir: str | Path | None,
                log: Log) -> Path:
    """The FP16 engine of ``onnx_path`` for batches 1..max_batch, from maskrt's engine cache."""
    from maskrt.backends.base import BackendUnavailable
    from maskrt.backends.tensorrt import versions
    from maskrt.backends.tensorrt.build import DEFAULT_ENGINE_DIR, Profile, load_or_build

    try:
        trt = versions.import_tensorrt()
    except BackendUnavailable as err:
        raise BackendUnavailable(f"--platform tensorrt_plan builds model.plan with TensorRT 10 "
                                 f"and a GPU: {err}") from err
    profile = Profile(1, min(32, settings.max_batch), settings.max_batch)
    files = load_or_build(trt, onnx_path, Path(engine_dir or DEFAULT_ENGINE_DIR), profile, log=log)
    log(f"model.plan: TensorRT {files.sidecar.tensorrt_version} engine for "
        f"{files.sidecar.gpu_name}; the server's TensorRT must be this version")
    return files.engine
