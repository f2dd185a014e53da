"""YuNet-n as a trainable torch module, its outputs gathered per cell, and its weights written back.

The network is the shipped ONNX graph converted by ``onnx2torch`` (every convolution a torch
``Conv2d`` named after its ONNX node; batch norms are already folded into them). Training changes
only those weights, so the fine-tuned detector is written as the *same* graph with new
initializers (:func:`write_onnx`): its inputs, outputs and decoding are exactly YuNet's, and every
runtime that runs YuNet (ONNX Runtime, the torch and TensorRT detectors) runs it unchanged.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from maskrt.detect.yunet import STRIDES

_HEADS = ("cls", "obj", "bbox", "kps")


def load_module(path: str | os.PathLike[str]) -> torch.nn.Module:
    """The ONNX graph at ``path`` as a torch module (float32, training mode)."""
    try:
        import onnx
        import onnx2torch
    except ImportError as err:
        raise ImportError("training the detector needs onnx and onnx2torch: "
                          "pip install 'maskrt[train]'") from err
    return onnx2torch.convert(onnx.load(str(path)))


@dataclass
class Outputs:
    """YuNet's outputs of a batch, all strides concatenated in output order: cls, obj [B, P]
    (probabilities), bbox [B, P, 4] (centre offsets and log sizes in strides), kps [B, P, 10]."""

    cls: torch.Tensor
    obj: torch.Tensor
    bbox: torch.Tensor
    kps: torch.Tensor

    def scores(self) -> torch.Tensor:
        """The face score of every cell: sqrt(cls * obj), as the detector decodes it."""
        return torch.sqrt(self.cls.clamp(0, 1) * self.obj.clamp(0, 1))


def run(module: torch.nn.Module, blob: torch.Tensor) -> Outputs:
    """``blob``: float32 [B, 3, H, W] BGR 0-255 (H, W multiples of 32)."""
    out = module(blob)
    named = dict(zip([f"{h}_{s}" for h in _HEADS for s in STRIDES], out))
    gathered = {h: torch.cat([named[f"{h}_{s}"] for s in STRIDES], dim=1) for h in _HEADS}
    return Outputs(gathered["cls"][..., 0], gathered["obj"][..., 0], gathered["bbox"], gathered["kps"])


def decode_boxes(bbox: torch.Tensor, points: torch.Tensor, strides: torch.Tensor) -> torch.Tensor:
    """Boxes (x0, y0, x1, y1, input pixels) of ``bbox`` [..., P, 4] at prior ``points`` [P, 2]:
    the formulas of :func:`maskrt.detect.yunet.decode`."""
    s = strides[:, None]
    centre = points + bbox[..., :2] * s
    size = torch.exp(bbox[..., 2:].clamp(max=8.0)) * s
    return torch.cat([centre - size / 2, centre + size / 2], dim=-1)


def write_onnx(module: torch.nn.Module, source: str | os.PathLike[str],
               destination: str | os.PathLike[str], doc: str = "") -> int:
    """Write the graph at ``source`` to ``destination`` with ``module``'s convolution weights as
    its initializers; returns how many initializers changed. Raises ValueError when a module
    parameter has no initializer of the same shape (a graph that is not the module's)."""
    import onnx
    from onnx import numpy_helper

    graph = onnx.load(str(source))
    initializers = {init.name: init for init in graph.graph.initializer}
    params = dict(module.named_parameters())
    changed = 0
    for node in graph.graph.node:
        if node.op_type != "Conv":
            continue
        key = node.name.replace("/", "_").replace(".", "_")
        for slot, kind in ((1, "weight"), (2, "bias")):
            if slot >= len(node.input):
                continue
            param = params.get(f"{key}.{kind}")
            init = initializers.get(node.input[slot])
            if param is None or init is None or tuple(init.dims) != tuple(param.shape):
                raise ValueError(f"write_onnx: expected a {kind} for Conv node {node.name!r} of "
                                 f"shape {tuple(init.dims) if init is not None else '?'}, got "
                                 f"{tuple(param.shape) if param is not None else 'none'}")
            value = param.detach().cpu().numpy().astype(np.float32)
            init.CopyFrom(numpy_helper.from_array(value, init.name))
            changed += 1
    if doc:
        graph.doc_string = doc
    Path(destination).parent.mkdir(parents=True, exist_ok=True)
    onnx.save(graph, str(destination))
    return changed


def to_blob(images: list[np.ndarray]) -> torch.Tensor:
    """uint8 BGR [H, W, 3] images of one size -> float32 [B, 3, H, W], 0-255 (YuNet's input)."""
    return torch.from_numpy(np.stack(images)).permute(0, 3, 1, 2).float().contiguous()


def count_parameters(module: Any) -> int:
    return sum(p.numel() for p in module.parameters())
