"""Every verb turns expected failures into one clear line and exit status 2, never a traceback;
``--debug`` shows the traceback; OpenCV's and FFmpeg's own log lines stay out of the output."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import cv2
import pytest

from maskrt import cli
from maskrt.cli.common import NATIVE_LOG_ENV, error_line, quiet_native_logs
from maskrt.samples import SAMPLES_DIR
from tests.helpers import REPO


def _has(module: str) -> bool:
    try:
        __import__(module)
    except ImportError:
        return False
    return True


def _cuda() -> bool:
    try:
        import torch
    except ImportError:
        return False
    return torch.cuda.is_available()


@pytest.fixture(scope="module")
def files(tmp_path_factory) -> dict[str, Path]:
    """Bad inputs: a text file posing as a checkpoint, a regular file where a folder is needed,
    a folder of images none of which decodes, a tiny labelled tree, a folder of two faces."""
    root = tmp_path_factory.mktemp("bad-inputs")
    (root / "not_a_checkpoint.pt").write_text("not a checkpoint\n")
    (root / "plain_file").write_text("a file, not a folder\n")
    unreadable = root / "unreadable"
    unreadable.mkdir()
    (unreadable / "a.jpg").write_bytes(b"\xff\xd8\xff not a jpeg")
    (unreadable / "b.png").write_bytes(b"")
    data = root / "data"
    for name in ("with_mask", "without_mask"):
        (data / name).mkdir(parents=True)
        sample = min(SAMPLES_DIR.glob(f"{name}_*.jpg"))
        (data / name / sample.name).write_bytes(sample.read_bytes())
    faces = root / "faces"
    faces.mkdir()
    for sample in sorted(SAMPLES_DIR.glob("*.jpg"))[:2]:
        (faces / sample.name).write_bytes(sample.read_bytes())
    return {"root": root, "ckpt": root / "not_a_checkpoint.pt", "file": root / "plain_file",
            "unreadable": unreadable, "data": data, "faces": faces}


#: (argv with {placeholders}, what the one line says, the stream it is on, skip reason or None).
#: check and build report on stdout, as the rest of their output (their own tests read it there).
CASES = [
    ("demo --images /nope/faces --out {root}/o", "expected a folder of images", "err", None),
    ("demo --images {faces} --model {ckpt} --out {root}/o", "not a readable maskrt checkpoint",
     "err", None),
    ("demo --images {faces} --backend tensorrt --out {root}/o", "TensorRT", "err",
     _has("tensorrt") and "TensorRT is installed"),
    ("demo --images {faces} --out {file}/o", "plain_file/o: Not a directory", "err", None),
    ("score /nope/clip.mp4 --out {root}/s", "does not exist", "err", None),
    ("score {data} --out {root}/s --reconnect sometimes", "reconnect: expected", "err", None),
    ("score {data} --out {root}/s --backend torch --backend-option device=cuda",
     "no usable CUDA GPU", "err", (_cuda() or not _has("torch")) and "needs torch without CUDA"),
    ("eval /nope/val", "no such folder", "err", None),
    ("eval {data} --model {ckpt}", "not a readable maskrt checkpoint", "err", None),
    ("bench --backend tensorrt --iterations 1 --batch 1", "TensorRT", "err",
     _has("tensorrt") and "TensorRT is installed"),
    ("bench --iterations 0", "expected --iterations >= 1", "err", None),
    ("check --data /nope/faces", "no such folder", "out", None),
    ("check --backend onnxruntime --model {ckpt} --data {data}", "not a readable maskrt", "out",
     not _has("torch") and "needs torch"),
    ("export --out {root}/x.onnx --model {ckpt}", "not a readable maskrt checkpoint", "err",
     not _has("torch") and "needs torch"),
    ("build --min-batch 0", "min-batch: expected >= 1", "out", None),
    ("train /nope/data --out {root}/run", "no such data folder", "err", None),
]


def _argv(template: str, files: dict[str, Path]) -> list[str]:
    return template.format(**{k: str(v) for k, v in files.items()}).split()


@pytest.mark.parametrize("template, says, stream, skip", CASES,
                         ids=[" ".join(c[0].split()[:3]) for c in CASES])
def test_bad_arguments_give_one_line_and_exit_2(template, says, stream, skip, files, capsys):
    if skip:
        pytest.skip(skip)
    argv = _argv(template, files)
    code = cli.main(argv)
    captured = capsys.readouterr()
    assert "Traceback" not in captured.out + captured.err
    assert code == 2, captured
    lines = (captured.err if stream == "err" else captured.out).strip().splitlines()
    assert len(lines) == 1, lines
    assert lines[0].startswith(f"maskrt {argv[0]}: ") and says in lines[0], lines[0]


@pytest.mark.parametrize("argv, says", [
    (["bench", "--batch", "x"], "argument --batch"),
    (["eval", "somewhere", "--batch-size", "0"], "argument --batch-size"),
    (["export", "--out", "x.onnx", "--opset", "3"], "argument --opset: expected 18 or later"),
    (["build", "--device", "-1"], "argument --device"),
    (["train", "d", "--out", "r", "--threads", "-2"], "argument --threads"),
    (["score", "x", "--out", "o", "--batch-size", "many"], "argument --batch-size"),
])
def test_bad_numbers_are_argparse_errors(argv, says, capsys):
    with pytest.raises(SystemExit) as exited:
        cli.main(argv)
    err = capsys.readouterr().err
    assert exited.value.code == 2 and "Traceback" not in err
    assert err.strip().splitlines()[0].startswith(f"maskrt {argv[0]}: error: {says}")


def test_any_file_that_is_not_a_checkpoint_is_one_line(files, capsys):
    if not _has("torch"):
        pytest.skip("checkpoints need torch")
    code = cli.main(["eval", str(files["data"]), "--model", str(files["file"]), "--no-progress"])
    assert code == 2 and "not a readable" in capsys.readouterr().err


def test_demo_on_a_folder_of_unreadable_images_says_why_per_file(files, capsys):
    code = cli.main(["demo", "--images", str(files["unreadable"]), "--out",
                     str(files["root"] / "o")])
    err = capsys.readouterr().err
    assert code == 2 and "Traceback" not in err
    lines = err.strip().splitlines()
    assert [line.split(":")[0] for line in lines] == ["maskrt demo"] * 3
    assert "a.jpg: truncated JPEG" in lines[0] and "b.png: expected an encoded image" in lines[1]
    assert "none of the images" in lines[2]


def test_unexpected_errors_are_bugs_and_keep_their_traceback(monkeypatch):
    def broken(args):
        raise KeyError("a bug")

    monkeypatch.setattr(cli.demo, "main", broken)
    with pytest.raises(KeyError):  # not turned into a one-liner: the traceback is the report
        cli.main(["demo"])


def test_ctrl_c_is_one_line_and_130(monkeypatch, capsys):
    def interrupted(args):
        raise KeyboardInterrupt

    monkeypatch.setattr(cli.bench, "main", interrupted)
    assert cli.main(["bench"]) == 130
    assert capsys.readouterr().err.strip() == "maskrt bench: interrupted"


def test_debug_after_the_verb_prints_the_traceback(files, capsys):
    code = cli.main(["demo", "--images", str(files["faces"]), "--out", str(files["file"] / "o"),
                     "--debug"])
    err = capsys.readouterr().err
    assert code == 2 and "Traceback (most recent call last)" in err
    assert err.strip().splitlines()[-1].startswith("maskrt demo: ")


def test_error_line_keeps_one_line():
    assert error_line(ValueError("first\nsecond")) == "first [...]"
    assert error_line(FileNotFoundError(2, "No such file or directory", "/x")) == \
        "/x: No such file or directory"
    assert error_line(ValueError()) == "ValueError"


def test_native_logs_are_quieted_then_restored(monkeypatch):
    for name in NATIVE_LOG_ENV:
        monkeypatch.delenv(name, raising=False)
    before = cv2.utils.logging.getLogLevel()
    with quiet_native_logs():
        assert cv2.utils.logging.getLogLevel() == cv2.utils.logging.LOG_LEVEL_SILENT
        assert all(os.environ[name] == value for name, value in NATIVE_LOG_ENV.items())
    assert cv2.utils.logging.getLogLevel() == before
    assert not any(name in os.environ for name in NATIVE_LOG_ENV)


def test_native_logs_are_left_alone_when_the_user_set_them(monkeypatch):
    monkeypatch.setenv("OPENCV_LOG_LEVEL", "DEBUG")
    before = cv2.utils.logging.getLogLevel()
    with quiet_native_logs():
        assert cv2.utils.logging.getLogLevel() == before
        assert os.environ["OPENCV_LOG_LEVEL"] == "DEBUG"


# ------------------------------------------------------------------ real processes


def _run(*argv: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k not in NATIVE_LOG_ENV}
    return subprocess.run([sys.executable, "-m", "maskrt", *argv], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=300, check=False)


def test_process_export_of_a_file_that_is_not_a_checkpoint(files):
    if not _has("torch"):
        pytest.skip("export needs torch")
    run = _run("export", "--out", str(files["root"] / "x.onnx"), "--model", str(files["ckpt"]),
               cwd=REPO)
    assert run.returncode == 2 and "Traceback" not in run.stdout + run.stderr
    assert run.stderr.strip().splitlines() == [run.stderr.strip()]
    assert run.stderr.startswith("maskrt export: error: ") and "not a readable" in run.stderr


def test_process_demo_on_a_missing_folder_then_with_debug(files):
    run = _run("demo", "--images", "/nope/faces", cwd=files["root"])
    assert run.returncode == 2 and "Traceback" not in run.stdout + run.stderr
    assert run.stderr == "maskrt demo: --images: expected a folder of images, got /nope/faces\n"
    run = _run("--debug", "demo", "--images", str(files["faces"]), "--out",
               str(files["file"] / "o"), cwd=files["root"])
    assert run.returncode == 2 and "Traceback (most recent call last)" in run.stderr
    assert run.stderr.strip().splitlines()[-1] == f"maskrt demo: {files['file']}/o: Not a directory"


def test_opencv_and_ffmpeg_log_lines_stay_out_of_the_output(files):
    """A file named like a video that is not one: FFmpeg says "moov atom not found" and OpenCV
    "[ WARN:0@...] ... can't be used to capture by name" unless the command line quiets them;
    the record's reason says what happened instead."""
    clip = files["root"] / "clip.mp4"
    clip.write_bytes(b"this is not a video" * 100)
    out = files["root"] / "score-clip"
    run = _run("score", str(clip), "--regions", "frame", "--out", str(out), cwd=files["root"])
    assert run.returncode == 0, run.stderr
    assert "[ WARN" not in run.stderr and "moov atom" not in run.stderr, run.stderr
    assert "Traceback" not in run.stdout + run.stderr
    (record,) = [json.loads(line) for line in (out / "records.jsonl").read_text().splitlines()]
    assert record["status"] == "failed"
    assert "cannot open as a video" in record["reason"] and "not a video file" in record["reason"]
