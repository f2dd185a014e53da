"""TensorRT backend: the FP16 engine of :mod:`maskrt.backends.tensorrt.build`, TensorRT 10/11 API.

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
from pathlib import Path
from typing import Any

import numpy as np

from maskrt.backends.tensorrt import versions as trt_compat
from maskrt.backends.base import Backend
from maskrt.backends.tensorrt.build import (DEFAULT_ENGINE_DIR, DEFAULT_PROFILE, EngineBuildError,
                                            Log, Profile, build_engine, load_or_build)
from maskrt.graph.export import INPUT_NAME, OUTPUT_NAMES
from maskrt.labels import FEATURE_CHANNELS, FEATURE_SIZE, INPUT_SIZE, CLASSES


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

        super().__init__(graph)
        self._context = self._engine = self._runtime = None  # close() works after a failed start
        self._trt = trt_compat.import_tensorrt()
        self.device = torch.device(device)
        if self.device.type != "cuda":
            raise ValueError(f"tensorrt backend: expected a CUDA device, got {self.device}")
        from maskrt.backends.pytorch import check_cuda_device

        check_cuda_device(self.device, "tensorrt backend")
        self.device = torch.device("cuda", self.device.index or 0)
        self.profile = profile if isinstance(profile, Profile) else Profile(*profile)
        self.onnx_path = graph.onnx_path()
        self._log = log
        with torch.cuda.device(self.device):
            self._engine_file = self._load_engine(Path(engine_dir), rebuild)
            self._context = self._engine.create_execution_context()
            self._allocate(torch)

    # ------------------------------------------------------------------ set-up
    def _load_engine(self, engine_dir: Path, rebuild: bool) -> Path:
        """Deserialise the matching engine, (re)building it when stale or undeserialisable."""
        trt = self._trt
        self._logger = trt.Logger(trt.Logger.WARNING)
        self._runtime = trt.Runtime(self._logger)
        files = load_or_build(trt, self.onnx_path, engine_dir, self.profile,
                              device_index=self.device.index, force=rebuild, log=self._log)
        self._engine = self._deserialize(files.engine)
        if self._engine is None and not files.built:
            reason = (f"TensorRT {trt.__version__} could not deserialise {files.engine} (corrupt, "
                      "or built by an incompatible TensorRT)")
            self._log(f"rebuilding: {reason}")
            files = build_engine(trt, self.onnx_path, engine_dir, self.profile,
                                 device_index=self.device.index, reasons=[reason], log=self._log)
            self._engine = self._deserialize(files.engine)
        if self._engine is None:
            raise EngineBuildError(f"TensorRT could not deserialise the engine it just built: "
                                   f"{files.engine}")
        return files.engine

    def _deserialize(self, path: Path) -> Any:
        """The engine in ``path``, or None when TensorRT refuses it (it logs why)."""
        try:
            return self._runtime.deserialize_cuda_engine(path.read_bytes())
        except RuntimeError as err:  # some versions raise instead of returning None
            self._log(f"TensorRT: {err}")
            return None

    def _allocate(self, torch: Any) -> None:
        """Device buffers for the profile's max batch, bound once; pinned host staging."""
        io = engine_io(self._trt, self._engine)
        expected = {INPUT_NAME: "input", **{name: "output" for name in OUTPUT_NAMES}}
        if {name: mode for name, (mode, _) in io.items()} != expected:
            raise EngineBuildError(f"{self._engine_file}: expected I/O tensors {expected}, got "
                                   f"{ {n: m for n, (m, _) in io.items()} }")
        rows = self.profile.max
        shapes = {INPUT_NAME: (rows, INPUT_SIZE, INPUT_SIZE, 3), OUTPUT_NAMES[0]: (rows, len(CLASSES)),
                  OUTPUT_NAMES[1]: (rows, FEATURE_CHANNELS, FEATURE_SIZE, FEATURE_SIZE)}
        self._buffers = {name: torch.empty(shapes[name], dtype=dtype, device=self.device)
                         for name, (_, dtype) in io.items()}
        wanted = {INPUT_NAME: (torch.uint8,), OUTPUT_NAMES[0]: (torch.float32,),
                  OUTPUT_NAMES[1]: (torch.float16, torch.float32)}
        for name, dtypes in wanted.items():
            if self._buffers[name].dtype not in dtypes:
                raise EngineBuildError(f"{self._engine_file}: expected '{name}' as one of {dtypes}, "
                                       f"got {self._buffers[name].dtype}")
        for name in OUTPUT_NAMES:  # a batch of n uses the first n rows: same start address
            self._bind(name, self._buffers[name].data_ptr())
        self._pinned = {name: torch.empty(buf.shape, dtype=buf.dtype, pin_memory=True)
                        for name, buf in self._buffers.items()}
        self._stream = torch.cuda.Stream(self.device)
        self._bound_rows = 0

    def _bind(self, name: str, address: int) -> None:
        if not self._context.set_tensor_address(name, address):
            raise RuntimeError(f"TensorRT refused the address of tensor '{name}'")

    # ------------------------------------------------------------------ interface
    def describe(self) -> str:
        import torch

        p = self.profile
        return (f"tensorrt {self._trt.__version__} {torch.cuda.get_device_name(self.device)} "
                f"(fp16, batch {p.min}/{p.opt}/{p.max})")

    def _infer_device(self, images: Any) -> tuple[Any, Any]:
        import torch

        n = images.shape[0]
        if n > self.profile.max:
            raise ValueError(f"images: expected at most {self.profile.max} images per call (the "
                             f"engine's max batch) for a CUDA tensor, got {n}")
        rows = max(n, self.profile.min)
        caller = torch.cuda.current_stream(self.device)
        stream = self._stream
        # The backend's stream starts after what the caller queued so far: the images, and reads
        # of the previous call's outputs, which this call overwrites (an event, no host wait).
        stream.wait_stream(caller)
        in_place = rows == n and images.is_contiguous()  # else pad to the profile's min / make dense
        # The caller's memory is read on this stream: the caching allocator must not hand it out
        # again before that read is done, should the caller free it first.
        images.record_stream(stream)
        with torch.cuda.stream(stream):
            if in_place:
                source = images
            else:
                source = self._buffers[INPUT_NAME]
                source[:n].copy_(images)
            self._execute(source.data_ptr(), rows, stream.cuda_stream)
        # Work the caller queues after this call (reading the outputs) waits for the engine. The
        # outputs are the backend's own buffers, allocated once and freed only by close(), which
        # synchronises: they need no record_stream.
        caller.wait_stream(stream)
        return self._buffers[OUTPUT_NAMES[0]][:n], self._buffers[OUTPUT_NAMES[1]][:n]

    def _infer_host(self, host: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        import torch

        total = host.shape[0]
        logits = np.empty((total, len(CLASSES)), dtype=np.float32)
        # The host path keeps float32 features (the engine's FP16 ones are widened on the copy).
        features = np.empty((total, FEATURE_CHANNELS, FEATURE_SIZE, FEATURE_SIZE), dtype=np.float32)
        # Outputs of an earlier device call may still be read on the caller's stream.
        self._stream.wait_stream(torch.cuda.current_stream(self.device))
        for start in range(0, total, self.profile.max):
            n = min(self.profile.max, total - start)
            self._pinned[INPUT_NAME][:n].numpy()[...] = host[start:start + n]
            rows = max(n, self.profile.min)
            with torch.cuda.stream(self._stream):
                device_input = self._buffers[INPUT_NAME]
                device_input[:n].copy_(self._pinned[INPUT_NAME][:n], non_blocking=True)
                self._execute(device_input.data_ptr(), rows, self._stream.cuda_stream)
                for name in OUTPUT_NAMES:
                    self._pinned[name][:n].copy_(self._buffers[name][:n], non_blocking=True)
            # Results go to the host: the one synchronisation of this path (it also makes the
            # pinned input free for the next chunk).
            self._stream.synchronize()
            logits[start:start + n] = self._pinned[OUTPUT_NAMES[0]][:n].numpy()
            features[start:start + n] = self._pinned[OUTPUT_NAMES[1]][:n].numpy()
        return logits, features

    def _execute(self, input_address: int, rows: int, stream_handle: int) -> None:
        """Enqueue the engine for ``rows`` images read from ``input_address`` on a CUDA stream."""
        if rows != self._bound_rows:
            if not self._context.set_input_shape(INPUT_NAME, (rows, INPUT_SIZE, INPUT_SIZE, 3)):
                raise RuntimeError(f"TensorRT refused input shape [{rows},224,224,3] (profile "
                                   f"{self.profile.as_dict()})")
            self._bound_rows = rows
        self._bind(INPUT_NAME, input_address)
        if not self._context.execute_async_v3(stream_handle):
            raise RuntimeError("TensorRT execute_async_v3 failed (see the TensorRT errors above)")

    def close(self) -> None:
        """Wait for queued work that uses the buffers, then free context, engine and buffers."""
        if self._context is None and self._engine is None:
            return
        import torch

        # Synchronise before freeing: TensorRT may still read or write the buffers.
        torch.cuda.synchronize(self.device)
        self._context = None
        self._engine = None
        self._runtime = None
        self._buffers = {}
        self._pinned = {}
        super().close()


def engine_io(trt: Any, engine: Any) -> dict[str, tuple[str, Any]]:
    """name -> ("input" | "output", torch dtype) for every I/O tensor of ``engine``."""
    import torch

    dtypes = {trt.DataType.UINT8: torch.uint8, trt.DataType.FLOAT: torch.float32,
              trt.DataType.HALF: torch.float16, trt.DataType.INT32: torch.int32}
    io = {}
    for i in range(engine.num_io_tensors):
        name = engine.get_tensor_name(i)
        mode = "input" if engine.get_tensor_mode(name) == trt.TensorIOMode.INPUT else "output"
        dtype = engine.get_tensor_dtype(name)
        if dtype not in dtypes:
            raise EngineBuildError(f"tensor '{name}': unexpected TensorRT dtype {dtype}")
        io[name] = (mode, dtypes[dtype])
    return io


__all__ = ["TensorRTBackend", "engine_io"]
