"""PyTorch backend: FP32 on the CPU, FP16 channels_last on a CUDA GPU (optionally CUDA graphs).

On CUDA there are two ways in:

* NumPy ``uint8[N, 224, 224, 3]``: copied into pinned host memory (allocated once, grown when a
  larger batch comes), uploaded on the backend's own stream straight into the network's input
  buffer, run, and the outputs come back through pinned buffers as float32 NumPy arrays. The
  stream is synchronised once per call, because the results go to the host.
* A torch CUDA uint8 tensor on the backend's device: runs on the caller's current stream and
  returns ``(logits float32[N, 2], features float16[N, 512, 7, 7])`` on the device, with no
  synchronisation, so the next kernel the caller queues (``cam_overlay``) reads the features
  where they are. With CUDA graphs the outputs are the graph's static buffers: valid until the
  next ``infer`` with the same batch size (clone them to keep them).

The whole graph runs in FP16, the uint8 -> FP16 cast included (exact for 0..255); the
normalising constants are rounded to FP16 (relative error 5e-4, below FP16 activation error).
The in-graph NHWC -> NCHW permute already gives channels_last activations, which is the layout
the channels_last convolution weights want, so no layout conversion runs on the way in. The
features come out of layer4 channels_last too; they are made C-contiguous [N, 512, 7, 7] (what
``cam_overlay`` reads) on the device, 50 kB per image in FP16.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from maskrt.backends.base import Backend, BackendUnavailable
from maskrt.labels import CLASSES, FEATURE_CHANNELS, FEATURE_SIZE, INPUT_SIZE


class TorchBackend(Backend):
    """Runs :class:`maskrt.graph.model.MaskNetUint8` eagerly, or as one CUDA graph per batch size.

    device: "cpu", "cuda", "cuda:1" or None (CUDA when a GPU is usable, else CPU).
    half: FP16 weights and activations; default True on CUDA, and refused on the CPU.
    cuda_graphs: capture one CUDA graph per batch size on first use and replay it (CUDA only).
    cudnn_benchmark: let cuDNN time its algorithms per new input shape (CUDA only). cuDNN's flag
    is process-wide: while this backend is open every convolution of the process is autotuned,
    the torch face detector's too, whose input shape changes with nearly every scene photo and
    detector scale (on an H200, 98 scene photos did not get through one preset in 90 s with it,
    7 s without). Pays only where shapes repeat (fixed batch sizes); off by default, and
    close() puts the flag back as it found it.
    """

    name = "torch"

    def __init__(self, graph: Any, *, device: str | None = None, half: bool | None = None,
                 cuda_graphs: bool = False, cudnn_benchmark: bool = False) -> None:
        import torch

        from maskrt.graph.model import MaskNetUint8

        super().__init__(graph)
        self._net = None  # close() works after a failed start
        self.device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
        on_cuda = self.device.type == "cuda"
        if on_cuda:
            check_cuda_device(self.device, "torch backend")
            self.device = torch.device("cuda", self.device.index or 0)
        elif self.device.type != "cpu":
            raise ValueError(f"torch backend: expected device 'cpu' or 'cuda[:i]', got {device!r}")
        self.half = on_cuda if half is None else bool(half)
        if self.half and not on_cuda:
            raise BackendUnavailable("torch backend: half=True needs a CUDA device (FP16 "
                                     "convolutions on the CPU are slow and not what users deploy)")
        if cuda_graphs and not on_cuda:
            raise BackendUnavailable("torch backend: cuda_graphs=True needs a CUDA device")
        if cudnn_benchmark and not on_cuda:
            raise BackendUnavailable("torch backend: cudnn_benchmark=True needs a CUDA device")
        self.precision = "fp16" if self.half else "fp32"
        self.cuda_graphs = bool(cuda_graphs)
        # A private copy: converting it (FP16, CUDA, channels_last) must never touch the model
        # the caller gave, which other backends (the FP32 reference of `check`) still run.
        net = MaskNetUint8(graph.torch_module()).eval()
        if self.half:
            net = net.half()
        self._graphs: dict[int, _CapturedGraph] = {}
        self._host: dict[str, Any] = {}  # pinned staging, grown to the largest batch seen
        self._device_input: Any = None  # eager host path: upload target, grown likewise
        self._stream: Any = None
        self._cudnn_benchmark_before: bool | None = None
        if on_cuda:
            with torch.cuda.device(self.device):
                net = net.to(self.device, memory_format=torch.channels_last)
                self._stream = torch.cuda.Stream(self.device)
                # The weights were uploaded on the current stream; the backend's stream waits.
                self._stream.wait_stream(torch.cuda.current_stream(self.device))
        if cudnn_benchmark:  # last: a failed start leaves the process-wide flag alone
            self._cudnn_benchmark_before = torch.backends.cudnn.benchmark
            torch.backends.cudnn.benchmark = True
        self._net = net

    def describe(self) -> str:
        import torch

        where = torch.cuda.get_device_name(self.device) if self.device.type == "cuda" else "CPU"
        extra = ", CUDA graphs" if self.cuda_graphs else ""
        return f"torch {torch.__version__} {where} ({self.precision}{extra})"

    # ------------------------------------------------------------------ inference
    def _infer_device(self, images: Any) -> tuple[Any, Any]:
        """A torch tensor on this device -> device outputs (see the module docstring)."""
        return self._run(images)

    def _infer_host(self, host: np.ndarray) -> tuple[Any, Any]:
        import torch

        if self.device.type == "cpu":
            with torch.inference_mode():
                logits, features = self._net(torch.from_numpy(host))
            return logits.numpy(), features.contiguous().numpy()
        return self._infer_host_on_cuda(host)

    def _run(self, images: Any) -> tuple[Any, Any]:
        """Device batch -> device outputs, on the current stream, nothing synchronised."""
        import torch

        if self.cuda_graphs:
            graph = self._graph(images.shape[0])
            graph.static_input.copy_(images)
            return graph.replay()
        with torch.inference_mode():
            logits, features = self._net(images)
        return logits.float(), features.contiguous()

    def _infer_host_on_cuda(self, host: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        import torch

        n = host.shape[0]
        staging = self._host_buffers(n)
        staging["images"][:n].numpy()[...] = host  # free: the previous call synchronised
        caller = torch.cuda.current_stream(self.device)
        # Outputs of an earlier device-tensor call may still be read on the caller's stream.
        self._stream.wait_stream(caller)
        with torch.cuda.device(self.device), torch.cuda.stream(self._stream):
            if self.cuda_graphs:
                graph = self._graph(n)
                graph.static_input.copy_(staging["images"][:n], non_blocking=True)
                logits, features = graph.replay()
            else:
                device_input = self._upload_target(n)
                device_input.copy_(staging["images"][:n], non_blocking=True)
                with torch.inference_mode():
                    logits, features = self._net(device_input)
            staging["logits"][:n].copy_(logits.float(), non_blocking=True)
            staging["features"][:n].copy_(features.float(), non_blocking=True)
        # Results go to the host: the one synchronisation of this path.
        self._stream.synchronize()
        return staging["logits"][:n].numpy().copy(), staging["features"][:n].numpy().copy()

    def _host_buffers(self, n: int) -> dict[str, Any]:
        """Pinned host buffers with room for ``n`` images (reallocated only to grow)."""
        import torch

        if not self._host or self._host["images"].shape[0] < n:
            shapes = {"images": ((n, INPUT_SIZE, INPUT_SIZE, 3), torch.uint8),
                      "logits": ((n, len(CLASSES)), torch.float32),
                      "features": ((n, FEATURE_CHANNELS, FEATURE_SIZE, FEATURE_SIZE), torch.float32)}
            self._host = {k: torch.empty(s, dtype=t, pin_memory=True) for k, (s, t) in shapes.items()}
        return self._host

    def _upload_target(self, n: int) -> Any:
        """Device uint8 input buffer for ``n`` images (called on the backend's stream)."""
        import torch

        if self._device_input is None or self._device_input.shape[0] < n:
            self._device_input = torch.empty((n, INPUT_SIZE, INPUT_SIZE, 3), dtype=torch.uint8,
                                             device=self.device)
        return self._device_input[:n]

    def _graph(self, batch: int) -> "_CapturedGraph":
        graph = self._graphs.get(batch)
        if graph is None:
            graph = self._graphs[batch] = _CapturedGraph(self._net, batch, self.device)
        return graph

    def close(self) -> None:
        """Free the network, graphs and buffers; waits for queued work on the device first."""
        if self._net is None:
            return
        if self.device.type == "cuda":
            import torch

            # Synchronise before freeing: queued kernels may still use graphs and buffers.
            torch.cuda.synchronize(self.device)
        self._graphs.clear()
        self._net = None
        self._host = {}
        self._device_input = None
        self._stream = None
        if self._cudnn_benchmark_before is not None:
            import torch

            torch.backends.cudnn.benchmark = self._cudnn_benchmark_before
            self._cudnn_benchmark_before = None
        super().close()


class _CapturedGraph:
    """One CUDA graph of the network for one batch size, with its static input and outputs.

    Capturing synchronises the device (``torch.cuda.graph`` does): a one-time cost per batch size.
    Replays run on the current stream.
    """

    def __init__(self, net: Any, batch: int, device: Any) -> None:
        import torch

        self.static_input = torch.zeros((batch, INPUT_SIZE, INPUT_SIZE, 3), dtype=torch.uint8,
                                        device=device)
        caller = torch.cuda.current_stream(device)
        side_stream = torch.cuda.Stream(device)
        side_stream.wait_stream(caller)
        with torch.cuda.stream(side_stream), torch.inference_mode():
            for _ in range(3):  # cuDNN autotuning and allocator warm-up outside the capture
                net(self.static_input)
        caller.wait_stream(side_stream)
        self.graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(self.graph), torch.inference_mode():
            logits, features = net(self.static_input)
            self.logits, self.features = logits.float(), features.contiguous()

    def replay(self) -> tuple[Any, Any]:
        """Run the graph on the current stream; returns its static (logits, features)."""
        self.graph.replay()
        return self.logits, self.features


def check_cuda_device(device: Any, what: str) -> None:
    """Raise :class:`BackendUnavailable` naming the reason when CUDA ``device`` is not usable."""
    import torch

    if not torch.cuda.is_available():
        raise BackendUnavailable(
            f"{what} on {device}: no usable CUDA GPU (torch.cuda.is_available() is False; "
            f"torch {torch.__version__}, built for CUDA {torch.version.cuda or 'none (CPU-only build)'}"
            "). Use device='cpu' or the onnxruntime backend, or run on a machine with an NVIDIA "
            "GPU, its driver, and a CUDA build of torch.")
    index = device.index or 0
    if index >= torch.cuda.device_count():
        raise BackendUnavailable(f"{what}: expected a CUDA device index below "
                                 f"{torch.cuda.device_count()}, got {device}")
