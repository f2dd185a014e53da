#!/usr/bin/env bash
# The whole GPU check of maskrt in one call of the device tool (budget: under 8 minutes).
#
#   bash benchmarks/gpu/run.sh            # from the repository root; $OUT collects the results
#
# Steps (each with its own time limit, each reported in the summary at the end):
#   1. nvidia-smi, and whether `import tensorrt` works there
#   2. build the extension with MASKRT_CUDA=on for this GPU's architecture only (fast), in place
#   3. pytest -m cuda (the CUDA tests of the whole suite)
#   4. benchmarks/gpu/bench_gpu.py: cam_overlay, FP16 torch backend, explain overhead, TensorRT
#   5. maskrt check --backend torch (FP16 on CUDA vs the FP32 onnxruntime reference), and
#      --backend tensorrt where TensorRT imports
#
# Validation images for step 5: $MASKRT_VAL_DIR, else .gpudata/facemask/val in the checkout, else
# the 8 packaged sample faces. The shared split is not in the repository; to take it along, before
# calling the device tool run (once, in the repository root):
#   mkdir -p .gpudata/facemask && cp -r ../shared/data/facemask/val .gpudata/facemask/ \
#     && echo /.gpudata/ >> .git/info/exclude
# and name ".gpudata" in the call's carry list (4.4 MB).
#
# Needs on the machine: a python3 with torch (CUDA), numpy, opencv, pybind11, setuptools, cmake,
# nvcc, pytest; onnx + onnxruntime for the export/check parts (skipped, saying so, without them).
# Nothing is installed from the network. MASKRT_SKIP_BUILD=1 reuses an extension already built;
# BUDGET_S (default 450) is the deadline every step is cut to.
set -u -o pipefail

cd "$(dirname "$0")/../.."
OUT="${OUT:-$PWD/out/gpu}"
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1
export MASKRT_CACHE_DIR="${MASKRT_CACHE_DIR:-$PWD/out/cache}"   # ONNX exports: stay in the tree
START=$SECONDS
DEADLINE=$((START + ${BUDGET_S:-450}))   # every step ends by then: the call stays under 8 minutes
LOG="$OUT/run.log"                       # one log: the device tool returns at most 8 files
: >"$LOG"
declare -a SUMMARY=()

step() {  # step NAME SECONDS COMMAND...: run with a time limit (cut to the deadline), log, record
  local name=$1 limit=$2; shift 2
  local begin=$SECONDS left=$((DEADLINE - SECONDS))
  [ "$left" -lt "$limit" ] && limit=$left
  if [ "$limit" -lt 10 ]; then
    SUMMARY+=("$(printf '%-14s %-16s' "$name" "SKIPPED (out of time)")")
    return 124
  fi
  echo
  echo "==== $name (limit ${limit}s) ====" | tee -a "$LOG"
  timeout --kill-after=10 "$limit" "$@" 2>&1 | tee -a "$LOG"
  local rc=${PIPESTATUS[0]}
  local status=ok
  [ "$rc" -eq 124 ] && status="TIMED OUT"
  [ "$rc" -ne 0 ] && [ "$rc" -ne 124 ] && status="FAILED (rc $rc)"
  SUMMARY+=("$(printf '%-14s %-16s %4ss' "$name" "$status" $((SECONDS - begin)))")
  return "$rc"
}

pick_python() {
  local candidate
  for candidate in "${PYTHON:-}" python3 /opt/torch/.venv/bin/python3 python; do
    [ -n "$candidate" ] || continue
    if "$candidate" -c "import torch" >/dev/null 2>&1; then echo "$candidate"; return 0; fi
  done
  return 1
}

# ---- 1. the machine ---------------------------------------------------------------------------
echo "==== machine ===="
nvidia-smi || echo "nvidia-smi failed"
PY=$(pick_python) || { echo "no python with torch found (set PYTHON=...)"; exit 2; }
echo "python: $PY ($("$PY" --version 2>&1))"
"$PY" - <<'EOF'
import importlib
import torch
print(f"torch {torch.__version__}, CUDA {torch.version.cuda}, cuda available: {torch.cuda.is_available()}")
if torch.cuda.is_available():
    p = torch.cuda.get_device_properties(0)
    print(f"GPU 0: {p.name}, sm_{p.major}{p.minor}, {p.multi_processor_count} SMs, {p.total_memory / 2**30:.0f} GiB")
