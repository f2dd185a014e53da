#!/usr/bin/env bash
# Set up the base install from nothing (see scripts/setup.sh: NumPy, OpenCV, ONNX Runtime and
# the compiled extension; no PyTorch) and run the main job on the CPU default backend (ONNX
# Runtime, the shipped ONNX graph): score and explain the sample faces shipped with maskrt,
# writing overlays and summary.json into out/demo/.
#   bash scripts/demo.sh [maskrt demo args...]
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
printf '\n== maskrt demo\n'
exec .venv/bin/maskrt demo --out out/demo "$@"
