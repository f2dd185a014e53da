"""PyTorch backend: FP32 on the CPU, FP16 channels_last on a CUDA GPU (optionally CUDA graphs)."""

from __future__ import annotations

from typing import Any

import numpy as np

from maskrt.backends.base import Backend, BackendUnavailable, check_images
from maskrt.labels import INPUT_SIZE


class TorchBackend(Backend):
    """Runs :class:`maskrt.model.MaskNetUint8` eagerly.

    device: "cpu", "cuda", "cuda:1" or None (CUDA when a GPU is usable, else CPU).
    half: FP16 weights and activations; default True on CUDA, and refused on the CPU.
    cuda_graphs: capture one CUDA graph per batch size on first use and replay it (CUDA only).

    On CUDA, NumPy batches go up through a pinned staging buffer on the backend's stream and
    come back as NumPy; torch CUDA tensors stay on the device (logits float32, features fp16).
    """

    name = "torch"

    def __init__(self, model: Any = None, *, device: str | None = None, half: bool | None = None,
                 cuda_graphs: bool = False) -> None:
        import torch

        from maskrt.model import MaskNetUint8, load_model

        self.device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
        _check_device(self.device)
        on_cuda = self.device.type == "cuda"
        self.half = on_cuda if half is None else half
        if self.half and not on_cuda:
            raise BackendUnavailable("torch backend: half=True needs a CUDA device (FP16 "
                                     "convolutions on the CPU are slow and not what users deploy)")
        if cuda_graphs and not on_cuda:
            raise BackendUnavailable("torch backend: cuda_graphs=True needs a CUDA device")
        self.precision = "fp16" if self.half else "fp32"
        self.cuda_graphs = cuda_graphs
        mask_net = load_model(model)
        self._fc_weight = mask_net.fc_weight.detach().float().cpu().numpy().copy()
        net = MaskNetUint8(mask_net).eval().to(self.device)
        if on_cuda:
            net = net.to(memory_format=torch.channels_last)
        # Only the network casts to fp16: the uint8 input and the normalising constants of the
        # preprocessing stay exact, the first convolution then runs in fp16.
        if self.half:
            net.model.half()
            net.preprocess.half()
        self._net = net
        self._stream = torch.cuda.Stream(self.device) if on_cuda else None
        self._graphs: dict[int, _CapturedGraph] = {}
        self._pinned: Any = None

    @property
    def fc_weight(self) -> np.ndarray:
        return self._fc_weight

    def describe(self) -> str:
        import torch

        where = torch.cuda.get_device_name(self.device) if self.device.type == "cuda" else "CPU"
        extra = ", CUDA graphs" if self.cuda_graphs else ""
        return f"torch {torch.__version__} {where} ({self.precision}{extra})"

    def infer(self, images: Any) -> tuple[Any, Any]:
        import torch

        if self._net is None:
            raise RuntimeError("torch backend: used after close()")
        if isinstance(images, torch.Tensor):
            return self._infer_tensor(images)
        host = check_images(images)
        if self.device.type == "cpu":
            with torch.inference_mode():
                logits, features = self._net(torch.from_numpy(host))
            return logits.numpy(), features.numpy()
        return self._infer_host_on_cuda(host)

    def _infer_tensor(self, images: Any) -> tuple[Any, Any]:
        import torch

        expected = (INPUT_SIZE, INPUT_SIZE, 3)
        if images.dtype != torch.uint8 or images.dim() != 4 or tuple(images.shape[1:]) != expected:
            raise ValueError(f"images: expected uint8[N,{INPUT_SIZE},{INPUT_SIZE},3], got "
                             f"{images.dtype}{list(images.shape)}")
        if images.device != self.device:
            raise ValueError(f"images: expected a tensor on {self.device}, got {images.device}")
        return self._run(images.contiguous())

    def _infer_host_on_cuda(self, host: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        import torch

        n = host.shape[0]
        if self._pinned is None or self._pinned.shape[0] < n:
            self._pinned = torch.empty((n, INPUT_SIZE, INPUT_SIZE, 3), dtype=torch.uint8,
                                       pin_memory=True)
        staging = self._pinned[:n]
        staging.numpy()[...] = host
        with torch.cuda.stream(self._stream):
            device_images = staging.to(self.device, non_blocking=True)
            logits, features = self._run(device_images)
            logits_host = logits.float().cpu()
            features_host = features.float().cpu()
        return logits_host.numpy(), features_host.numpy()

    def _run(self, images: Any) -> tuple[Any, Any]:
        import torch

        if not self.cuda_graphs:
            with torch.inference_mode():
                logits, features = self._net(images)
            return logits.float(), features
        batch = images.shape[0]
        graph = self._graphs.get(batch)
        if graph is None:
            graph = self._graphs[batch] = _CapturedGraph(self._net, batch, self.device)
        return graph.replay(images)

    def close(self) -> None:
        self._graphs.clear()
        self._net = None
        self._pinned = None


class _CapturedGraph:
    """One CUDA graph of the network for one batch size, with its static input and outputs."""

    def __init__(self, net: Any, batch: int, device: Any) -> None:
        import torch

        self.static_input = torch.zeros((batch, INPUT_SIZE, INPUT_SIZE, 3), dtype=torch.uint8,
                                        device=device)
        side_stream = torch.cuda.Stream(device)
        side_stream.wait_stream(torch.cuda.current_stream(device))
        with torch.cuda.stream(side_stream), torch.inference_mode():
            for _ in range(3):  # warm up cuDNN autotuning and the allocator outside the capture
                net(self.static_input)
        torch.cuda.current_stream(device).wait_stream(side_stream)
        self.graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(self.graph), torch.inference_mode():
            logits, self.features = net(self.static_input)
            self.logits = logits.float()

    def replay(self, images: Any) -> tuple[Any, Any]:
        self.static_input.copy_(images, non_blocking=True)
        self.graph.replay()
        # Outputs alias the graph's static buffers: callers that keep them across calls clone.
        return self.logits, self.features


def _check_device(device: Any) -> None:
    import torch

    if device.type == "cpu":
        return
    if device.type != "cuda":
        raise ValueError(f"torch backend: expected device 'cpu' or 'cuda[:i]', got {device}")
    if not torch.cuda.is_available():
        raise BackendUnavailable(
            f"torch backend on {device}: no usable CUDA GPU (torch.cuda.is_available() is False; "
            f"torch {torch.__version__}, built for CUDA {torch.version.cuda}). Use device='cpu' "
            "or the onnxruntime backend, or install a CUDA build of torch on a machine with a GPU.")
    index = device.index or 0
    if index >= torch.cuda.device_count():
        raise BackendUnavailable(f"torch backend: expected a CUDA device index below "
                                 f"{torch.cuda.device_count()}, got {device}")
