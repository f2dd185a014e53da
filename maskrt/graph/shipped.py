"""The default model, shipped twice: the torch checkpoint and its deployed ONNX graph.

``maskrt/weights/maskrt_resnet18.pt`` is the trained model (training, the torch backend);
``maskrt/models/maskrt_resnet18.onnx`` is its deployed graph, which ONNX Runtime loads directly,
so the default path needs no PyTorch. The graph records the SHA-256 of the checkpoint it was made
from (ONNX metadata ``maskrt.weights_sha256``): when the checkpoint changes, the graph is stale,
is not used, and regenerating it is one command::

    python -m maskrt.graph.shipped

Weights are stored as float16 in the file and cast to float32 inside the graph (ONNX Runtime
folds the casts when it loads the graph, so it computes in float32). The checkpoint already is
float16, so this loses nothing: the exporter folds BatchNorm into the convolutions, and a folded
weight is stored as the checkpoint's float16 weight times its float32 per-channel BatchNorm scale
(a Mul in the graph), which reproduces the float32 export bit for bit. Tensors that cannot be
stored exactly that way stay float32 (the generator says so).

Importing this module needs neither torch nor onnx; generating the graph needs both.
"""

from __future__ import annotations

import os
import tempfile
import threading
import warnings
from pathlib import Path
from typing import Any

PACKAGE = Path(__file__).resolve().parents[1]
#: The trained weights (see MODEL.md).
SHIPPED_WEIGHTS = PACKAGE / "weights" / "maskrt_resnet18.pt"
#: Their deployed graph, generated from SHIPPED_WEIGHTS by :func:`write_shipped_graph`.
SHIPPED_ONNX = PACKAGE / "models" / "maskrt_resnet18.onnx"
REGENERATE = "python -m maskrt.graph.shipped"

WEIGHTS_SHA256_KEY = "maskrt.weights_sha256"
#: Float32 tensors this large or larger are stored as float16 (biases and the preprocessing
#: constants are tiny and stay float32).
MIN_FP16_ELEMENTS = 1024
#: torchvision's BatchNorm2d epsilon (the exporter folds with the module's eps; ResNet-18 keeps
#: the default).
BATCHNORM_EPS = 1e-5


class StaleGraphWarning(UserWarning):
    """The shipped ONNX graph was made from other weights than the shipped checkpoint."""


# --------------------------------------------------------------------------- using the graph
_checked: dict[tuple[str, int, int], str | None] = {}
_checked_lock = threading.Lock()


def graph_problem(onnx_path: Path = SHIPPED_ONNX, weights: Path = SHIPPED_WEIGHTS) -> str | None:
    """Why ``onnx_path`` is not the graph of ``weights`` (missing, unreadable, made from other
    weights), or None when it is. Memoised per checkpoint size and mtime: the SHA-256 of the
    22 MB checkpoint is computed once per process."""
    if not onnx_path.is_file():
        return f"{onnx_path} does not exist"
    if not weights.is_file():
        return f"{weights} does not exist"
    stat = weights.stat()
    key = (f"{onnx_path}|{weights}|{onnx_path.stat().st_mtime_ns}", stat.st_size, stat.st_mtime_ns)
    with _checked_lock:
        if key not in _checked:
            _checked[key] = _compare(onnx_path, weights)
        return _checked[key]


def _compare(onnx_path: Path, weights: Path) -> str | None:
    from maskrt.graph.export import file_sha256
    from maskrt.graph.onnx_proto import OnnxFormatError, read_metadata

    try:
        recorded = read_metadata(onnx_path).get(WEIGHTS_SHA256_KEY)
    except (OSError, OnnxFormatError) as err:
        return f"{onnx_path} is not readable ({err})"
    actual = file_sha256(weights)
    if recorded != actual:
        return (f"{onnx_path.name} was made from weights with SHA-256 {str(recorded)[:16]}..., "
                f"but {weights.name} has {actual[:16]}... (stale graph)")
    return None


def shipped_onnx() -> Path | None:
    """The shipped graph when it matches the shipped checkpoint, else None (with a
    :class:`StaleGraphWarning` when the graph exists but is stale, so it gets regenerated)."""
    if not SHIPPED_ONNX.is_file():
        return None
    problem = graph_problem()
    if problem is None:
        return SHIPPED_ONNX
    warnings.warn(f"maskrt: not using the shipped ONNX graph: {problem}. Falling back to "
                  f"exporting the checkpoint through PyTorch; regenerate the graph with "
                  f"`{REGENERATE}`", StaleGraphWarning, stacklevel=3)
    return None


