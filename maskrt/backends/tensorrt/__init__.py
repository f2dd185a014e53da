"""TensorRT: FP16 engines built from the graph's ONNX file, cached with a sidecar, run with the
TensorRT 10/11 API. TensorRT is imported only when a TensorRT backend or build is asked for.

* ``versions.py``: which TensorRT versions maskrt runs on and how they differ.
* ``build.py``: profiles, sidecars, engine file naming, the ONNX rewrite, building and caching.
* ``runtime.py``: :class:`TensorRTBackend`, device buffers, streams, ``execute_async_v3``.
"""
