"""A ``tritonserver`` process on loopback: for the tests, the Triton benchmark and trying a
repository that ``maskrt export --triton-repo`` wrote, on a machine without NVIDIA's containers.

The binary comes from ``$MASKRT_TRITONSERVER``, else the ``nvidia-pytriton`` wheel (0.7.0 ships
Triton 2.51 with the Python backend only: ``pip install --no-deps nvidia-pytriton==0.7.0``), else
``tritonserver`` on PATH (NVIDIA's containers, backends in /opt/tritonserver/backends).

What the wheel's Python backend needs, done here: its stub for this Python version copied into a
backend folder of our own; ``LD_LIBRARY_PATH`` with this interpreter's ``LIBDIR`` (the stub links
``libpython3.X.so``); this interpreter's folder first on PATH (the stub's embedded Python finds
its prefix, a virtual environment's too, through the ``python3`` it finds there, so model.py
imports what this environment has). Each server has its own shared-memory prefix, removed with
the server, and runs in its own process group, which :meth:`LocalTritonServer.kill` and
:meth:`LocalTritonServer.stop` signal as a whole (a hung Python-backend stub included).
"""

from __future__ import annotations

import importlib.util
import itertools
import os
import shutil
import signal
import socket
import subprocess
import sys
import sysconfig
import tempfile
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

INSTALL_HINT = ("pip install --no-deps nvidia-pytriton==0.7.0 (its wheel carries a tritonserver "
                "binary with the Python backend), or set MASKRT_TRITONSERVER to a tritonserver "
                "binary")
_counter = itertools.count()


class TritonServerError(RuntimeError):
    """The server could not be found, started, or did not become ready; the message says why."""


@dataclass(frozen=True)
class TritonDist:
    """Where a tritonserver binary and its backends are."""

    binary: Path
    backends: Path
    #: the Python-backend stub for this Python, when it is kept apart from the backends (pytriton)
    stub: Path | None = None
    #: shared libraries the binary and stub need beside the system's (pytriton's bundled ones)
    libs: Path | None = None


def find_tritonserver() -> TritonDist:
    """The tritonserver to run; TritonServerError saying what to install when there is none."""
    given = os.environ.get("MASKRT_TRITONSERVER")
    if given:
        binary = Path(given)
        if not binary.is_file():
            raise TritonServerError(f"MASKRT_TRITONSERVER={given}: expected a tritonserver "
                                    "binary, found no file there")
        return TritonDist(binary, binary.parent.parent / "backends")
    spec = importlib.util.find_spec("pytriton")  # finds the package without importing it
    if spec is not None and spec.submodule_search_locations:
        root = Path(list(spec.submodule_search_locations)[0]) / "tritonserver"
        version = f"{sys.version_info[0]}.{sys.version_info[1]}"
        stub = root / "python_backend_stubs" / version / "triton_python_backend_stub"
        if (root / "bin" / "tritonserver").is_file() and stub.is_file():
            libs = root.parent.parent / "nvidia_pytriton.libs"
            return TritonDist(root / "bin" / "tritonserver", root / "backends", stub,
                              libs if libs.is_dir() else None)
    on_path = shutil.which("tritonserver")
    if on_path:
        return TritonDist(Path(on_path), Path("/opt/tritonserver/backends"))
    raise TritonServerError(f"no tritonserver binary found: {INSTALL_HINT}")


