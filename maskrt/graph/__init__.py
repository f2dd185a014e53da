"""The network and its deployed graph: the one graph every backend runs.

* ``model.py``: MaskNet (torchvision ResNet-18, ``fc = Linear(512, 2)``) and MaskNetUint8 (the
  preprocessing inside the graph), checkpoints, the shipped weights.
* ``export.py``: the ONNX export (uint8 BGR ``images`` in; ``logits`` and ``features`` out).
* ``cache.py``: exported graphs cached per set of weights.
* ``loader.py``: :class:`Graph`, what backends are given instead of a model.
"""

from maskrt.graph.loader import Graph

__all__ = ["Graph"]
