#!/usr/bin/env bash
# Prepares what benchmarks/gpu/run.sh needs on the GPU machine, in the repository root, to carry
# with the device tool (carry list: ".gpudata", ".whl"), within the tool's 64 MiB for the whole
# tree (the tracked files are about 57 MiB of it: the models and weights):
#   .gpudata/scenes/val        the scene val split (faces in scenes, the clips, the face tests)
#   .gpudata/tools/            make_clips.py (the tracked-clip steps)
#   .gpudata/facemask/val      FACES crops of each class from the face-mask val split (check)
#   .whl/site/                 lapx's lap (the tracker's assignment) and onnx2torch (the torch
#                              face detector), unpacked for the image's Python 3.12: neither is in
#                              the image, and lapx's 15 MB wheel needs only lap/*.py and _lapjv
#
#   bash benchmarks/gpu/prepare.sh [FACES]     # FACES: crops per class, default 20
#
# Needs ../shared beside the checkout and pip with access to the package index. Prints the size
# that would travel (4-KiB blocks, as the tool appears to count: 65,576 KiB was refused,
# 65,404 KiB went, 2026-12-04) and fails when it is over 64 MiB.
set -euo pipefail
cd "$(dirname "$0")/../.."
FACES=${1:-20}
SHARED=../shared
[ -d "$SHARED/data/scenes/val" ] || { echo "prepare.sh: expected $SHARED/data/scenes/val beside the checkout" >&2; exit 2; }
mkdir -p .git/info
for path in /.gpudata/ /.whl/; do
  grep -qxF "$path" .git/info/exclude 2>/dev/null || echo "$path" >> .git/info/exclude
done

rm -rf .gpudata .whl
mkdir -p .gpudata/scenes .gpudata/tools .gpudata/facemask/val .whl/site
cp -r "$SHARED/data/scenes/val" .gpudata/scenes/
cp "$SHARED/tools/make_clips.py" .gpudata/tools/
for class in with_mask without_mask; do
  mkdir -p ".gpudata/facemask/val/$class"
  find "$SHARED/data/facemask/val/$class" -maxdepth 1 -type f | sort | head -n "$FACES" \
    | xargs -r cp -t ".gpudata/facemask/val/$class/"
done

wheels=$(mktemp -d)
trap 'rm -rf "$wheels"' EXIT
python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
  --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
  -d "$wheels" "lapx>=0.5" onnx2torch
python3 - "$wheels" .whl/site <<'PY'
import sys, zipfile, pathlib
wheels, site = pathlib.Path(sys.argv[1]), pathlib.Path(sys.argv[2])
for wheel in sorted(wheels.glob("*.whl")):
    with zipfile.ZipFile(wheel) as archive:
        for name in archive.namelist():
            if ".dist-info/" in name or name.endswith(".pyi"):
                continue
            if name.startswith("lap/") and name.endswith(".so") and "/_lapjv." not in name:
                continue  # lap imports its other solvers lazily; maskrt calls lap.lapjv only
            archive.extract(name, site)
    print(f"unpacked {wheel.name}")
PY

kib=$(( $(git ls-files -z | xargs -0 du -c 2>/dev/null | tail -n 1 | cut -f1) \
        + $(du -s .gpudata | cut -f1) + $(du -s .whl | cut -f1) ))
echo "would travel: $kib KiB of 65536 (tracked files, .gpudata, .whl)"
if [ "$kib" -ge 65536 ]; then
  echo "prepare.sh: over the device tool's 64 MiB: run again with fewer face crops" >&2
  exit 1
fi
