"""FP16 TensorRT engines of maskrt's graphs, with a sidecar and a timing cache.

Every graph goes through here: the classifier (``maskrt build``, the tensorrt backend, Triton's
``tensorrt_plan``) and the YuNet face detector, each described by a
:class:`~maskrt.backends.tensorrt.spec.GraphSpec`. Files in the engine folder (``engines/`` by
default, git-ignored)::

    maskrt-<onnx sha256[:16]>-fp16-b<min>-<opt>-<max>.engine   the classifier's engine
    maskrt-<onnx sha256[:16]>-fp16-b<min>-<opt>-<max>.json     its sidecar (see Sidecar)
    yunet-<sha[:16]>-fp16-b<..>-hw<opt h>x<w>-<max h>x<w>.engine  the face detector's (and .json)
    timing-trt<version>-sm<cc>-<gpu>.cache                      TensorRT timing cache

The engine name says *what* was asked for (graph, precision, shape profile); the sidecar says
*where* it was built (TensorRT version, GPU name, compute capability). Loading compares the
sidecar with the running system, and a mismatch, a missing or unreadable sidecar, or an engine
TensorRT refuses to deserialise rebuilds the engine and says why. The timing cache is keyed by
TensorRT version and GPU because its timings are only valid there; every graph built on that
system shares it, which makes rebuilds fast.

Everything except :func:`build_serialized_engine` is plain Python (profile validation, sidecar
rules, file naming, the ONNX rewrite) and is tested without TensorRT.
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

# Profile and DEFAULT_PROFILE are part of this module's interface (the CLI, Triton, the backend).
from maskrt.backends.tensorrt.spec import DEFAULT_PROFILE, GraphSpec, Profile, Spatial, as_spec

#: Bump when the sidecar layout or the way engines are built changes: old engines then rebuild.
#: 2: FP16 ``features`` output, strong typing on TensorRT 10.12+, ``typing`` in the sidecar.
#: 3: any graph (the face detector too): ``graph`` and ``spatial`` in the sidecar.
ENGINE_FORMAT = 3
PRECISION = "fp16"
DEFAULT_ENGINE_DIR = Path("engines")
#: Sidecar fields that must equal the running system's for an engine to be reused.
COMPARED_FIELDS = ("format", "graph", "onnx_sha256", "tensorrt_version", "gpu_name",
                   "compute_capability", "precision", "typing", "profile", "spatial")

Log = Callable[[str], None]


class EngineBuildError(RuntimeError):
    """TensorRT could not parse the graph or build the engine; the message has TensorRT's errors."""


class SidecarError(ValueError):
    """A sidecar file is missing, unreadable or not a maskrt engine sidecar."""


# --------------------------------------------------------------------------- system and sidecar
@dataclass(frozen=True)
class SystemInfo:
    """What an engine is tied to: the TensorRT version and the GPU it was built on."""

    tensorrt_version: str
    gpu_name: str
    compute_capability: str  # "9.0"

    @classmethod
    def detect(cls, trt: Any, device_index: int = 0) -> "SystemInfo":
        """The running TensorRT and CUDA device ``device_index`` (via torch)."""
        import torch

        major, minor = torch.cuda.get_device_capability(device_index)
        return cls(str(trt.__version__), torch.cuda.get_device_name(device_index),
                   f"{major}.{minor}")


