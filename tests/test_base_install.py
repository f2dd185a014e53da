"""The base install (``pip install .``, no extras) scores, explains, evaluates and benchmarks
without PyTorch: a fresh virtual environment gets the working tree installed without extras
(compiling maskrt._C), and the verbs run there under a wrapper that fails the run when anything
tried to import torch. Minutes: one environment for the module."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.helpers import REPO, val_image_paths

pytestmark = pytest.mark.slow

#: Runs ``maskrt ARGS`` like the console script, recording every attempt to import torch or
#: torchvision (a meta-path finder sees attempts even when they fail, as they must here), and
#: exits 97 at the end when there was one.
WRAPPER = '''
import atexit, importlib.abc, os, runpy, sys

attempts = []

class WatchTorch(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in ("torch", "torchvision"):
            attempts.append(name)
        return None

def report():
    if attempts or "torch" in sys.modules:
        sys.stderr.write(f"TORCH-CHECK: torch import attempted: {attempts[:5]}\\n")
        sys.stderr.flush()
        os._exit(97)
    sys.stderr.write("TORCH-CHECK: clean\\n")

sys.meta_path.insert(0, WatchTorch())
atexit.register(report)
sys.argv = ["maskrt", *sys.argv[1:]]
runpy.run_module("maskrt", run_name="__main__", alter_sys=True)
'''

INSTALL_TIMEOUT_S = 1800
RUN_TIMEOUT_S = 600


@pytest.fixture(scope="module")
def base(tmp_path_factory) -> Iterator[dict[str, Path]]:
    """A fresh venv with ``pip install <copy of the working tree>`` (no extras), the wrapper,
    and a work folder; MASKRT_CACHE_DIR points into it. Removed when the module is done
    (about 500 MB): pytest keeps tmp_path_factory folders even after a passing run."""
    root = tmp_path_factory.mktemp("base-install")
    try:
        yield _install(root)
    finally:
        shutil.rmtree(root, ignore_errors=True)


def _install(root: Path) -> dict[str, Path]:
    """Copy the working tree under ``root``, make the venv and pip install it there."""
    source = root / "src"
    _copy_working_tree(source)
    venv = root / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=300)
    python = venv / "bin" / "python"
    install = subprocess.run(
        [str(python), "-m", "pip", "install", "--disable-pip-version-check", str(source)],
        capture_output=True, text=True, timeout=INSTALL_TIMEOUT_S, env=_env(root), cwd=root,
        check=False)
    if install.returncode != 0:
        pytest.fail(f"pip install of the base package failed:\n{install.stdout[-3000:]}\n"
                    f"{install.stderr[-3000:]}")
    wrapper = root / "run_maskrt.py"
    wrapper.write_text(WRAPPER)
    work = root / "work"
    work.mkdir()
    return {"root": root, "python": python, "wrapper": wrapper, "work": work}


def _copy_working_tree(dest: Path) -> None:
    """The files a fresh checkout would have, plus untracked ones git does not ignore (what a
    commit of this tree would hold); no .venv, build outputs or compiled extension."""
    listed = subprocess.run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
                            cwd=REPO, capture_output=True, check=False)
    if listed.returncode != 0:  # not a git checkout: copy, leaving out what .gitignore names
        shutil.copytree(REPO, dest, ignore=shutil.ignore_patterns(
            ".venv", "build", "dist", "*.egg-info", "__pycache__", "*.so", "out", "runs", ".git"))
        return
    for name in listed.stdout.decode().split("\0"):
        path = REPO / name
        if name and path.is_file():
            (dest / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(path, dest / name)


def _env(root: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    env["MASKRT_CACHE_DIR"] = str(root / "cache")
    return env


def _maskrt(base: dict[str, Path], *args: str) -> subprocess.CompletedProcess[str]:
    """Run ``maskrt ARGS`` in the base venv (from the work folder, so the repository's own
    ``maskrt`` folder is not importable); fail unless it exited 0 without touching torch."""
    done = subprocess.run([str(base["python"]), str(base["wrapper"]), *args], capture_output=True,
                          text=True, timeout=RUN_TIMEOUT_S, env=_env(base["root"]),
                          cwd=base["work"], check=False)
    assert done.returncode == 0, f"maskrt {' '.join(args)}: exit {done.returncode}\n{done.stderr[-3000:]}"
    assert "TORCH-CHECK: clean" in done.stderr, done.stderr[-3000:]
    return done


def test_the_base_install_has_no_torch_and_no_onnx(base) -> None:
    code = ("import importlib.util as u, maskrt, maskrt._C; "
            "print(u.find_spec('torch') is None, u.find_spec('onnx') is None, maskrt.__file__)")
    done = subprocess.run([str(base["python"]), "-c", code], capture_output=True, text=True,
                          env=_env(base["root"]), cwd=base["work"], timeout=RUN_TIMEOUT_S,
                          check=False)
    assert done.returncode == 0, done.stderr
    no_torch, no_onnx, location = done.stdout.split()
    assert (no_torch, no_onnx) == ("True", "True")
    assert str(base["root"] / "venv") in location  # the installed package, not the checkout


def test_demo(base) -> None:
    out = base["work"] / "demo"
    _maskrt(base, "demo", "--out", str(out))
    summary = json.loads((out / "summary.json").read_text())
    assert summary["images"] == 8 and summary["model"] == "trained"
    assert len(list(out.glob("*_cam.jpg"))) == 8


def test_score_a_video(base) -> None:
    import cv2

    video = base["work"] / "clip.avi"
    face = cv2.resize(cv2.imread(str(val_image_paths(1)[0])), (160, 120))
    writer = cv2.VideoWriter(str(video), cv2.VideoWriter_fourcc(*"MJPG"), 10, (160, 120))
    for _ in range(6):
        writer.write(face)
    writer.release()
    out = base["work"] / "score"
    _maskrt(base, "score", str(video), "--out", str(out), "--regions", "frame", "--explain")
    records = [json.loads(line) for line in (out / "records.jsonl").read_text().splitlines()]
    assert len(records) == 6 and {r["status"] for r in records} == {"scored"}
    assert all(r["label"] in ("with_mask", "without_mask") for r in records)


def test_eval_an_image_folder(base) -> None:
    data = base["work"] / "tiny"
    for path in val_image_paths(4):
        (data / path.parent.name).mkdir(parents=True, exist_ok=True)
        shutil.copy(path, data / path.parent.name / path.name)
    report = base["work"] / "eval.json"
    _maskrt(base, "eval", str(data), "--json", str(report))
    assert json.loads(report.read_text())["images"] == 8


def test_bench(base) -> None:
    done = _maskrt(base, "bench", "--batch", "1", "--iterations", "2")
    assert "onnxruntime" in done.stdout


@pytest.mark.parametrize("args, message", [
    (["demo", "--backend", "torch"], "pip install 'maskrt[torch]'"),
    (["demo", "--model", str(REPO / "maskrt" / "weights" / "maskrt_resnet18.pt")],
     "pip install 'maskrt[torch]'"),
])
def test_what_needs_torch_says_what_to_install(base, args, message) -> None:
    done = subprocess.run([str(base["python"]), "-m", "maskrt", *args, "--out",
                           str(base["work"] / "refused")], capture_output=True, text=True,
                          env=_env(base["root"]), cwd=base["work"], timeout=RUN_TIMEOUT_S,
                          check=False)
    assert done.returncode == 2, done.stderr[-3000:]
    assert message in done.stderr and "Traceback" not in done.stderr
