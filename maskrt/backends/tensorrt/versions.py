"""The one place that knows which TensorRT versions maskrt runs on and how they differ.

maskrt uses the TensorRT 10 API: named I/O tensors, ``set_input_shape``, ``set_tensor_address``
and ``execute_async_v3``. FP16 comes one of two ways, chosen by :func:`strongly_typed`:

* weak typing (TensorRT 10.0-10.11): the FP32 graph with ``BuilderFlag.FP16``, which lets the
  builder pick FP16 kernels; the ``features`` output is marked FP16 on the network.
* strong typing (TensorRT 10.12+, where ``BuilderFlag.FP16`` is deprecated, and 11.x, which
  removed it): a ``STRONGLY_TYPED`` network from the graph converted to FP16
  (:func:`maskrt.backends.tensorrt.onnx_rewrite.convert_to_fp16`): the types in the graph are
  the engine's types.

TensorRT 8.x/9.x lack parts of that API (or need the ``EXPLICIT_BATCH`` network flag) and 12+ is
unknown: refused, saying why. Everything here except :func:`import_tensorrt`,
:func:`network_flags` and :func:`enable_fp16` is plain Python, and the version rules are tested
without TensorRT.
"""

from __future__ import annotations

import re
from typing import Any

from maskrt.backends.base import BackendUnavailable

#: Major versions of TensorRT whose API maskrt is written against.
SUPPORTED_MAJORS = (10, 11)
#: The first version built with strong typing (BuilderFlag.FP16 deprecated from here on).
FIRST_STRONGLY_TYPED = (10, 12)
INSTALL_HINT = ("on a machine with an NVIDIA GPU, pip install tensorrt (a 10.x or 11.x release: "
                "'tensorrt>=10,<12', or tensorrt-cu12/tensorrt-cu13 for your CUDA version)")


def parse_version(text: str) -> tuple[int, ...]:
    """``"10.3.0.26"`` -> ``(10, 3, 0, 26)``; ``"10.8.0.post1"`` -> ``(10, 8, 0)``.

    Raises ValueError when ``text`` does not start with a number.
    """
    numbers = []
    for part in str(text).split("."):
        match = re.match(r"\d+", part)
        if match is None:
            break
        numbers.append(int(match.group()))
        if match.end() != len(part):
            break
    if not numbers:
        raise ValueError(f"TensorRT version: expected 'MAJOR.MINOR...', got {text!r}")
    return tuple(numbers)


def unsupported_reason(version: str) -> str | None:
    """Why TensorRT ``version`` cannot run maskrt's engines, or None when it can."""
    try:
        major = parse_version(version)[0]
    except ValueError as err:
        return str(err)
    if major in SUPPORTED_MAJORS:
        return None
    if major < min(SUPPORTED_MAJORS):
        return (f"TensorRT {version} is older than the TensorRT 10 API maskrt uses "
                f"(named I/O tensors, execute_async_v3); {INSTALL_HINT}")
    return (f"TensorRT {version} is newer than the releases maskrt was written for "
            f"({', '.join(f'{m}.x' for m in SUPPORTED_MAJORS)}); {INSTALL_HINT}")


def strongly_typed(version: str) -> bool:
    """Whether maskrt builds FP16 engines of TensorRT ``version`` as strongly typed networks
    (10.12 and later) rather than with ``BuilderFlag.FP16`` (10.0-10.11)."""
    return parse_version(version)[:2] >= FIRST_STRONGLY_TYPED


def typing_name(version: str) -> str:
    """``"strong"`` or ``"weak"``: what an engine's sidecar records as the path that built it."""
    return "strong" if strongly_typed(version) else "weak"


def import_tensorrt() -> Any:
    """``import tensorrt``, checked against :data:`SUPPORTED_MAJORS`.

    Raises :class:`BackendUnavailable` saying why (not installed, stub package, wrong version)
    and what to install.
    """
    try:
        import tensorrt as trt
    except ImportError as err:
        raise BackendUnavailable(f"TensorRT is not importable here ({err}); {INSTALL_HINT}") from err
    except OSError as err:  # the wheel is there but its shared libraries are not
        raise BackendUnavailable(f"TensorRT is installed but its libraries failed to load "
                                 f"({err}); {INSTALL_HINT}") from err
    version = getattr(trt, "__version__", None)
    if version is None or not hasattr(trt, "Builder"):
        raise BackendUnavailable("the installed 'tensorrt' package is a stub without the TensorRT "
                                 f"bindings (no tensorrt.Builder); {INSTALL_HINT}")
    reason = unsupported_reason(version)
    if reason is not None:
        raise BackendUnavailable(reason)
    return trt


def tensorrt_status() -> tuple[bool, str]:
    """(usable, one line): whether TensorRT can be used here, for test skips and reports."""
    try:
        trt = import_tensorrt()
    except BackendUnavailable as err:
        return False, str(err)
    return True, f"TensorRT {trt.__version__}"


def network_flags(trt: Any) -> int:
    """Flags for ``Builder.create_network``: ``STRONGLY_TYPED`` where :func:`strongly_typed`,
    else 0 (TensorRT 10 networks are explicit batch without a flag)."""
    if not strongly_typed(trt.__version__):
        return 0
    return 1 << int(trt.NetworkDefinitionCreationFlag.STRONGLY_TYPED)


def enable_fp16(trt: Any, config: Any) -> None:
    """Weak typing only: let the builder pick FP16 kernels (``BuilderFlag.FP16``)."""
    flag = getattr(trt.BuilderFlag, "FP16", None)
    if flag is None:
        raise BackendUnavailable(unsupported_reason(trt.__version__)
                                 or f"TensorRT {trt.__version__} has no BuilderFlag.FP16")
    config.set_flag(flag)
