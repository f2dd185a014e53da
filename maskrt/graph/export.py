"""Export the deployed graph of ARCHITECTURE.md to ONNX (``maskrt export``).

Graph: input ``images`` uint8[N, 224, 224, 3] BGR; cast, BGR->RGB, ImageNet normalisation and
NHWC->NCHW happen inside; outputs ``logits`` float32[N, 2] and ``features`` float32[N, 512, 7, 7].
Only the batch axis is dynamic. Every backend (ONNX Runtime, TensorRT) runs this one file.
"""

from __future__ import annotations

import hashlib
import os
import warnings
from pathlib import Path

from maskrt.labels import INPUT_SIZE

OPSET = 18
INPUT_NAME = "images"
OUTPUT_NAMES = ("logits", "features")
#: Largest batch the exported graph declares; TensorRT profiles are cut from inside it.
MAX_EXPORT_BATCH = 4096


def export_onnx(model: object, path: str | os.PathLike[str], *, opset: int = OPSET) -> Path:
    """Write ``model`` (a MaskNet, a checkpoint path, or None for the shipped model) as ONNX.

    The file is self-contained (weights inline, no ``.data`` side file) and passes
    ``onnx.checker.check_model(full_check=True)``. Returns the path written.
    """
    from maskrt.graph.errors import require_torch

    require_torch("exporting a model to ONNX")
    import onnx
    import torch

    from maskrt.graph.model import MaskNetUint8, load_model

    net = MaskNetUint8(load_model(model)).eval()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    example = torch.randint(0, 256, (2, INPUT_SIZE, INPUT_SIZE, 3), dtype=torch.uint8)
    batch = torch.export.Dim("batch", min=1, max=MAX_EXPORT_BATCH)
    with warnings.catch_warnings(), torch.inference_mode(False), torch.no_grad():
        warnings.simplefilter("ignore")  # exporter chatter about deprecated internals
        torch.onnx.export(
            net, (example,), str(path), input_names=[INPUT_NAME], output_names=list(OUTPUT_NAMES),
            dynamic_shapes={INPUT_NAME: {0: batch}}, opset_version=opset, dynamo=True,
            external_data=False, verbose=False,
        )
    onnx.checker.check_model(onnx.load(str(path)), full_check=True)
    return path


def file_sha256(path: str | os.PathLike[str]) -> str:
    """Hex SHA-256 of a file (keys the TensorRT engine cache to the exact graph)."""
    digest = hashlib.sha256()
    with open(path, "rb") as stream:
        for block in iter(lambda: stream.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()