@dataclass(frozen=True)
class Sidecar:
    """The JSON written next to an engine. ``built_at``/``build_seconds`` are informative only."""

    onnx_sha256: str
    tensorrt_version: str
    gpu_name: str
    compute_capability: str
    precision: str
    profile: Profile
    typing: str = ""  # "strong" (STRONGLY_TYPED network, FP16 graph) or "weak" (BuilderFlag.FP16)
    graph: str = "maskrt"  # the GraphSpec's name: "maskrt" (the classifier), "yunet"
    spatial: Spatial | None = None  # the image size range of a dynamic-size graph
    format: int = ENGINE_FORMAT
    built_at: str = ""
    build_seconds: float = 0.0

    @classmethod
    def expected(cls, onnx_sha256: str, system: SystemInfo, spec: GraphSpec | Profile,
                 precision: str = PRECISION) -> "Sidecar":
        """The sidecar an engine must have to be reused for this graph on this system (a
        :class:`Profile` alone: the classifier's graph)."""
        from maskrt.backends.tensorrt.versions import typing_name

        spec = as_spec(spec)
        return cls(onnx_sha256=onnx_sha256, tensorrt_version=system.tensorrt_version,
                   gpu_name=system.gpu_name, compute_capability=system.compute_capability,
                   precision=precision, profile=spec.profile, graph=spec.name,
                   spatial=spec.spatial, typing=typing_name(system.tensorrt_version))

    def to_json(self) -> str:
        data = dataclasses.asdict(self)
        data["profile"] = self.profile.as_dict()
        data["spatial"] = self.spatial.as_dict() if self.spatial else None
        return json.dumps(data, indent=2, sort_keys=True) + "\n"

    @classmethod
    def from_json(cls, text: str) -> "Sidecar":
        try:
            data = json.loads(text)
        except json.JSONDecodeError as err:
            raise SidecarError(f"not JSON ({err})") from err
        if not isinstance(data, dict):
            raise SidecarError(f"expected a JSON object, got {type(data).__name__}")
        missing = [f for f in COMPARED_FIELDS if f not in data]
        if missing:
            raise SidecarError(f"missing fields {missing}")
        try:
            shapes = {"profile": Profile.from_dict(data["profile"]),
                      "spatial": Spatial.from_dict(data["spatial"])}
        except (ValueError, TypeError) as err:
            raise SidecarError(str(err)) from err
        known = {f.name for f in dataclasses.fields(cls)}
        return cls(**{**{k: v for k, v in data.items() if k in known}, **shapes})

    def mismatches(self, expected: "Sidecar") -> list[str]:
        """One human-readable reason per compared field that differs (empty: reusable)."""
        reasons = []
        for field in COMPARED_FIELDS:
            found, wanted = getattr(self, field), getattr(expected, field)
            if found != wanted:
                found, wanted = (v.as_dict() if isinstance(v, (Profile, Spatial)) else v
                                 for v in (found, wanted))
                reasons.append(f"{field}: engine has {found!r}, this system needs {wanted!r}")
        return reasons


