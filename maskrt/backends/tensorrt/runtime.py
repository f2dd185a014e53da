"""TensorRT backend: the classifier's FP16 engine (:mod:`maskrt.backends.tensorrt.build`) run by an
:class:`~maskrt.backends.tensorrt.session.EngineSession`, TensorRT 10/11 API.

Named I/O tensors, ``set_input_shape``, ``set_tensor_address`` and ``execute_async_v3``. Device
buffers are torch CUDA tensors allocated once per engine for the profile's largest batch and
reused by every call (a batch of n uses their first n rows, which start at the same address, so
output addresses are bound once). TensorRT is imported only when this backend is created.

* NumPy in: the batch is copied into pinned host memory, uploaded on the backend's stream,
  run, and the outputs come back through pinned buffers; the stream is synchronised once, because
  the results go to the host. Batches larger than the profile's max run in chunks.
* torch CUDA tensor in: the engine reads the caller's tensor in place (no copy) and runs on the
  backend's own stream (never the legacy default stream, on which TensorRT adds synchronisations
  and warns), ordered against the caller's current stream with events: the backend's stream waits
  for the work the caller queued before ``infer`` (the images, and reads of earlier outputs), and
  the caller's stream waits for the engine before anything queued after ``infer``.
  ``(logits float32[N, 2], features float16[N, 512, 7, 7])`` are views of the engine's output
  buffers, valid until the next ``infer`` (clone them to keep them). Nothing is synchronised with
  the host: kernels the caller queues next on its stream (``cam_overlay``) see them.
"""

from __future__ import annotations

import os
from typing import Any

import numpy as np

from maskrt.backends.base import Backend
from maskrt.backends.tensorrt import versions as trt_compat
from maskrt.backends.tensorrt.build import DEFAULT_ENGINE_DIR, DEFAULT_PROFILE, EngineBuildError, Log
from maskrt.backends.tensorrt.session import EngineSession, engine_io
from maskrt.backends.tensorrt.spec import Profile, classifier_spec
from maskrt.graph.export import INPUT_NAME, OUTPUT_NAMES
from maskrt.labels import CLASSES, FEATURE_CHANNELS, FEATURE_SIZE, INPUT_SIZE