# --------------------------------------------------------------------------- making the graph
def write_shipped_graph(weights: Path = SHIPPED_WEIGHTS, out: Path = SHIPPED_ONNX) -> dict[str, Any]:
    """Export ``weights`` (a maskrt checkpoint) to ``out`` as the shipped graph: the FP32 export
    of :func:`~maskrt.graph.export.export_onnx`, weights stored as float16, the checkpoint's
    SHA-256 in the metadata. Checks that ONNX Runtime computes exactly what the FP32 export
    computes before replacing ``out``. Returns what was stored how (for the caller to print)."""
    import onnx

    from maskrt.graph.export import export_onnx, file_sha256

    weights, out = Path(weights), Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=out.parent) as tmp:
        fp32_path, fp16_path = Path(tmp) / "fp32.onnx", Path(tmp) / "fp16.onnx"
        export_onnx(weights, fp32_path)
        model = onnx.load(str(fp32_path))
        counts = store_fp16(model, _checkpoint_state(weights))
        _clean_metadata(model, file_sha256(weights), weights.name)
        onnx.checker.check_model(model, full_check=True)
        onnx.save(model, str(fp16_path))
        counts["max_abs_difference"] = _compare_outputs(fp16_path, fp32_path)
        os.replace(fp16_path, out)
    counts["bytes"] = out.stat().st_size
    return counts


def store_fp16(model: Any, state: dict[str, Any]) -> dict[str, Any]:
    """Rewrite ``model`` (an onnx ModelProto, changed in place) to store its large float32
    initializers as float16 where that is exact: as they are (Cast), or as the checkpoint's
    float16 weight times a float32 per-channel scale (Cast, Mul) for BatchNorm-folded
    convolutions. Returns counts per kind and the names kept float32."""
    from onnx import numpy_helper

    graph = model.graph
    kept, prologue = [], []
    counts: dict[str, Any] = {"fp16": 0, "fp16_times_scale": 0, "fp32": []}
    for init in graph.initializer:
        array = numpy_helper.to_array(init)
        plan = None
        if array.dtype.name == "float32" and array.size >= MIN_FP16_ELEMENTS:
            plan = _exact_fp16(init.name, array, state)
        if plan is None:
            if array.dtype.name == "float32" and array.size >= MIN_FP16_ELEMENTS:
                counts["fp32"].append(init.name)
            kept.append(init)
            continue
        tensors, nodes = plan
        kept.extend(tensors)
        prologue.extend(nodes)
        counts["fp16_times_scale" if len(nodes) > 1 else "fp16"] += 1
    del graph.initializer[:]
    graph.initializer.extend(kept)
    body = list(graph.node)
    del graph.node[:]
    graph.node.extend(prologue + body)  # the casts first: graph nodes must be topologically sorted
    return counts


def _exact_fp16(name: str, array: Any, state: dict[str, Any]) -> tuple[list[Any], list[Any]] | None:
    """Initializers and nodes that recompute ``array`` exactly from float16 storage, or None."""
    import numpy as np
    from onnx import TensorProto, helper, numpy_helper

    half = array.astype(np.float16)
    if np.array_equal(half.astype(np.float32), array):
        stored = numpy_helper.from_array(half, f"{name}.fp16")
        return [stored], [helper.make_node("Cast", [stored.name], [name], to=TensorProto.FLOAT,
                                           name=f"{name}.cast")]
    factors = _batchnorm_factors(name, state)
    if factors is None:
        return None
    weight, scale = factors
    if weight.shape != array.shape or not np.array_equal(weight.astype(np.float32) * scale, array):
        return None
    stored = numpy_helper.from_array(weight, f"{name}.fp16")
    factor = numpy_helper.from_array(scale, f"{name}.bn_scale")
    return [stored, factor], [
        helper.make_node("Cast", [stored.name], [f"{name}.unscaled"], to=TensorProto.FLOAT,
                         name=f"{name}.cast"),
        helper.make_node("Mul", [f"{name}.unscaled", factor.name], [name], name=f"{name}.scale")]