def read_sidecar(path: Path) -> Sidecar:
    """Parse a sidecar file; :class:`SidecarError` says what is wrong with it."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as err:
        raise SidecarError(f"{path}: cannot read ({err.strerror or err})") from err
    try:
        return Sidecar.from_json(text)
    except SidecarError as err:
        raise SidecarError(f"{path}: {err}") from err


def stale_reasons(engine_file: Path, expected: Sidecar) -> list[str]:
    """Why the engine at ``engine_file`` cannot be reused (empty list: it can)."""
    sidecar_file = sidecar_path(engine_file)
    if not engine_file.is_file():
        return [f"no engine at {engine_file}"]
    if not sidecar_file.is_file():
        return [f"no sidecar at {sidecar_file} (cannot tell what the engine was built for)"]
    try:
        found = read_sidecar(sidecar_file)
    except SidecarError as err:
        return [f"unreadable sidecar: {err}"]
    return found.mismatches(expected)


# --------------------------------------------------------------------------- file naming
def engine_path(out_dir: str | os.PathLike[str], onnx_sha256: str, spec: GraphSpec | Profile,
                precision: str = PRECISION) -> Path:
    """``out_dir/<graph>-<sha[:16]>-<precision>-b<min>-<opt>-<max>[-hw<opt>-<max>].engine``
    (graph "maskrt" for a :class:`Profile` alone)."""
    if not re.fullmatch(r"[0-9a-f]{64}", onnx_sha256):
        raise ValueError(f"onnx_sha256: expected 64 lowercase hex digits, got {onnx_sha256!r}")
    spec = as_spec(spec)
    return Path(out_dir) / f"{spec.name}-{onnx_sha256[:16]}-{precision}-{spec.tag()}.engine"


def sidecar_path(engine_file: Path) -> Path:
    """The sidecar of an engine: same name, ``.json``."""
    return Path(engine_file).with_suffix(".json")


def timing_cache_path(out_dir: str | os.PathLike[str], system: SystemInfo) -> Path:
    """``out_dir/timing-trt<version>-sm<cc>-<gpu slug>.cache``: one per TensorRT version and GPU."""
    gpu = re.sub(r"[^a-z0-9]+", "-", system.gpu_name.lower()).strip("-") or "gpu"
    cc = system.compute_capability.replace(".", "")
    version = re.sub(r"[^0-9A-Za-z.]+", "-", system.tensorrt_version)
    return Path(out_dir) / f"timing-trt{version}-sm{cc}-{gpu}.cache"


def write_atomic(path: Path, data: bytes) -> None:
    """Write ``data`` to a temporary file beside ``path`` and rename it into place."""
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, tmp_name = tempfile.mkstemp(dir=path.parent, prefix=path.name, suffix=".tmp")
    try:
        with os.fdopen(handle, "wb") as stream:
            stream.write(data)
        os.replace(tmp_name, path)
    finally:
        if os.path.exists(tmp_name):
            os.unlink(tmp_name)


# --------------------------------------------------------------------------- the TensorRT build
def build_serialized_engine(trt: Any, onnx_path: Path, spec: GraphSpec | Profile,
                            timing_cache: Path, *, workspace_bytes: int | None = None,
                            log: Log = print) -> bytes:
    """Parse ``onnx_path`` and build a serialized FP16 engine (TensorRT 10/11 API): strongly
    typed from the FP16 graph, or weakly typed with ``BuilderFlag.FP16`` (see
    :mod:`maskrt.backends.tensorrt.versions`). Either way the spec's ``half_outputs`` come out
    float16 (the classifier's ``features``) and the other outputs float32.

    One optimisation profile over the spec's input shapes; the timing cache at
    ``timing_cache`` is read when present and written back after the build.
    Raises :class:`EngineBuildError` with TensorRT's messages when parsing or building fails.
    """
    from maskrt.backends.tensorrt import versions as trt_compat

    spec = as_spec(spec)
    strong = trt_compat.strongly_typed(trt.__version__)
    logger = trt.Logger(trt.Logger.WARNING)
    builder = trt.Builder(logger)
    network = builder.create_network(trt_compat.network_flags(trt))
    parser = trt.OnnxParser(network, logger)
    if not parser.parse(spec.rewrite(onnx_path, fp16=strong)):
        errors = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors))
        raise EngineBuildError(f"TensorRT could not parse {onnx_path}: {errors}")
    config = builder.create_builder_config()
    if not strong:
        trt_compat.enable_fp16(trt, config)
        _outputs_as_half(trt, network, spec.half_outputs)
    if workspace_bytes:
        config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, int(workspace_bytes))
    optimization_profile = builder.create_optimization_profile()
    optimization_profile.set_shape(spec.input_name, *spec.shapes())
    config.add_optimization_profile(optimization_profile)
    cache = _load_timing_cache(config, timing_cache, log)
    # ignore_mismatch=False: the file name keys the system. TensorRT 10 returns False (and logs
    # why) when it refuses the cache; building on would silently time every layer again.
    if config.set_timing_cache(cache, False) is False:
        raise EngineBuildError(f"TensorRT refused the timing cache {timing_cache} "
                               "(IBuilderConfig.set_timing_cache returned False; see the TensorRT "
                               "errors above); delete the file to start a fresh cache")
    serialized = builder.build_serialized_network(network, config)
    if serialized is None:
        raise EngineBuildError(f"TensorRT failed to build an engine from {onnx_path} (see the "
                               "TensorRT errors above)")
    write_atomic(timing_cache, bytes(memoryview(cache.serialize())))
    return bytes(memoryview(serialized))


def _outputs_as_half(trt: Any, network: Any, names: tuple[str, ...]) -> None:
    """Weak typing: the network outputs ``names`` in FP16 (the classifier's ``features``: half
    the bytes the CAM kernel reads)."""
    outputs = {network.get_output(i).name: network.get_output(i) for i in range(network.num_outputs)}
    for name in names:
        if name not in outputs:
            raise EngineBuildError(f"the network has no '{name}' output (it has {sorted(outputs)})")
        outputs[name].dtype = trt.float16


def _load_timing_cache(config: Any, path: Path, log: Log) -> Any:
    blob = path.read_bytes() if path.is_file() else b""
    cache = config.create_timing_cache(blob)
    if cache is None and blob:
        log(f"timing cache {path} is unusable; starting an empty one")
        cache = config.create_timing_cache(b"")
    if cache is None:
        raise EngineBuildError("TensorRT could not create a timing cache")
    if blob:
        log(f"using timing cache {path} ({len(blob) / 1e3:.0f} kB)")
    return cache


@dataclass
class EngineFiles:
    """An engine ready to deserialise, and how it came to be."""

    engine: Path
    sidecar: Sidecar
    built: bool  # True when this call built it
    reasons: list[str]  # why it was (re)built; empty when reused


def build_engine(trt: Any, onnx_path: Path, out_dir: Path, spec: GraphSpec | Profile, *,
                 device_index: int = 0, reasons: list[str] | None = None,
                 workspace_bytes: int | None = None, log: Log = print) -> EngineFiles:
    """Build the engine of ``onnx_path`` into ``out_dir`` and write its sidecar (always builds)."""
    from maskrt.graph.export import file_sha256

    spec = as_spec(spec)
    system = SystemInfo.detect(trt, device_index)
    expected = Sidecar.expected(file_sha256(onnx_path), system, spec)
    path = engine_path(out_dir, expected.onnx_sha256, spec)
    cache = timing_cache_path(out_dir, system)
    why = "; ".join(reasons or ["requested"])
    log(f"building TensorRT {system.tensorrt_version} FP16 {spec.name} engine "
        f"({expected.typing}ly typed) for {system.gpu_name} (sm {system.compute_capability}), "
        f"input {' .. '.join('x'.join(map(str, s)) for s in spec.shapes())}: {why}")
    start = time.perf_counter()
    data = build_serialized_engine(trt, onnx_path, spec, cache,
                                   workspace_bytes=workspace_bytes, log=log)
    seconds = time.perf_counter() - start
    sidecar = dataclasses.replace(expected, built_at=time.strftime("%Y-%m-%dT%H:%M:%S%z"),
                                  build_seconds=round(seconds, 2))
    sidecar_file = sidecar_path(path)
    if sidecar_file.exists():
        sidecar_file.unlink()  # never leave an old sidecar describing a new engine
    write_atomic(path, data)
    write_atomic(sidecar_file, sidecar.to_json().encode())
    log(f"wrote {path} ({len(data) / 1e6:.1f} MB) in {seconds:.1f} s")
    return EngineFiles(path, sidecar, True, list(reasons or ["requested"]))


def load_or_build(trt: Any, onnx_path: Path, out_dir: Path, spec: GraphSpec | Profile, *,
                  device_index: int = 0, force: bool = False, workspace_bytes: int | None = None,
                  log: Log = print) -> EngineFiles:
    """The engine for ``onnx_path`` in ``out_dir``: reused when its sidecar matches this system,
    else (re)built, saying why. ``spec``: the graph (a :class:`Profile` alone: the classifier)."""
    from maskrt.graph.export import file_sha256

    spec = as_spec(spec)
    system = SystemInfo.detect(trt, device_index)
    expected = Sidecar.expected(file_sha256(onnx_path), system, spec)
    path = engine_path(out_dir, expected.onnx_sha256, spec)
    reasons = ["--force"] if force else stale_reasons(path, expected)
    if not reasons:
        return EngineFiles(path, read_sidecar(sidecar_path(path)), False, [])
    if path.exists() and not force:
        log(f"rebuilding {path.name}: " + "; ".join(reasons))
    return build_engine(trt, onnx_path, out_dir, spec, device_index=device_index,
                        reasons=reasons, workspace_bytes=workspace_bytes, log=log)
