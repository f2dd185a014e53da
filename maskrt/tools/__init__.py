"""Measuring tools behind ``maskrt bench`` and ``maskrt check`` (and the scripts in benchmarks/).

* ``bench.py``: trtexec-style throughput and latency of an Engine per batch size, machine facts,
  interleaved A/B timing.
* ``check.py``: a backend against the FP32 ONNX Runtime reference on real images (label
  agreement, logits and heat-map error), both run from one :class:`~maskrt.graph.Graph`.

Both modules import only NumPy at module level; backends, torch and OpenCV load when used.
"""
