"""What the command line says when it is used wrongly: argparse errors in one line naming the
verb and the flag, a taken --metrics-port or an --out that is a file named as such, --debug
without the message twice, and ``score --help`` listing every face option."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from maskrt.cli.common import NATIVE_LOG_ENV
from tests.helpers import REPO


def _maskrt(*argv: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k not in NATIVE_LOG_ENV}
    return subprocess.run([sys.executable, "-m", "maskrt", *argv], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=300, check=False)


def _usage_error(run: subprocess.CompletedProcess[str]) -> str:
    """The error line of an argparse error, checked to be at most a line and a hint."""
    lines = run.stderr.strip().splitlines()
    assert run.returncode == 2 and 1 <= len(lines) <= 2, run.stderr
    assert "usage:" not in run.stderr and "Traceback" not in run.stderr, run.stderr
    return lines[0]


def test_an_invalid_choice_is_one_line_with_the_choices(tmp_path):
    line = _usage_error(_maskrt("score", "x", "--out", str(tmp_path), "--backend", "nosuch"))
    assert line.startswith("maskrt score: error: argument --backend")
    assert "invalid choice" in line and "onnxruntime" in line


@pytest.mark.parametrize("argv, missing", [
    (["score", "--out", "o"], "SOURCE"),
    (["score", "x"], "--out"),
])
def test_a_missing_argument_is_one_line_naming_it(argv, missing):
    line = _usage_error(_maskrt(*argv))
    assert line.startswith("maskrt score: error: ") and missing in line


def test_an_unknown_flag_after_the_verb_is_the_verbs_error():
    line = _usage_error(_maskrt("score", "x", "--out", "o", "--nosuchflag"))
    assert line.startswith("maskrt score: error: ") and "--nosuchflag" in line


def test_help_still_shows_everything():
    run = _maskrt("score", "--help")
    assert run.returncode == 0 and "usage:" in run.stdout and "--metrics-port" in run.stdout


def test_score_help_lists_every_face_option():
    from maskrt.detect import PRESETS

    run = _maskrt("score", "--help")
    assert run.returncode == 0
    text = " ".join(run.stdout.split())  # argparse wraps the help text
    missing = [key for key in PRESETS["default"] if key not in text]
    assert not missing, missing


def _faces(tmp_path: Path) -> Path:
    from maskrt.samples import SAMPLES_DIR

    faces = tmp_path / "faces"
    faces.mkdir()
    sample = min(SAMPLES_DIR.glob("*.jpg"))
    (faces / sample.name).write_bytes(sample.read_bytes())
    return faces


def test_a_metrics_port_in_use_names_the_flag_and_port(tmp_path):
    pytest.importorskip("prometheus_client", reason="--metrics-port needs maskrt[metrics]")
    with socket.socket() as taken:
        taken.bind(("0.0.0.0", 0))
        taken.listen()
        port = taken.getsockname()[1]
        run = _maskrt("score", str(_faces(tmp_path)), "--regions", "frame", "--out",
                      str(tmp_path / "out"), "--metrics-port", str(port))
    assert run.returncode == 2 and "Traceback" not in run.stderr, run.stderr
    last = run.stderr.strip().splitlines()[-1]
    assert last == (f"maskrt score: --metrics-port {port}: address already in use (another "
                    f"maskrt or exporter?)"), run.stderr


def test_out_naming_a_file_says_it_expects_a_folder(tmp_path):
    plain = tmp_path / "plain"
    plain.write_text("a file\n")
    run = _maskrt("score", str(_faces(tmp_path)), "--out", str(plain))
    assert run.returncode == 2 and "Traceback" not in run.stderr, run.stderr
    assert run.stderr.strip() == f"maskrt score: --out {plain}: expected a folder, {plain} is a file"


def test_debug_prints_the_error_message_once(tmp_path):
    run = _maskrt("--debug", "score", "/nope/clip.mp4", "--out", str(tmp_path / "o"))
    assert run.returncode == 2 and "Traceback (most recent call last)" in run.stderr
    assert run.stderr.count("'/nope/clip.mp4' does not exist") == 1, run.stderr
    assert run.stderr.strip().splitlines()[-1].startswith("maskrt score: source '/nope/clip.mp4'")
