"""One TensorRT engine on one CUDA device, for any :class:`~maskrt.backends.tensorrt.spec.GraphSpec`:
found in (or built into) the engine folder, deserialised, with its execution context, its device
buffers and its own CUDA stream.

* Buffers: every output gets one flat torch CUDA tensor sized for the profile's largest input
  shape, allocated when the session starts and reused by every call. A call with a smaller input
  uses the start of each buffer, viewed in the shapes TensorRT reports for that input, so output
  addresses are bound once. The input buffer (for padding a batch up to the profile's minimum
  or making it contiguous) is allocated on first need.
* Streams: TensorRT never runs on the legacy default stream (where it adds synchronisations and
  warns) but on the session's stream, ordered against the caller's current stream with events
  (:meth:`EngineSession.run`); no host synchronisation anywhere but :meth:`close`.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from maskrt.backends.tensorrt import versions as trt_compat
from maskrt.backends.tensorrt.build import (DEFAULT_ENGINE_DIR, EngineBuildError, Log, build_engine,
                                            load_or_build)
from maskrt.backends.tensorrt.spec import GraphSpec, Shape


class EngineSession:
    """The engine of ``spec`` built from ``onnx_path`` on CUDA ``device`` (a torch.device).

    engine_dir: where engines, sidecars and the timing cache live. rebuild: build even when a
    matching engine exists. The caller makes ``device`` current while constructing.
    """

    def __init__(self, spec: GraphSpec, onnx_path: str | os.PathLike[str], device: Any, *,
                 engine_dir: str | os.PathLike[str] = DEFAULT_ENGINE_DIR, rebuild: bool = False,
                 log: Log = print) -> None:
        import torch

        self._context = self._engine = self._runtime = None  # close() works after a failed start
        self.trt = trt_compat.import_tensorrt()
        self.spec, self.onnx_path, self.device = spec, Path(onnx_path), device
        self._log = log
        self.engine_file = self._load_engine(Path(engine_dir), rebuild)
        self._context = self._engine.create_execution_context()
        self.io = engine_io(self.trt, self._engine)
        inputs = [name for name, (mode, _) in self.io.items() if mode == "input"]
        if inputs != [spec.input_name]:
            raise EngineBuildError(f"{self.engine_file}: expected one input '{spec.input_name}', "
                                   f"got {inputs}")
        self._input: Any = None
        self._bound_shape: Shape = ()
        self._views: dict[str, Any] = {}  # the outputs' views for the bound input shape
        self.buffers = self._allocate(torch)
        self.stream = torch.cuda.Stream(device)

    # ------------------------------------------------------------------ set-up
    def _load_engine(self, engine_dir: Path, rebuild: bool) -> Path:
        """Deserialise the matching engine, (re)building it when stale or undeserialisable."""
        trt, index = self.trt, self.device.index or 0
        self._logger = trt.Logger(trt.Logger.WARNING)
        self._runtime = trt.Runtime(self._logger)
        files = load_or_build(trt, self.onnx_path, engine_dir, self.spec, device_index=index,
                              force=rebuild, log=self._log)
        self._engine = self._deserialize(files.engine)
        if self._engine is None and not files.built:
            reason = (f"TensorRT {trt.__version__} could not deserialise {files.engine} (corrupt, "
                      "or built by an incompatible TensorRT)")
            self._log(f"rebuilding: {reason}")
            files = build_engine(trt, self.onnx_path, engine_dir, self.spec, device_index=index,
                                 reasons=[reason], log=self._log)
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

    def _allocate(self, torch: Any) -> dict[str, Any]:
        """One flat buffer per output, sized for the largest input shape, bound once."""
        largest = self.spec.shapes()[2]
        self._set_shape(largest)
        buffers = {}
        for name, (mode, dtype) in self.io.items():
            if mode == "output":
                numel = _numel(self._context.get_tensor_shape(name))
                buffers[name] = torch.empty(numel, dtype=dtype, device=self.device)
                self._bind(name, buffers[name].data_ptr())
        return buffers

    def _bind(self, name: str, address: int) -> None:
        if not self._context.set_tensor_address(name, address):
            raise RuntimeError(f"TensorRT refused the address of tensor '{name}'")

    def _set_shape(self, shape: Shape) -> None:
        if shape != self._bound_shape:
            if not self._context.set_input_shape(self.spec.input_name, shape):
                raise ValueError(f"{self.spec.name} engine: input shape {list(shape)} is outside "
                                 f"its profile {[list(s) for s in self.spec.shapes()]}")
            self._bound_shape, self._views = shape, {}

    # ------------------------------------------------------------------ running
    def execute(self, input_address: int, shape: Shape) -> dict[str, Any]:
        """Enqueue the engine on :attr:`stream` for an input of ``shape`` read from
        ``input_address``; returns the outputs as views of the buffers (valid until the next call)."""
        self._set_shape(tuple(shape))
        self._bind(self.spec.input_name, input_address)
        if not self._context.execute_async_v3(self.stream.cuda_stream):
            raise RuntimeError("TensorRT execute_async_v3 failed (see the TensorRT errors above)")
        return self.output_views()

    def output_views(self) -> dict[str, Any]:
        """Each output buffer viewed in the shape TensorRT reports for the bound input shape
        (asked once per input shape: a stream of one frame size reuses them)."""
        if not self._views:
            for name, buffer in self.buffers.items():
                shape = tuple(self._context.get_tensor_shape(name))
                self._views[name] = buffer[:_numel(shape)].view(shape)
        return self._views

    def run(self, images: Any) -> dict[str, Any]:
        """The engine on a CUDA tensor of ``images`` (any batch up to the profile's max), ordered
        against the caller's current stream: the session's stream first waits for what the caller
        queued (the images, and reads of the previous call's outputs, which this call
        overwrites), and the caller's stream then waits for the engine. Output views keep the
        caller's batch size; nothing is synchronised with the host."""
        import torch

        n, p = images.shape[0], self.spec.profile
        if not 1 <= n <= p.max:
            raise ValueError(f"{self.spec.name} engine: expected 1 to {p.max} images per call "
                             f"(the profile's max batch), got {n}")
        shape = (max(n, p.min),) + tuple(images.shape[1:])
        caller = torch.cuda.current_stream(self.device)
        self.stream.wait_stream(caller)
        # The caller's memory is read on this stream: the caching allocator must not hand it out
        # again before that read is done, should the caller free it first.
        images.record_stream(self.stream)
        with torch.cuda.stream(self.stream):
            source = images
            if shape[0] != n or not images.is_contiguous():  # pad to the profile's min / densify
                source = self.staging(shape, images.dtype)
                source[:n].copy_(images)
            views = self.execute(source.data_ptr(), shape)
        # The outputs are the session's own buffers, freed only by close(), which synchronises:
        # they need no record_stream.
        caller.wait_stream(self.stream)
        return {name: view[:n] for name, view in views.items()}

    def staging(self, shape: Shape, dtype: Any) -> Any:
        """The session's input buffer (sized for the largest input), viewed as ``shape``."""
        import torch

        if self._input is None or self._input.dtype != dtype:
            numel = _numel(self.spec.shapes()[2])
            self._input = torch.empty(numel, dtype=dtype, device=self.device)
        return self._input[:_numel(shape)].view(shape)

    def close(self) -> None:
        """Wait for queued work that uses the buffers, then free context, engine and buffers."""
        if self._context is None and self._engine is None:
            return
        import torch

        # Synchronise before freeing: TensorRT may still read or write the buffers.
        torch.cuda.synchronize(self.device)
        self._context = self._engine = self._runtime = None
        self.buffers, self._input, self._views = {}, None, {}


def _numel(shape: Any) -> int:
    total = 1
    for d in shape:
        total *= int(d)
    return total


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