for name in ("tensorrt", "onnx", "onnxruntime", "cv2", "pybind11"):
    try:
        module = importlib.import_module(name)
        print(f"import {name}: OK {getattr(module, '__version__', '')}")
    except Exception as err:  # noqa: BLE001 - report any import failure
        print(f"import {name}: FAILED ({type(err).__name__}: {err})")
EOF
HAVE_ONNX=0
"$PY" -c "import onnx, onnxruntime" >/dev/null 2>&1 && HAVE_ONNX=1
HAVE_TRT=0
"$PY" -c "from maskrt.backends.tensorrt.versions import import_tensorrt; import_tensorrt()" >/dev/null 2>&1 \
  && HAVE_TRT=1
ARCH=$("$PY" -c "import torch; p = torch.cuda.get_device_properties(0); print(f'{p.major}{p.minor}')" \
  2>/dev/null || echo 90)

# ---- 2. build the extension with CUDA -----------------------------------------------------------
BUILD_OK=0
export MASKRT_CUDA=on MASKRT_CUDA_ARCHS="$ARCH"
if [ "${MASKRT_SKIP_BUILD:-0}" = 1 ]; then   # re-runs on a warm machine, or dry runs elsewhere
  SUMMARY+=("build          SKIPPED (MASKRT_SKIP_BUILD=1)")
else
  step build 150 "$PY" -m pip install -e . --no-build-isolation --no-deps --no-cache-dir -q \
    || step build-inplace 120 "$PY" setup.py build_ext --inplace  # if pip cannot install editable
fi
step import 30 "$PY" -c "from maskrt import _C; print('maskrt._C has_cuda', _C.has_cuda(), 'devices', _C.cuda_device_count()); assert _C.has_cuda()" \
  && BUILD_OK=1

# ---- 3. CUDA tests ------------------------------------------------------------------------------
if [ "$BUILD_OK" = 1 ]; then
  step pytest-cuda 150 "$PY" -m pytest -m cuda -q -p no:cacheprovider -rs tests
else
  SUMMARY+=("pytest-cuda    SKIPPED (build failed)")
fi

# ---- 4. benchmarks ------------------------------------------------------------------------------
step bench 150 "$PY" benchmarks/gpu/bench_gpu.py --out "$OUT"

# ---- 5. accuracy of the GPU backends against the FP32 reference -----------------------------------
VAL="${MASKRT_VAL_DIR:-}"
[ -z "$VAL" ] && [ -d .gpudata/facemask/val ] && VAL=.gpudata/facemask/val
if [ "$HAVE_ONNX" = 1 ]; then
  DATA_ARGS=()
  if [ -n "$VAL" ]; then DATA_ARGS=(--data "$VAL"); else echo "check: no validation split here, using the packaged samples"; fi
  step check-torch 60 "$PY" -m maskrt check --backend torch --backend-option device=cuda --batch 128 \
    "${DATA_ARGS[@]}" --json "$OUT/check_torch.json"
  if [ "$HAVE_TRT" = 1 ]; then
    step check-trt 150 "$PY" -m maskrt check --backend tensorrt --batch 128 "${DATA_ARGS[@]}" \
      --json "$OUT/check_tensorrt.json"
  else
    SUMMARY+=("check-trt      SKIPPED (TensorRT 10 not importable)")
  fi
else
  SUMMARY+=("check          SKIPPED (onnx/onnxruntime missing: no FP32 reference)")
fi

# ---- summary ------------------------------------------------------------------------------------
echo
echo "==== summary ($((SECONDS - START)) s) ===="
printf '%s\n' "${SUMMARY[@]}"
sed -n '/^machine: {/,/^full results:/p' "$LOG"
for f in "$OUT"/check_*.json; do
  [ -f "$f" ] && "$PY" -c "import json,sys; r=json.load(open(sys.argv[1])); print(f\"{r['backend']}: agreement {100*r['label_agreement']:.2f}% of {r['images']}, logits rel err max {r['logits_rel_err_max']:.1e}, heat-map err max {r['heatmap_err_max']:.1e}, {'PASS' if r['passed'] else 'FAIL'}\")" "$f"
done
exit 0
