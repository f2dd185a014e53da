"""A real Triton Inference Server for the Triton tests (not a conftest: test_triton imports it).

The binary is the one in the ``nvidia-pytriton`` 0.7.0 wheel (Triton 2.51, Python backend only;
``scripts/setup.sh --test`` installs it with ``--no-deps``), started by
:class:`maskrt.serving.local_server.LocalTritonServer` on free loopback ports in its own process
group, which teardown kills (SIGTERM, then SIGKILL after a timeout).
"""

from __future__ import annotations

import queue
import threading
import time
from pathlib import Path

import pytest

from maskrt.cli import main as cli_main
from maskrt.stream.sources.base import Frame, Source


def require_tritonclient() -> None:
    pytest.importorskip("tritonclient.grpc", reason="tritonclient is not installed "
                        "(pip install 'maskrt[triton]')")
    pytest.importorskip("tritonclient.http", reason="tritonclient[http] is not installed "
                        "(pip install 'maskrt[triton]')")


def require_tritonserver() -> None:
    """Skip, saying what to install, when no tritonserver binary can be found."""
    from maskrt.serving.local_server import TritonServerError, find_tritonserver

    try:
        find_tritonserver()
    except TritonServerError as err:
        pytest.skip(f"tritonserver unavailable: {err}")


def export_repository(root: Path, platform: str, *flags: str) -> Path:
    """``maskrt export --triton-repo ROOT --platform PLATFORM FLAGS...`` (in-process), checked."""
    status = cli_main(["export", "--triton-repo", str(root), "--platform", platform, *flags])
    assert status == 0, f"maskrt export --triton-repo exited {status}"
    return root


class Feeder(Source):
    """Frames the test hands over, one at a time; None ends the source."""

    kind = "feeder"

    def __init__(self) -> None:
        super().__init__("feeder")
        self.inbox: queue.Queue = queue.Queue()

    def frames(self, stop: threading.Event):
        index = 0
        while not stop.is_set():
            try:
                image = self.inbox.get(timeout=0.05)
            except queue.Empty:
                continue
            if image is None:
                return
            yield Frame(index, time.time(), image=image)
            index += 1
