"""The one table of backends: names, aliases, the default, and the options each takes.

Every verb that runs a backend uses it: ``--backend`` takes its names and aliases as choices,
``--backend-option KEY=VALUE`` (repeatable) passes the options below, typed and checked here, and
:func:`create_backend` builds the backend from a :class:`~maskrt.graph.Graph`. A backend module
is imported only when that backend is created (plain imports inside ``load``), so a missing
optional dependency (torch, TensorRT, a GPU) matters only to those who ask for it.
"""

from __future__ import annotations

import argparse
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from maskrt.backends.base import Backend, BackendUnavailable

DEFAULT_BACKEND = "onnxruntime"


def _bool(text: str) -> bool:
    lowered = text.strip().lower()
    if lowered in ("1", "true", "yes", "on"):
        return True
    if lowered in ("0", "false", "no", "off"):
        return False
    raise ValueError(f"expected true/false, got {text!r}")


def _profile(text: str) -> tuple[int, int, int]:
    parts = [int(p) for p in text.split(",")]
    if len(parts) != 3:
        raise ValueError(f"expected MIN,OPT,MAX batch sizes, got {text!r}")
    return parts[0], parts[1], parts[2]


@dataclass(frozen=True)
class Option:
    """One backend option: how to parse its command-line text, what it expects, what it means."""

    parse: Callable[[str], Any]
    help: str
    expects: str = "a value"


@dataclass(frozen=True)
class BackendSpec:
    name: str
    description: str
    load: Callable[[], type[Backend]]
    aliases: tuple[str, ...] = ()
    options: dict[str, Option] = field(default_factory=dict)
    #: other names ``--backend-option`` accepts for an option (``model`` for ``model_name``:
    #: Engine's own ``model`` argument is the local graph)
    option_aliases: dict[str, str] = field(default_factory=dict)


def _onnxruntime() -> type[Backend]:
    from maskrt.backends.ort import OnnxRuntimeBackend

    return OnnxRuntimeBackend


def _torch() -> type[Backend]:
    _require_torch("the torch backend", "torch")
    from maskrt.backends.pytorch import TorchBackend

    return TorchBackend


def _tensorrt() -> type[Backend]:
    _require_torch("the tensorrt backend (its device buffers are torch CUDA tensors)", "gpu")
    from maskrt.backends.tensorrt.runtime import TensorRTBackend

    return TensorRTBackend


def _triton() -> type[Backend]:
    from maskrt.backends.triton import TritonBackend  # tritonclient is imported when it is made

    return TritonBackend


def _choice(*values: str) -> Callable[[str], str]:
    """An option parser taking one of ``values`` (any case); ValueError otherwise."""
    def parse(text: str) -> str:
        lowered = text.strip().lower()
        if lowered not in values:
            raise ValueError(f"expected one of {list(values)}, got {text!r}")
        return lowered
    return parse


def _require_torch(what: str, extra: str) -> None:
    """BackendUnavailable naming the extra to install when PyTorch is missing (the base install
    has only ONNX Runtime)."""
    try:
        import torch  # noqa: F401  (the import is the check)
    except ImportError as err:
        raise BackendUnavailable(f"{what} needs PyTorch, which is not installed here: "
                                 f"pip install 'maskrt[{extra}]'") from err


_DEVICE = Option(str, "cpu, cuda or cuda:N", "a device name")
BACKENDS: dict[str, BackendSpec] = {spec.name: spec for spec in (
    BackendSpec("onnxruntime", "ONNX Runtime on the CPU, INT8 or FP32 (default)", _onnxruntime, ("ort",),
                {"threads": Option(int, "intra-op threads (default: every core)", "an integer"),
                 "precision": Option(_choice("auto", "fp32", "int8"), "int8 (the graph's statically quantized twin, "
                                     "maskrt quantize), fp32, or auto (default: int8 when the graph "
                                     "has a current twin, as the shipped one has)", "auto, fp32 or int8")}),
    BackendSpec("torch", "PyTorch: CPU FP32, or CUDA FP16 channels_last", _torch, ("pytorch",),
                {"device": _DEVICE,
                 "half": Option(_bool, "FP16 (default: true on CUDA; refused on the CPU)", "true/false"),
                 "cuda_graphs": Option(_bool, "replay one CUDA graph per batch size", "true/false"),
                 "cudnn_benchmark": Option(_bool, "let cuDNN time its algorithms per input shape "
                                           "(process-wide; pays only for fixed batch sizes)",
                                           "true/false")}),
    BackendSpec("tensorrt", "TensorRT FP16 engine (a GPU and TensorRT 10 or 11)", _tensorrt, ("trt",),
                {"device": _DEVICE,
                 "engine_dir": Option(Path, "engine cache folder (default engines/)", "a folder"),
                 "profile": Option(_profile, "MIN,OPT,MAX batch of the optimisation profile",
                                   "MIN,OPT,MAX integers"),
                 "rebuild": Option(_bool, "build even when a matching engine exists", "true/false")}),
    BackendSpec("triton", "a Triton Inference Server (tritonclient: gRPC, or HTTP)", _triton, (),
                {"url": Option(str, "server host:port (default localhost:8001 for grpc, "
                                    "localhost:8000 for http)", "host:port"),
                 "model_name": Option(str, "model name in the server's repository (default "
                                      "maskrt; also model=)", "a model name"),
                 "version": Option(str, "model version (default: the server's latest)",
                                   "a version number"),
                 "protocol": Option(_choice("grpc", "http"), "grpc (default) or http", "grpc or http"),
                 "timeout": Option(float, "seconds a request may take (default 30)", "seconds"),
                 "pipeline": Option(_choice("classifier", "faces"), "classifier (default: crops "
                                    "to the classifier model) or faces (whole frames to the faces "
                                    "model of a --pipeline faces repository)", "classifier or faces"),
                 "faces_model": Option(str, "the faces model's name (default maskrt_faces)",
                                       "a model name")},
                option_aliases={"model": "model_name"}),
)}
ALIASES: dict[str, str] = {alias: spec.name for spec in BACKENDS.values() for alias in spec.aliases}
#: Every name ``--backend`` accepts.
CHOICES: tuple[str, ...] = (*BACKENDS, *ALIASES)


