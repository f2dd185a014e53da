"""Exported ONNX graphs cached per set of weights, so backends don't re-export on every start."""

from __future__ import annotations

import hashlib
import os
import tempfile
from pathlib import Path

from maskrt.graph.export import OPSET, export_onnx

#: Bump when the exported graph changes for the same weights.
GRAPH_VERSION = 1


def cache_dir() -> Path:
    """``$MASKRT_CACHE_DIR``, else ``~/.cache/maskrt``."""
    root = os.environ.get("MASKRT_CACHE_DIR") or Path.home() / ".cache" / "maskrt"
    return Path(root)


def weights_digest(model: object) -> str:
    """SHA-256 over the model's state_dict (names, dtypes, shapes, bytes)."""
    digest = hashlib.sha256(f"graph-v{GRAPH_VERSION}-opset{OPSET}".encode())
    for name, tensor in sorted(model.state_dict().items()):  # type: ignore[attr-defined]
        array = tensor.detach().cpu().contiguous().numpy()
        digest.update(f"{name}:{array.dtype}:{array.shape}".encode())
        digest.update(array.tobytes())
    return digest.hexdigest()


def onnx_for_model(model: object) -> Path:
    """Path of the ONNX graph of ``model`` (a MaskNet), exporting it on first use.

    The export goes to a temporary file renamed into place, so concurrent starts never see a
    half-written graph.
    """
    directory = cache_dir() / "onnx"
    path = directory / f"maskrt-{weights_digest(model)[:24]}.onnx"
    if path.is_file():
        return path
    directory.mkdir(parents=True, exist_ok=True)
    handle, tmp_name = tempfile.mkstemp(dir=directory, suffix=".onnx.tmp")
    os.close(handle)
    try:
        export_onnx(model, tmp_name)
        os.replace(tmp_name, path)
    finally:
        if os.path.exists(tmp_name):
            os.unlink(tmp_name)
    return path
