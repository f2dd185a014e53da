"""Shared pytest configuration: markers and the CUDA device fixture."""

from __future__ import annotations

import pytest


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "cuda: needs a CUDA device and a CUDA-enabled maskrt build (skips otherwise)")
    config.addinivalue_line("markers", "slow: takes more than a few seconds")
    config.addinivalue_line("markers", "ray: runs on real local Ray clusters (skips without ray: pip install maskrt[ray])")
    config.addinivalue_line("markers", "time_limit(seconds): a Ray test's own time limit (tests/test_ray.py)")


@pytest.fixture
def cuda_device():
    """A ``torch.device`` for CUDA tests; skips, saying why, where the kernel cannot run."""
    ext = pytest.importorskip("maskrt._C", reason="maskrt._C is not built (pip install -e . --no-build-isolation)")
    if not ext.has_cuda():
        pytest.skip("maskrt was built without CUDA (MASKRT_CUDA=off or no nvcc)")
    if ext.cuda_device_count() == 0:
        pytest.skip("no usable CUDA device (maskrt._C.cuda_device_count() == 0)")
    torch = pytest.importorskip("torch")
    if not torch.cuda.is_available():
        pytest.skip("torch.cuda.is_available() is False")
    return torch.device("cuda", 0)


@pytest.fixture(autouse=True, scope="session")
def _isolated_onnx_cache(tmp_path_factory):
    """Export each model's ONNX graph once per test session, into a temporary cache, never into
    the user's ~/.cache/maskrt (unless MASKRT_CACHE_DIR is set on purpose)."""
    import os

    if os.environ.get("MASKRT_CACHE_DIR"):
        yield os.environ["MASKRT_CACHE_DIR"]
        return
    import shutil

    path = str(tmp_path_factory.mktemp("maskrt-cache"))
    os.environ["MASKRT_CACHE_DIR"] = path
    try:
        yield path
    finally:
        del os.environ["MASKRT_CACHE_DIR"]
        # Exported graphs and engines: pytest keeps session folders even after a passing run.
        shutil.rmtree(path, ignore_errors=True)