def resolve(name: str) -> BackendSpec:
    """The spec of a backend name or alias; ValueError listing the names otherwise."""
    spec = BACKENDS.get(ALIASES.get(name, name))
    if spec is None:
        raise ValueError(f"backend: expected one of {sorted(CHOICES)}, got {name!r}")
    return spec


def check_options(name: str, options: dict[str, Any]) -> None:
    """ValueError naming the options ``name`` takes when one of ``options`` is not among them."""
    spec = resolve(name)
    unknown = sorted(set(options) - set(spec.options))
    if unknown:
        raise ValueError(f"backend {spec.name}: unknown option(s) {unknown}; it takes "
                         f"{sorted(spec.options) or 'none'}")


#: a comma that starts another KEY=VALUE pair in one --backend-option item
_PAIR_START = re.compile(r",(?=\s*[A-Za-z_][\w-]*=)")


def parse_options(name: str, pairs: list[str]) -> dict[str, Any]:
    """``["device=cuda:1", "half=false"]`` -> ``{"device": "cuda:1", "half": False}``. One item
    may hold several pairs, ``"url=host:8001,model=maskrt"``: it is split at each comma that
    starts a new ``KEY=`` (so ``profile=1,32,256`` stays one value)."""
    spec = resolve(name)
    options: dict[str, Any] = {}
    for pair in (part for item in pairs for part in _PAIR_START.split(item)):
        key, sep, text = pair.partition("=")
        key = key.strip().replace("-", "_")
        key = spec.option_aliases.get(key, key)
        if not sep or not key:
            raise ValueError(f"--backend-option: expected KEY=VALUE, got {pair!r}")
        check_options(spec.name, {key: None})
        option = spec.options[key]
        try:
            options[key] = option.parse(text.strip())
        except ValueError:
            raise ValueError(f"--backend-option {key}: expected {option.expects}, got "
                             f"{text.strip()!r}") from None
    return options


def create_backend(name: str = DEFAULT_BACKEND, model: Any = None, **options: Any) -> Backend:
    """A ready backend running ``model``: a :class:`~maskrt.graph.Graph`, None (the shipped
    weights), a checkpoint or ONNX path, or a MaskNet (never modified).

    Raises :class:`~maskrt.backends.base.BackendUnavailable` saying why and what to install when
    the backend cannot run here, ValueError for an unknown name or option.
    """
    from maskrt.graph import Graph

    spec = resolve(name)
    check_options(spec.name, options)
    return spec.load()(Graph.of(model), **options)


def add_backend_arguments(parser: argparse.ArgumentParser, *,
                          default: str = DEFAULT_BACKEND) -> None:
    """``--backend``, ``--backend-option`` and ``--model``, the same for every verb."""
    options = "; ".join(f"{spec.name}: " + ", ".join(spec.options) for spec in BACKENDS.values())
    parser.add_argument("--backend", default=default, choices=CHOICES, metavar="NAME",
                        help=f"{', '.join(BACKENDS)} (aliases {', '.join(ALIASES)}; "
                             f"default {default})")
    parser.add_argument("--backend-option", action="append", default=[], metavar="KEY=VALUE",
                        help=f"backend option, repeatable ({options})")
    parser.add_argument("--model", default=None,
                        help="checkpoint or .onnx graph (default: the shipped model)")


def backend_options(args: argparse.Namespace) -> dict[str, Any]:
    """The parsed ``--backend-option`` values of ``args`` (ValueError when one is invalid)."""
    return parse_options(args.backend, list(args.backend_option or []))
