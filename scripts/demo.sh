#!/usr/bin/env bash
# Set everything up from nothing (see scripts/setup.sh) and run the main job on the CPU default
# backend (ONNX Runtime): score and explain the sample faces shipped with maskrt, writing
# overlays and summary.json into out/demo/.
#   bash scripts/demo.sh [maskrt demo args...]
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
printf '\n== maskrt demo\n'
exec .venv/bin/maskrt demo --out out/demo "$@"
