"""maskrt bench: the CLI measurement and its statistics (no timing is asserted)."""

from __future__ import annotations

import argparse
import json

import numpy as np
import pytest

from maskrt.cli import main as cli_main
from maskrt.tools.bench import parse_batches, summarise


def test_summarise_uses_median_and_percentiles() -> None:
    seconds = np.array([0.010, 0.020, 0.030, 0.040, 1.000])  # one outlier
    row = summarise(seconds, batch=8)
    assert row["images_per_s"] == pytest.approx(8 / 0.030)
    assert row["p50_ms"] == pytest.approx(30.0)
    assert row["p99_ms"] == pytest.approx(np.percentile(seconds, 99) * 1e3)
    assert row["p95_ms"] < row["p99_ms"] <= 1000.0


@pytest.mark.parametrize("text, expected", [("1,8,32", [1, 8, 32]), ("4", [4])])
def test_parse_batches(text, expected) -> None:
    assert parse_batches(text) == expected


@pytest.mark.parametrize("text", ["", "0", "a,b", "8,-1"])
def test_parse_batches_rejects(text) -> None:
    with pytest.raises(argparse.ArgumentTypeError, match="expected"):
        parse_batches(text)


def test_bench_verb_writes_one_row_per_batch(tmp_path, capsys) -> None:
    report_path = tmp_path / "bench.json"
    assert cli_main(["bench", "--batch", "1,2", "--iterations", "2", "--warmup", "1",
                     "--explain", "--json", str(report_path)]) == 0
    report = json.loads(report_path.read_text())
    assert [row["batch"] for row in report["rows"]] == [1, 2]
    assert report["explain"] is True and report["backend"].startswith("onnxruntime")
    assert all(row["images_per_s"] > 0 and row["iterations"] == 2 for row in report["rows"])
    assert "p99 ms" in capsys.readouterr().out


@pytest.mark.parametrize("argv, message", [
    (["--iterations", "0"], "maskrt bench: expected --iterations >= 1 and --warmup >= 0, got 0"),
    (["--backend-option", "device=cpu"],
     "maskrt bench: backend onnxruntime: unknown option(s) ['device']; it takes ['precision', 'threads']"),
    (["--backend", "torch", "--backend-option", "half=maybe"],
     "maskrt bench: --backend-option half: expected true/false, got 'maybe'"),
])
def test_bench_verb_rejects_bad_arguments_without_a_traceback(argv, message, capsys) -> None:
    assert cli_main(["bench", "--iterations", "1", *argv]) == 2
    assert message in capsys.readouterr().err


def test_backend_names_are_the_registrys(capsys) -> None:
    with pytest.raises(SystemExit) as exit_info:
        cli_main(["bench", "--backend", "tensorflow"])
    assert exit_info.value.code == 2
    assert "maskrt bench: error: argument --backend: invalid choice: 'tensorflow'" in capsys.readouterr().err