def free_port() -> int:
    """A TCP port free on loopback now (the usual small race with other programs applies)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class LocalTritonServer:
    """``tritonserver --model-repository REPO`` on 127.0.0.1, on free ports unless given.

    ``start()`` waits until the server says it is ready (every model loaded) and raises
    TritonServerError with the end of its log when it exits or times out first. ``kill()`` is
    SIGKILL to the process group (a crash); ``stop()`` asks politely first. ``start()`` again
    reuses the same ports, so clients can reconnect to the same URLs.
    """

    def __init__(self, repository: str | os.PathLike[str], *, http_port: int | None = None,
                 grpc_port: int | None = None, workdir: str | os.PathLike[str] | None = None,
                 extra_args: tuple[str, ...] = ()) -> None:
        self.repository = Path(repository)
        self.dist = find_tritonserver()
        self.http_port = http_port or free_port()
        self.grpc_port = grpc_port or free_port()
        self._own_workdir = workdir is None
        self.workdir = Path(workdir or tempfile.mkdtemp(prefix="maskrt-triton-"))
        self.log_path = self.workdir / "tritonserver.log"
        self.extra_args = tuple(extra_args)
        self.shm_prefix = f"maskrt{os.getpid()}x{next(_counter)}_"
        self.process: subprocess.Popen[bytes] | None = None
        try:
            self._backends = self._backend_dir()
        except BaseException:
            if self._own_workdir:  # no object comes back to close(): remove what we made
                shutil.rmtree(self.workdir, ignore_errors=True)
            raise

    @property
    def grpc_url(self) -> str:
        return f"127.0.0.1:{self.grpc_port}"

    @property
    def http_url(self) -> str:
        return f"127.0.0.1:{self.http_port}"

    def _backend_dir(self) -> Path:
        """The backends folder to give the server: the dist's, or (pytriton) a copy of its Python
        backend with the stub for this Python beside it, where the backend looks for it."""
        if self.dist.stub is None:
            return self.dist.backends
        python = self.workdir / "backends" / "python"
        python.mkdir(parents=True, exist_ok=True)
        for item in (self.dist.backends / "python").iterdir():
            if item.is_file():
                shutil.copy2(item, python / item.name)
        shutil.copy2(self.dist.stub, python / "triton_python_backend_stub")
        return python.parent

    def command(self) -> list[str]:
        return [str(self.dist.binary), f"--model-repository={self.repository}",
                f"--backend-directory={self._backends}",
                "--http-address=127.0.0.1", f"--http-port={self.http_port}",
                "--grpc-address=127.0.0.1", f"--grpc-port={self.grpc_port}",
                "--allow-metrics=false", "--exit-timeout-secs=5",
                f"--backend-config=python,shm-region-prefix-name={self.shm_prefix}",
                *self.extra_args]

    def environment(self) -> dict[str, str]:
        env = dict(os.environ)
        libs = [sysconfig.get_config_var("LIBDIR") or "", str(self.dist.libs or ""),
                env.get("LD_LIBRARY_PATH", "")]
        env["LD_LIBRARY_PATH"] = os.pathsep.join(p for p in libs if p)
        env["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), env.get("PATH", "")])
        env.pop("PYTHONHOME", None)
        return env

    def launch(self) -> "LocalTritonServer":
        """Start the process and return at once (see :meth:`start`)."""
        if self.running():
            raise TritonServerError(f"tritonserver already running (pid {self.process.pid})")  # type: ignore[union-attr]
        with open(self.log_path, "ab") as log:
            self.process = subprocess.Popen(self.command(), stdout=log, stderr=subprocess.STDOUT,
                                            stdin=subprocess.DEVNULL, env=self.environment(),
                                            start_new_session=True)
        return self

    def start(self, timeout: float = 60.0) -> "LocalTritonServer":
        """Start the server and wait until it is ready (TritonServerError otherwise)."""
        self.launch()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if not self.running():
                raise TritonServerError(f"tritonserver exited with status "
                                        f"{self.process.returncode} before it was ready: "  # type: ignore[union-attr]
                                        f"{self.log_tail()}")
            if self.ready():
                return self
            time.sleep(0.1)
        self.kill()
        raise TritonServerError(f"tritonserver not ready after {timeout:.0f} s: {self.log_tail()}")

    def ready(self) -> bool:
        """Whether the server answers /v2/health/ready with 200."""
        url = f"http://{self.http_url}/v2/health/ready"
        try:
            with urllib.request.urlopen(url, timeout=1.0) as response:
                return response.status == 200
        except (urllib.error.URLError, OSError):
            return False

    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def wait(self, timeout: float) -> int:
        """Wait for the process to exit by itself; its exit status (TritonServerError on timeout)."""
        if self.process is None:
            raise TritonServerError("tritonserver was never started")
        try:
            return self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            raise TritonServerError(f"tritonserver still running after {timeout:.0f} s: "
                                    f"{self.log_tail()}") from None

    def kill(self) -> None:
        """SIGKILL the server's process group (the server and its stubs): a crash."""
        self._signal(signal.SIGKILL, timeout=10.0)

    def stop(self, grace: float = 5.0) -> None:
        """SIGTERM, then SIGKILL to the process group after ``grace`` seconds."""
        if self.running():
            self._signal(signal.SIGTERM, timeout=grace)
        self._signal(signal.SIGKILL, timeout=10.0)  # stubs left behind, if any

    def _signal(self, sig: int, timeout: float) -> bool:
        """Send ``sig`` to the group; whether the server exited within ``timeout``."""
        if self.process is None:
            return True
        try:
            os.killpg(self.process.pid, sig)
        except ProcessLookupError:
            pass  # the whole group is gone already
        try:
            self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            return False
        self._remove_shared_memory()
        return True

    def _remove_shared_memory(self) -> None:
        """Shared-memory regions of this server's Python backend (left behind by SIGKILL)."""
        shm = Path("/dev/shm")
        if shm.is_dir():
            for region in shm.glob(f"{self.shm_prefix}*"):
                region.unlink(missing_ok=True)

    def log_text(self) -> str:
        try:
            return self.log_path.read_text(encoding="utf-8", errors="replace")
        except FileNotFoundError:
            return ""

    def log_tail(self, lines: int = 15) -> str:
        """The last log lines that say something (not Triton's ASCII tables)."""
        kept = [line for line in self.log_text().splitlines()
                if line.strip() and not line.startswith(("+", "|"))]
        return "\n".join(kept[-lines:]) or "(empty log)"

    def close(self) -> None:
        """Stop the server and remove its work folder (when this object made it)."""
        self.stop()
        if self._own_workdir:
            shutil.rmtree(self.workdir, ignore_errors=True)

    def __enter__(self) -> "LocalTritonServer":
        if not self.running():
            try:
                self.start()
            except BaseException:
                self.close()
                raise
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def model_statistics(url: str, model: str = "maskrt", settle_s: float = 0.2) -> dict[str, int]:
    """The model's inference_count and execution_count from the server's statistics API, once
    unchanged for ``settle_s``: the server counts a request just after it has answered it."""
    import tritonclient.grpc as grpc

    client = grpc.InferenceServerClient(url)
    try:
        counts, previous = None, {}
        while counts != previous:
            previous = counts
            time.sleep(settle_s if previous is not None else 0.0)
            stats = client.get_inference_statistics(model, as_json=True)["model_stats"][0]
            counts = {key: int(stats.get(key, 0)) for key in ("inference_count", "execution_count")}
    finally:
        client.close()
    return counts
