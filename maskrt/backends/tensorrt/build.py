"""``maskrt build``: an FP16 TensorRT engine from the ONNX graph, with a sidecar and a timing cache.

Files in the engine folder (``engines/`` by default, git-ignored)::

    maskrt-<onnx sha256[:16]>-fp16-b<min>-<opt>-<max>.engine   serialized engine
    maskrt-<onnx sha256[:16]>-fp16-b<min>-<opt>-<max>.json     its sidecar (see Sidecar)
    timing-trt<version>-sm<cc>-<gpu>.cache                      TensorRT timing cache

The engine name says *what* was asked for (graph, precision, batch profile); the sidecar says
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

from maskrt.backends.tensorrt.onnx_rewrite import tensorrt_onnx_bytes
from maskrt.graph.export import INPUT_NAME, MAX_EXPORT_BATCH, OUTPUT_NAMES
from maskrt.labels import INPUT_SIZE

#: Bump when the sidecar layout or the way engines are built changes: old engines then rebuild.
#: 2: FP16 ``features`` output, strong typing on TensorRT 10.12+, ``typing`` in the sidecar.
ENGINE_FORMAT = 2
PRECISION = "fp16"
DEFAULT_ENGINE_DIR = Path("engines")
DEFAULT_PROFILE = (1, 32, 256)
#: Sidecar fields that must equal the running system's for an engine to be reused.
COMPARED_FIELDS = ("format", "onnx_sha256", "tensorrt_version", "gpu_name", "compute_capability",
                   "precision", "typing", "profile")

Log = Callable[[str], None]


class EngineBuildError(RuntimeError):
    """TensorRT could not parse the graph or build the engine; the message has TensorRT's errors."""


class SidecarError(ValueError):
    """A sidecar file is missing, unreadable or not a maskrt engine sidecar."""


# --------------------------------------------------------------------------- the batch profile
@dataclass(frozen=True)
class Profile:
    """One TensorRT optimisation profile over the batch axis: ``min <= opt <= max`` images."""

    min: int = DEFAULT_PROFILE[0]
    opt: int = DEFAULT_PROFILE[1]
    max: int = DEFAULT_PROFILE[2]

    def __post_init__(self) -> None:
        for field in ("min", "opt", "max"):
            value = getattr(self, field)
            if isinstance(value, bool) or not isinstance(value, int):
                raise ValueError(f"{field}-batch: expected an integer, got {value!r}")
        if self.min < 1:
            raise ValueError(f"min-batch: expected >= 1, got {self.min}")
        if not self.min <= self.opt <= self.max:
            raise ValueError(f"batch profile: expected min <= opt <= max, got min={self.min}, "
                             f"opt={self.opt}, max={self.max}")
        if self.max > MAX_EXPORT_BATCH:
            raise ValueError(f"max-batch: expected <= {MAX_EXPORT_BATCH} (the largest batch the "
                             f"exported ONNX graph declares), got {self.max}")

    def shapes(self) -> tuple[tuple[int, ...], tuple[int, ...], tuple[int, ...]]:
        """(min, opt, max) shapes of the ``images`` input: uint8[N, 224, 224, 3]."""
        return tuple((n, INPUT_SIZE, INPUT_SIZE, 3) for n in (self.min, self.opt, self.max))  # type: ignore[return-value]

    def as_dict(self) -> dict[str, int]:
        return {"min": self.min, "opt": self.opt, "max": self.max}

    @classmethod
    def from_dict(cls, data: Any) -> "Profile":
        if not isinstance(data, dict) or set(data) != {"min", "opt", "max"}:
            raise ValueError(f"profile: expected {{'min', 'opt', 'max'}}, got {data!r}")
        return cls(data["min"], data["opt"], data["max"])

    def tag(self) -> str:
        return f"b{self.min}-{self.opt}-{self.max}"


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
    format: int = ENGINE_FORMAT
    built_at: str = ""
    build_seconds: float = 0.0

    @classmethod
    def expected(cls, onnx_sha256: str, system: SystemInfo, profile: Profile,
                 precision: str = PRECISION) -> "Sidecar":
        """The sidecar an engine must have to be reused for this graph on this system."""
        from maskrt.backends.tensorrt.versions import typing_name

        return cls(onnx_sha256=onnx_sha256, tensorrt_version=system.tensorrt_version,
                   gpu_name=system.gpu_name, compute_capability=system.compute_capability,
                   precision=precision, profile=profile, typing=typing_name(system.tensorrt_version))

    def to_json(self) -> str:
        data = dataclasses.asdict(self)
        data["profile"] = self.profile.as_dict()
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
            profile = Profile.from_dict(data["profile"])
        except ValueError as err:
            raise SidecarError(str(err)) from err
        known = {f.name for f in dataclasses.fields(cls)}
        return cls(**{**{k: v for k, v in data.items() if k in known}, "profile": profile})

    def mismatches(self, expected: "Sidecar") -> list[str]:
        """One human-readable reason per compared field that differs (empty: reusable)."""
        reasons = []
        for field in COMPARED_FIELDS:
            found, wanted = getattr(self, field), getattr(expected, field)
            if found != wanted:
                if isinstance(found, Profile):
                    found, wanted = found.as_dict(), wanted.as_dict()
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
def engine_path(out_dir: str | os.PathLike[str], onnx_sha256: str, profile: Profile,
                precision: str = PRECISION) -> Path:
    """``out_dir/maskrt-<sha[:16]>-<precision>-b<min>-<opt>-<max>.engine``."""
    if not re.fullmatch(r"[0-9a-f]{64}", onnx_sha256):
        raise ValueError(f"onnx_sha256: expected 64 lowercase hex digits, got {onnx_sha256!r}")
    return Path(out_dir) / f"maskrt-{onnx_sha256[:16]}-{precision}-{profile.tag()}.engine"


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
def build_serialized_engine(trt: Any, onnx_path: Path, profile: Profile, timing_cache: Path, *,
                            workspace_bytes: int | None = None, log: Log = print) -> bytes:
    """Parse ``onnx_path`` and build a serialized FP16 engine (TensorRT 10/11 API): strongly
    typed from the FP16 graph, or weakly typed with ``BuilderFlag.FP16`` (see
    :mod:`maskrt.backends.tensorrt.versions`). Either way ``logits`` come out float32 and
    ``features`` float16.

    One optimisation profile over the batch axis of ``images``; the timing cache at
    ``timing_cache`` is read when present and written back after the build.
    Raises :class:`EngineBuildError` with TensorRT's messages when parsing or building fails.
    """
    from maskrt.backends.tensorrt import versions as trt_compat

    strong = trt_compat.strongly_typed(trt.__version__)
    logger = trt.Logger(trt.Logger.WARNING)
    builder = trt.Builder(logger)
    network = builder.create_network(trt_compat.network_flags(trt))
    parser = trt.OnnxParser(network, logger)
    if not parser.parse(tensorrt_onnx_bytes(onnx_path, fp16=strong)):
        errors = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors))
        raise EngineBuildError(f"TensorRT could not parse {onnx_path}: {errors}")
    config = builder.create_builder_config()
    if not strong:
        trt_compat.enable_fp16(trt, config)
        _features_as_half(trt, network)
    if workspace_bytes:
        config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, int(workspace_bytes))
    optimization_profile = builder.create_optimization_profile()
    optimization_profile.set_shape(INPUT_NAME, *profile.shapes())
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