def _batchnorm_factors(name: str, state: dict[str, Any]) -> tuple[Any, Any] | None:
    """(float16 conv weight, float32 scale [C, 1, 1, 1]) of a folded convolution: the weight
    from the checkpoint, the scale as the exporter computes it, gamma / sqrt(var + eps)."""
    import numpy as np

    key = name.removeprefix("model.")  # MaskNetUint8.model is the MaskNet the checkpoint holds
    batchnorm = _batchnorm_of(key)
    if key not in state or batchnorm is None or f"{batchnorm}.weight" not in state:
        return None
    gamma = state[f"{batchnorm}.weight"].astype(np.float32)
    var = state[f"{batchnorm}.running_var"].astype(np.float32)
    scale = (gamma / np.sqrt(var + np.float32(BATCHNORM_EPS))).astype(np.float32)
    return state[key].astype(np.float16), scale.reshape(-1, 1, 1, 1)


def _batchnorm_of(conv_weight: str) -> str | None:
    """The BatchNorm after a torchvision ResNet convolution: ``...convK.weight`` -> ``...bnK``,
    ``...downsample.0.weight`` -> ``...downsample.1``."""
    parts = conv_weight.split(".")
    if len(parts) < 2 or parts[-1] != "weight":
        return None
    if parts[-2].startswith("conv"):
        return ".".join([*parts[:-2], "bn" + parts[-2][4:]])
    if len(parts) >= 3 and parts[-3] == "downsample" and parts[-2] == "0":
        return ".".join([*parts[:-2], "1"])
    return None


def _checkpoint_state(weights: Path) -> dict[str, Any]:
    """The checkpoint's tensors as stored (float16), as NumPy arrays."""
    import torch

    from maskrt.graph.model import CHECKPOINT_FORMAT, ModelLoadError

    obj = torch.load(weights, map_location="cpu", weights_only=True)
    if not isinstance(obj, dict) or obj.get("format") != CHECKPOINT_FORMAT:
        raise ModelLoadError(f"{weights}: expected a maskrt checkpoint")
    return {k: v.detach().cpu().numpy() for k, v in obj["state_dict"].items()}


def _clean_metadata(model: Any, weights_sha256: str, weights_name: str) -> None:
    """Drop the exporter's per-node metadata (stack traces with this machine's paths: the
    shipped file must not depend on where it was generated) and record the provenance."""
    for node in model.graph.node:
        del node.metadata_props[:]
    del model.metadata_props[:]
    for key, value in ((WEIGHTS_SHA256_KEY, weights_sha256), ("maskrt.weights_file", weights_name),
                       ("maskrt.weight_storage", "float16 in the file, cast to float32 in the graph"),
                       ("maskrt.generator", REGENERATE)):
        entry = model.metadata_props.add()
        entry.key, entry.value = key, value


def _compare_outputs(candidate: Path, reference: Path) -> float:
    """Largest absolute output difference of two graphs on ONNX Runtime (CPU, full graph
    optimisation, as the backend runs them) over a random uint8 batch; raises ValueError when
    the candidate is not exact to float32 rounding."""
    import numpy as np

    from maskrt.backends.ort import cpu_session
    from maskrt.graph.export import INPUT_NAME
    from maskrt.labels import INPUT_SIZE

    images = np.random.default_rng(0).integers(0, 256, (4, INPUT_SIZE, INPUT_SIZE, 3), np.uint8)
    outputs = [cpu_session(path, None, "shipped graph check")[0].run(None, {INPUT_NAME: images})
               for path in (candidate, reference)]
    worst = 0.0
    for got, want in zip(*outputs):
        difference = float(np.abs(got - want).max())
        if difference > 1e-5 * float(np.abs(want).max()):
            raise ValueError(f"the float16-stored graph differs from the float32 export by "
                             f"{difference:.3g}: not writing it")
        worst = max(worst, difference)
    return worst


def main() -> int:
    counts = write_shipped_graph()
    print(f"wrote {SHIPPED_ONNX} ({counts['bytes'] / 1e6:.1f} MB) from {SHIPPED_WEIGHTS.name}: "
          f"{counts['fp16']} tensors float16, {counts['fp16_times_scale']} float16 x BatchNorm "
          f"scale, {len(counts['fp32'])} kept float32 {counts['fp32'] or ''}; max |output - FP32 "
          f"export| on ONNX Runtime: {counts['max_abs_difference']:.3g}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
