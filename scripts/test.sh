#!/usr/bin/env bash
# Set everything up from nothing (see scripts/setup.sh) and run the test suite on the CPU.
# GPU tests (marked `cuda`) and TensorRT tests skip with their reason on machines without them.
#   bash scripts/test.sh [pytest args...]
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh --test
printf '\n== running the tests\n'
exec .venv/bin/python -m pytest -ra "$@"