class TensorRTBackend(Backend):
    """FP16 TensorRT engine on one CUDA device.

    graph: the :class:`~maskrt.graph.Graph` whose ONNX file the engine is built from.
    engine_dir: where engines, sidecars and the timing cache live (built on first use).
    profile: (min, opt, max) batch of the optimisation profile; device buffers are sized for max.
    rebuild: build the engine even when a matching one exists.
    """

    name = "tensorrt"
    precision = "fp16"

    def __init__(self, graph: Any, *, engine_dir: str | os.PathLike[str] = DEFAULT_ENGINE_DIR,
                 profile: tuple[int, int, int] | Profile = DEFAULT_PROFILE, device: str = "cuda",
                 rebuild: bool = False, log: Log = print) -> None:
        import torch

        from maskrt.backends.pytorch import check_cuda_device

        super().__init__(graph)
        self._session: EngineSession | None = None  # close() works after a failed start
        trt_compat.import_tensorrt()  # first: without TensorRT, nothing else matters
        self.device = torch.device(device)
        if self.device.type != "cuda":
            raise ValueError(f"tensorrt backend: expected a CUDA device, got {self.device}")
        check_cuda_device(self.device, "tensorrt backend")
        self.device = torch.device("cuda", self.device.index or 0)
        self.profile = profile if isinstance(profile, Profile) else Profile(*profile)
        self.onnx_path = graph.onnx_path()
        with torch.cuda.device(self.device):
            self._session = EngineSession(classifier_spec(self.profile), self.onnx_path,
                                          self.device, engine_dir=engine_dir, rebuild=rebuild,
                                          log=log)
            self._engine_file = self._session.engine_file
            self._check_io(torch)
            self._pinned = self._pin(torch)

    def _check_io(self, torch: Any) -> None:
        """The engine's tensors are the backend contract's: uint8 images in, float32 logits and
        float16 (or float32) features out."""
        io = self._session.io
        wanted = {INPUT_NAME: ("input", (torch.uint8,)), OUTPUT_NAMES[0]: ("output", (torch.float32,)),
                  OUTPUT_NAMES[1]: ("output", (torch.float16, torch.float32))}
        if set(io) != set(wanted) or any(io[n][0] != m or io[n][1] not in d
                                         for n, (m, d) in wanted.items()):
            raise EngineBuildError(f"{self._engine_file}: expected I/O tensors {wanted}, got {io}")

    def _pin(self, torch: Any) -> dict[str, Any]:
        """Pinned host staging for the profile's max batch (the host path's copies)."""
        rows = self.profile.max
        shapes = {INPUT_NAME: (rows, INPUT_SIZE, INPUT_SIZE, 3), OUTPUT_NAMES[0]: (rows, len(CLASSES)),
                  OUTPUT_NAMES[1]: (rows, FEATURE_CHANNELS, FEATURE_SIZE, FEATURE_SIZE)}
        return {name: torch.empty(shapes[name], dtype=dtype, pin_memory=True)
                for name, (_, dtype) in self._session.io.items()}

    # ------------------------------------------------------------------ interface
    def describe(self) -> str:
        import torch

        p = self.profile
        return (f"tensorrt {self._session.trt.__version__} {torch.cuda.get_device_name(self.device)} "
                f"(fp16, batch {p.min}/{p.opt}/{p.max})")

    def _infer_device(self, images: Any) -> tuple[Any, Any]:
        n = images.shape[0]
        if n > self.profile.max:
            raise ValueError(f"images: expected at most {self.profile.max} images per call (the "
                             f"engine's max batch) for a CUDA tensor, got {n}")
        # Views of the engine's output buffers, valid until the next call (see EngineSession.run).
        outputs = self._session.run(images)
        return outputs[OUTPUT_NAMES[0]], outputs[OUTPUT_NAMES[1]]

    def _infer_host(self, host: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        import torch

        session, total = self._session, host.shape[0]
        logits = np.empty((total, len(CLASSES)), dtype=np.float32)
        # The host path keeps float32 features (the engine's FP16 ones are widened on the copy).
        features = np.empty((total, FEATURE_CHANNELS, FEATURE_SIZE, FEATURE_SIZE), dtype=np.float32)
        # Outputs of an earlier device call may still be read on the caller's stream.
        session.stream.wait_stream(torch.cuda.current_stream(self.device))
        for start in range(0, total, self.profile.max):
            n = min(self.profile.max, total - start)
            self._pinned[INPUT_NAME][:n].numpy()[...] = host[start:start + n]
            shape = (max(n, self.profile.min), INPUT_SIZE, INPUT_SIZE, 3)
            with torch.cuda.stream(session.stream):
                device_input = session.staging(shape, torch.uint8)
                device_input[:n].copy_(self._pinned[INPUT_NAME][:n], non_blocking=True)
                outputs = session.execute(device_input.data_ptr(), shape)
                for name in OUTPUT_NAMES:
                    self._pinned[name][:n].copy_(outputs[name][:n], non_blocking=True)
            # Results go to the host: the one synchronisation of this path (it also makes the
            # pinned input free for the next chunk).
            session.stream.synchronize()
            logits[start:start + n] = self._pinned[OUTPUT_NAMES[0]][:n].numpy()
            features[start:start + n] = self._pinned[OUTPUT_NAMES[1]][:n].numpy()
        return logits, features

    def close(self) -> None:
        """Wait for queued work that uses the buffers, then free the engine and its buffers."""
        if self._session is None:
            return
        self._session.close()
        self._session, self._pinned = None, {}
        super().close()


__all__ = ["TensorRTBackend", "engine_io"]
