"""Serving the deployed graph from other systems' inference servers.

* ``triton_repo.py``: a Triton model repository of the graph (``maskrt export --triton-repo``):
  config.pbtxt and model.onnx, model.plan or a Python-backend model.py.
* ``triton_model.py``: that Python-backend model (ONNX Runtime in the server; no maskrt needed).
* ``triton_faces_repo.py``, ``triton_faces_model.py``: the whole faces pipeline as a repository
  (``--pipeline faces``): the detector and classifier graphs and an entry model that calls
  them through BLS, running maskrt's own face code (the server's Python needs maskrt).
* ``local_server.py``: a ``tritonserver`` process on loopback (tests, benchmarks, trying it out).

The client side, maskrt scoring through a Triton server, is the ``triton`` backend
(``backends/triton.py``).
"""
