"""The graph every backend runs, loaded once and handed to backends (Polygraphy-style loaders).

A backend never exports or loads a model itself: it is given a :class:`Graph` and asks it for the
form it runs - the ONNX file (ONNX Runtime, TensorRT's builder), or a private copy of the torch
module (the torch backend) - and for the :class:`~maskrt.cam.CamWeights` of its classifier.
Each form is made on first request and cached, so one Graph shared by several backends exports
once and reads the CAM weights once.

The default model (``Graph(None)``) comes as an ONNX file inside the package
(``graph/shipped.py``): its ONNX file and CAM weights are read without importing PyTorch, which
only :meth:`Graph.model` (the torch backend, training) loads.
"""

from __future__ import annotations

import copy
import os
import threading
from pathlib import Path
from typing import Any

from maskrt.cam.weights import CamWeights
from maskrt.graph.errors import require_torch


class Graph:
    """The deployed network, from one source.

    source: None (the weights shipped with maskrt), a checkpoint path (``.pt``), an exported
    ONNX file (``.onnx``: runs on ONNX Runtime and TensorRT; the torch backend needs weights), or
    a MaskNet (never modified: the graph works on its own copy).
    """

    def __init__(self, source: Any = None) -> None:
        self._lock = threading.RLock()
        self._model: Any = None
        self._onnx: Path | None = None
        self._cam_weights: CamWeights | None = None
        self._shipped: Path | None = None
        self._shipped_looked_up = False
        # An ONNX file given as the source has no torch weights (unlike the shipped graph, which
        # stands for the shipped checkpoint).
        self._onnx_given = (isinstance(source, (str, os.PathLike))
                            and str(source).lower().endswith(".onnx"))
        if self._onnx_given:
            path = Path(source)
            if not path.is_file():
                raise FileNotFoundError(f"graph: expected an ONNX file, {path} does not exist")
            self._onnx = path
            self.source: Any = None
            self.origin = str(path)
        else:
            self.source = source
            self.origin = "shipped weights" if source is None else (
                str(source) if isinstance(source, (str, os.PathLike)) else type(source).__name__)

    @classmethod
    def of(cls, graph_or_source: Any) -> "Graph":
        """``graph_or_source`` if it already is a Graph, else a Graph of it."""
        return graph_or_source if isinstance(graph_or_source, Graph) else cls(graph_or_source)

    def model(self) -> Any:
        """The MaskNet (FP32, CPU, eval mode), loaded on first use. Shared: do not modify it."""
        with self._lock:
            if self._model is None:
                if self._onnx_given:
                    raise ValueError(f"graph {self.origin}: an ONNX file has no torch weights; "
                                     "give a checkpoint (or None for the shipped model) instead")
                require_torch(f"graph {self.origin}: the torch model")
                from maskrt.graph.model import MaskNet, load_model

                # A MaskNet the caller gave stays theirs: load_model() would switch it to eval
                # mode, and export would trace it; the graph works on its own copy.
                source = copy.deepcopy(self.source) if isinstance(self.source, MaskNet) else self.source
                self._model = load_model(source)
            return self._model

    def torch_module(self) -> Any:
        """A private copy of the MaskNet, for a backend that converts it (dtype, device, layout)."""
        return copy.deepcopy(self.model())

    def onnx_path(self) -> Path:
        """The ONNX file: the given one, the shipped graph for the shipped weights, or the model
        exported once into the export cache (through PyTorch)."""
        with self._lock:
            if self._onnx is None and self.source is None:
                self._onnx = self._shipped_onnx()
            if self._onnx is None:
                require_torch(f"graph {self.origin}: exporting it to ONNX")
                from maskrt.graph.cache import onnx_for_model

                self._onnx = onnx_for_model(self.model())
            return self._onnx

    def int8_twin(self) -> tuple[Path, str | None]:
        """(where the INT8 twin of :meth:`onnx_path` lives - ``<stem>_int8.onnx`` beside it -,
        why it cannot be used, or None when it is current)."""
        from maskrt.graph.quantize import int8_path, int8_problem

        source = self.onnx_path()
        target = int8_path(source)
        return target, int8_problem(target, source)

    def int8_onnx_path(self) -> Path:
        """The current INT8 twin of :meth:`onnx_path`; ValueError saying how to make it when
        there is none or it is stale."""
        target, problem = self.int8_twin()
        if problem is not None:
            raise ValueError(f"graph {self.origin}: precision int8: {problem}")
        return target

    def _shipped_onnx(self) -> Path | None:
        """The shipped graph, looked up once per Graph (a stale one warns once, then the
        checkpoint is exported through PyTorch)."""
        if not self._shipped_looked_up:
            from maskrt.graph.shipped import shipped_onnx

            self._shipped, self._shipped_looked_up = shipped_onnx(), True
        return self._shipped

    @property
    def cam_weights(self) -> CamWeights:
        """The classifier weights the CAM uses, read once: from the ONNX file when there is one
        (so they are exactly what ran), else from the torch module's ``fc``."""
        with self._lock:
            if self._cam_weights is None:
                if self._onnx is None and self.source is None and self._model is None:
                    self._onnx = self._shipped_onnx()  # no torch needed for the default model
                if self._onnx is not None:
                    self._cam_weights = CamWeights.from_onnx(self._onnx)
                else:
                    self._cam_weights = CamWeights.from_module(self.model())
            return self._cam_weights

    def __repr__(self) -> str:
        return f"Graph({self.origin})"
