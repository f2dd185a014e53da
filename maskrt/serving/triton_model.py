"""An ONNX graph as a Triton Python-backend model (copied as ``<repo>/maskrt/1/model.py`` by
``maskrt export --triton-repo DIR --platform python``, and as the detector's ``maskrt_yunet``
model of a ``--pipeline faces`` repository).

Self-contained: the server's Python needs NumPy and ONNX Runtime, not maskrt. It runs the ONNX
file beside it (``model.onnx``; the ``onnx_file`` parameter of config.pbtxt names another) with
ONNX Runtime on the CPU; the graph's one input and its outputs are the tensors' names (the
classifier's ``images`` -> ``logits``, ``features``; YuNet's ``input`` -> ``cls_8`` ...).
Triton's dynamic batcher hands ``execute`` several requests at once: requests of one shape are
run as one batch and the outputs split back per request.

Tensors cross the stub through DLPack, not ``as_numpy()`` / ``Tensor(name, array)``: Python-backend
stubs built against NumPy 1 (e.g. the one in the nvidia-pytriton 0.7.0 wheel) read NumPy 2's
dtype descriptors at NumPy 1's offsets and send zero-byte outputs; DLPack works with both.
"""

import json
import os

import numpy as np


class TritonPythonModel:
    """Triton's Python-backend entry points: initialize, execute, finalize."""

    def initialize(self, args):
        import onnxruntime as ort

        config = json.loads(args["model_config"])
        parameters = {key: value.get("string_value", "")
                      for key, value in config.get("parameters", {}).items()}
        folder = os.path.join(args["model_repository"], args["model_version"])
        path = os.path.join(folder, parameters.get("onnx_file") or "model.onnx")
        if not os.path.isfile(path):
            raise FileNotFoundError(f"maskrt model: expected the ONNX graph at {path}, found none")
        options = ort.SessionOptions()
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        threads = int(parameters.get("intra_op_threads") or 0)
        if threads > 0:
            options.intra_op_num_threads = threads
        self.session = ort.InferenceSession(path, options, providers=["CPUExecutionProvider"])
        self.input_name = self.session.get_inputs()[0].name
        self.output_names = [output.name for output in self.session.get_outputs()]

    def execute(self, requests):
        import triton_python_backend_utils as pb_utils

        images = [np.from_dlpack(pb_utils.get_input_tensor_by_name(request, self.input_name))
                  for request in requests]
        groups = {}  # requests of one shape run as one batch
        for index, image in enumerate(images):
            groups.setdefault(image.shape[1:], []).append(index)
        responses = [None] * len(requests)
        for indices in groups.values():
            try:
                parts = [images[i] for i in indices]
                batch = np.concatenate(parts) if len(parts) > 1 else np.ascontiguousarray(parts[0])
                outputs = self.session.run(self.output_names, {self.input_name: batch})
            except Exception as err:  # noqa: BLE001 - they get the error, the model lives on
                error = pb_utils.TritonError(f"maskrt model: {type(err).__name__}: {err}")
                for i in indices:
                    responses[i] = pb_utils.InferenceResponse(output_tensors=[], error=error)
                continue
            start = 0
            for i in indices:
                end = start + len(images[i])
                tensors = [pb_utils.Tensor.from_dlpack(name, np.ascontiguousarray(array[start:end]))
                           for name, array in zip(self.output_names, outputs)]
                responses[i] = pb_utils.InferenceResponse(output_tensors=tensors)
                start = end
        return responses

    def finalize(self):
        self.session = None
