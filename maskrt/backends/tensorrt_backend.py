"""TensorRT backend (placeholder until the GPU issue lands): says why it cannot run."""

from __future__ import annotations

from typing import Any

from maskrt.backends.base import Backend, BackendUnavailable


class TensorRTBackend(Backend):
    name = "tensorrt"
    precision = "fp16"

    def __init__(self, model: Any = None, **options: Any) -> None:
        try:
            import tensorrt  # noqa: F401
        except ImportError as err:
            raise BackendUnavailable(
                "the tensorrt backend needs NVIDIA TensorRT 10 and a CUDA GPU: pip install "
                "tensorrt (from NVIDIA's index) on a machine with a GPU; import tensorrt failed "
                f"here ({err})") from err
        raise BackendUnavailable("the tensorrt backend is not implemented in this version")

    @property
    def fc_weight(self) -> Any:
        raise NotImplementedError

    def infer(self, images: Any) -> tuple[Any, Any]:
        raise NotImplementedError
