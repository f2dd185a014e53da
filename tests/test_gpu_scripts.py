"""The GPU machine's scripts (benchmarks/gpu/) stay runnable where there is no GPU: they parse,
and the table a GPU run prints renders from a stored run's JSON. A GPU session has 15 minutes of
device time; a script that breaks there costs a rerun."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
GPU = ROOT / "benchmarks" / "gpu"


@pytest.mark.parametrize("script", ["run.sh", "prepare.sh"])
def test_the_shell_scripts_parse(script) -> None:
    result = subprocess.run(["bash", "-n", str(GPU / script)], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr


def test_a_stored_run_renders_with_each_figure_beside_its_baseline(tmp_path) -> None:
    stored = json.loads((GPU / "results" / "2026-12-04-h200-run2.json").read_text())
    report = tmp_path / "gpu_bench.json"
    report.write_text(json.dumps(stored["gpu_bench"]))
    result = subprocess.run([sys.executable, str(GPU / "bench_gpu.py"), "--render", str(report)],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    rows = {line.split(" | ")[0].lstrip("| "): line for line in result.stdout.splitlines()
            if line.startswith("| ")}
    assert "39.9% of copy" in rows["cam_overlay 224x224 b256, kernel-only"]
    assert "66.6% of copy" in rows["cam_overlay 1080x1920 b256, kernel-only"]
    assert "torch fp16 44,211 img/s | 0.99x" in rows["torch fp16 cudnn benchmark b256"]
    assert "torch fp32 (baseline) 27,655 img/s | 1.60x" in rows["torch fp16 b256"]