def _features_as_half(trt: Any, network: Any) -> None:
    """Weak typing: the ``features`` network output in FP16 (half the bytes the CAM kernel reads)."""
    for i in range(network.num_outputs):
        output = network.get_output(i)
        if output.name == OUTPUT_NAMES[1]:
            output.dtype = trt.float16
            return
    raise EngineBuildError(f"the network has no '{OUTPUT_NAMES[1]}' output")


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


def build_engine(trt: Any, onnx_path: Path, out_dir: Path, profile: Profile, *,
                 device_index: int = 0, reasons: list[str] | None = None,
                 workspace_bytes: int | None = None, log: Log = print) -> EngineFiles:
    """Build the engine of ``onnx_path`` into ``out_dir`` and write its sidecar (always builds)."""
    from maskrt.graph.export import file_sha256

    system = SystemInfo.detect(trt, device_index)
    expected = Sidecar.expected(file_sha256(onnx_path), system, profile)
    path = engine_path(out_dir, expected.onnx_sha256, profile)
    cache = timing_cache_path(out_dir, system)
    why = "; ".join(reasons or ["requested"])
    log(f"building TensorRT {system.tensorrt_version} FP16 engine ({expected.typing}ly typed) "
        f"for {system.gpu_name} "
        f"(sm {system.compute_capability}), batch {profile.min}/{profile.opt}/{profile.max}: {why}")
    start = time.perf_counter()
    data = build_serialized_engine(trt, onnx_path, profile, cache,
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


def load_or_build(trt: Any, onnx_path: Path, out_dir: Path, profile: Profile, *,
                  device_index: int = 0, force: bool = False, workspace_bytes: int | None = None,
                  log: Log = print) -> EngineFiles:
    """The engine for ``onnx_path`` in ``out_dir``: reused when its sidecar matches this system,
    else (re)built, saying why."""
    from maskrt.graph.export import file_sha256

    system = SystemInfo.detect(trt, device_index)
    expected = Sidecar.expected(file_sha256(onnx_path), system, profile)
    path = engine_path(out_dir, expected.onnx_sha256, profile)
    reasons = ["--force"] if force else stale_reasons(path, expected)
    if not reasons:
        return EngineFiles(path, read_sidecar(sidecar_path(path)), False, [])
    if path.exists() and not force:
        log(f"rebuilding {path.name}: " + "; ".join(reasons))
    return build_engine(trt, onnx_path, out_dir, profile, device_index=device_index,
                        reasons=reasons, workspace_bytes=workspace_bytes, log=log)
