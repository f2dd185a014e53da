"""``maskrt view`` ends cleanly on Ctrl-C and SIGTERM, also when it was started where SIGINT is
inherited ignored (a background job of a non-interactive shell: CI's, a script's ``&``)."""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
from streaming_fixtures import REPO, cache_dir, face_paths


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory) -> Path:
    photos = tmp_path_factory.mktemp("view-photos")
    for path in face_paths(2):
        shutil.copy(path, photos / path.name)
    out = photos.parent / "view-run"
    subprocess.run([sys.executable, "-m", "maskrt", "score", str(photos), "--out", str(out),
                    "--regions", "frame", "--progress-interval", "0"], cwd=REPO, env=_env(),
                   check=True, capture_output=True, timeout=300)
    return out


def _env() -> dict[str, str]:
    return {**os.environ, "MASKRT_CACHE_DIR": cache_dir(), "PYTHONPATH": str(REPO),
            "PYTHONFAULTHANDLER": "1"}


def _ignore_sigint() -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_view_ends_on_the_signal_even_with_sigint_inherited_ignored(finished_run, signum):
    view = subprocess.Popen([sys.executable, "-m", "maskrt", "view", str(finished_run),
                             "--port", "0"], cwd=REPO, env=_env(), stderr=subprocess.PIPE,
                            text=True, preexec_fn=_ignore_sigint)
    try:
        line = view.stderr.readline()
        url = re.search(r"at (http://\S+) \(Ctrl-C ends it\)", line)
        assert url, f"expected the view's address line, got {line!r}"
        with urllib.request.urlopen(url.group(1), timeout=30) as page:
            assert page.status == 200
        view.send_signal(signum)
        assert view.wait(timeout=30) == 0, view.stderr.read()[-3000:]
    finally:
        if view.poll() is None:
            view.send_signal(signal.SIGABRT)  # its threads' stacks, where it hung
            pytest.fail(f"maskrt view still running after {signum!r}:\n"
                        f"{view.communicate(timeout=30)[1][-6000:]}")


def test_interrupted_by_signals_raises_keyboard_interrupt_then_restores_the_handlers():
    from maskrt.cli.common import interrupted_by_signals

    before = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}
    with pytest.raises(KeyboardInterrupt, match="SIGTERM"):
        with interrupted_by_signals():
            os.kill(os.getpid(), signal.SIGTERM)
            time.sleep(30)  # the handler's exception ends the sleep at once
    assert {s: signal.getsignal(s) for s in before} == before
