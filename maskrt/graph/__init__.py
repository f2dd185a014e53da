"""The network and its deployed graph: the one graph every backend runs.

* ``model.py``: MaskNet (torchvision ResNet-18, ``fc = Linear(512, 2)``) and MaskNetUint8 (the
  preprocessing inside the graph), checkpoints, the shipped weights.
* ``export.py``: the ONNX export (uint8 BGR ``images`` in; ``logits`` and ``features`` out).
* ``cache.py``: exported graphs cached per set of weights.
* ``shipped.py``: the default model's ONNX graph shipped in the package (float16-stored weights,
  the checkpoint's SHA-256 inside), and its generator: ``python -m maskrt.graph.shipped``.
* ``onnx_proto.py``: metadata and classifier weights read from an ONNX file without ``onnx``.
* ``errors.py``: ModelLoadError, TorchUnavailable, UntrainedModelWarning (no torch needed).
* ``loader.py``: :class:`Graph`, what backends are given instead of a model.

Only ``model.py``, exporting and the generator import torch; the default model's path (the
shipped ONNX graph on ONNX Runtime) never does.
"""

from maskrt.graph.loader import Graph

__all__ = ["Graph"]
