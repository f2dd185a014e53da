#!/usr/bin/env bash
# Set up maskrt from nothing in ./.venv: the package with its compiled extension (maskrt._C).
#
#   bash scripts/setup.sh           the base install (what the demo needs): NumPy, OpenCV,
#                                   ONNX Runtime; no PyTorch (the shipped model is an ONNX graph)
#   bash scripts/setup.sh --test    everything: PyTorch, training, the test dependencies, the
#                                   system tools the streaming tests serve real streams with and
#                                   the headless Chromium the live view's page is tested in
#
# Idempotent: a second run only rebuilds what changed. A --test .venv stays complete when the
# base setup runs in it later (nothing is uninstalled).
#
# Environment: PYTHON (default python3), MASKRT_CUDA=auto|on|off (build the CUDA kernel;
# default auto), MASKRT_TORCH (pip spec for PyTorch with --test; default
# "torch==2.14.1 torchvision==0.29.1").
set -euo pipefail
cd "$(dirname "$0")/.."

with_tests=0
[[ "${1:-}" == "--test" ]] && with_tests=1
python=${PYTHON:-python3}
torch_spec=${MASKRT_TORCH:-"torch==2.14.1 torchvision==0.29.1"}

step() { printf '\n== %s\n' "$*"; }

# A full --test .venv is about 7 GiB (PyTorch, Ray, Triton's server); pip's own failure when the
# disk fills ("[Errno 28] No space left on device") comes minutes in and names no figure.
# Checked only when the big part is still to come: a new .venv, or PyTorch for --test.
need_gib=0
[[ ! -x .venv/bin/python ]] && need_gib=2
[[ $with_tests == 1 ]] && ! .venv/bin/python -c "import torch" 2>/dev/null && need_gib=9
if (( need_gib > 0 )); then
  free_gib=$(df -Pk . | awk 'NR==2 {printf "%d", $4 / 1048576}')
  if (( free_gib < need_gib )); then
    echo "setup: .venv needs about ${need_gib} GiB free in $(pwd), it has ${free_gib} GiB" >&2
    exit 1
  fi
fi

if [[ ! -x .venv/bin/python ]]; then
  step "creating .venv with $($python --version)"
  "$python" -m venv .venv
fi
pip=(.venv/bin/python -m pip --disable-pip-version-check)

# PyTorch first and from MASKRT_TORCH, so the [test] extra's torch requirement is already met by
# the build chosen here (CPU/CUDA wheel) instead of whatever the index offers.
if [[ $with_tests == 1 ]] && ! .venv/bin/python -c "import torch, torchvision" 2>/dev/null; then
  step "installing PyTorch ($torch_spec)"
  # shellcheck disable=SC2086  # the spec is a list of requirements
  "${pip[@]}" install -q $torch_spec
fi

extras=""
[[ $with_tests == 1 ]] && extras="[test]"
step "installing build tools and maskrt${extras} (editable; compiles maskrt._C, MASKRT_CUDA=${MASKRT_CUDA:-auto})"
"${pip[@]}" install -q "setuptools>=68" wheel "pybind11>=2.12" "cmake>=3.18" ninja
"${pip[@]}" install -q --no-build-isolation -e ".${extras}"

if [[ $with_tests == 1 ]]; then
  step "installing pytorch-grad-cam (test oracle; --no-deps keeps opencv headless)"
  "${pip[@]}" install -q --no-deps "grad-cam>=1.5,<2"
  step "installing nvidia-pytriton 0.7.0 (its tritonserver binary serves the Triton tests; --no-deps: it pins numpy<2)"
  "${pip[@]}" install -q --no-deps "nvidia-pytriton==0.7.0"
  step "installing FFmpeg, the GStreamer RTSP server, mosquitto (real servers for the streaming tests) and chromium (the live view's browser test)"
  bash scripts/install_stream_tools.sh
fi

.venv/bin/python - <<'PY'
import maskrt._C as C
print(f"maskrt._C ready: CUDA kernels compiled in: {C.has_cuda()}, CUDA devices: {C.cuda_device_count()}")
PY
