"""The CUDA kernels of csrc/ops/cuda, compiled for the CPU by tests/cuda_emulation/ (see its
cuda_runtime.h): their indexing, tables, vector paths and bit-exact arithmetic run here, on
machines without a GPU, and are compared with the C++ kernel. A GPU run (benchmarks/gpu/run.sh)
remains the proof for what only hardware shows (speed, the real memory model).
"""

from __future__ import annotations

import ctypes
import hashlib
import re
import shutil
import subprocess
import tempfile
from functools import lru_cache
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
SHIM = REPO / "tests" / "cuda_emulation"
SOURCES = [REPO / "csrc" / "ops" / "cuda" / "cam_overlay.cu", REPO / "csrc" / "ops" / "cuda" / "cam_overlay_boxes.cu"]
HEADERS = [REPO / "csrc" / "ops" / "cam_overlay.h", REPO / "csrc" / "ops" / "cuda" / "cam_cuda.cuh",
           REPO / "csrc" / "cuda_check.h", SHIM / "cuda_runtime.h", SHIM / "cuda_fp16.h", SHIM / "entry.cpp"]
DYNAMIC_SMEM = re.compile(r"extern __shared__ (\w+) (\w+)\[\];")
LAUNCH = re.compile(r"(\w+(?:<\w+>)?)<<<(.+?)>>>\((.*?)\);")


class EmulationUnavailable(RuntimeError):
    """No C++20 compiler here (the tests that need one skip, saying so)."""


def translate(source: str) -> str:
    """The two constructs that are not C++: dynamic shared memory and <<<...>>> launches."""
    source = DYNAMIC_SMEM.sub(r"\1* \2 = emu::dynamic_smem<\1>();", source)
    return LAUNCH.sub(r"emu::launch(\1, \2, \3);", source)


@lru_cache(maxsize=1)
def library() -> ctypes.CDLL:
    compiler = shutil.which("g++") or shutil.which("c++")
    if compiler is None:
        raise EmulationUnavailable("no C++ compiler (g++) on PATH")
    digest = hashlib.sha256(b"".join(p.read_bytes() for p in SOURCES + HEADERS)).hexdigest()[:16]
    out = Path(tempfile.gettempdir()) / f"maskrt-cuda-emulation-{digest}"
    lib = out / "libemu.so"
    if not lib.exists():
        out.mkdir(parents=True, exist_ok=True)
        units = []
        for src in SOURCES:
            unit = out / (src.stem + ".cpp")
            unit.write_text(translate(src.read_text()))
            units.append(str(unit))
        # Own namespace and hidden symbols: maskrt._C (loaded in the same process) defines the same
        # C++ names, and the dynamic linker would otherwise bind some calls to its copies.
        cmd = [compiler, "-std=c++20", "-O1", "-ffp-contract=off", "-fPIC", "-shared", "-pthread",
               "-Dmaskrt=maskrt_cuda_emulation", "-fvisibility=hidden", "-Wl,-Bsymbolic",
               f"-I{SHIM}", f"-I{REPO / 'csrc'}", "-include", "cuda_runtime.h", *units, str(SHIM / "entry.cpp"),
               "-o", str(lib) + ".tmp"]
        proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
        if proc.returncode != 0:
            raise RuntimeError(f"building the CUDA emulation failed:\n{proc.stderr[-4000:]}")
        Path(str(lib) + ".tmp").rename(lib)
    dll = ctypes.CDLL(str(lib))
    p, i64, i32, f32 = ctypes.c_void_p, ctypes.c_int64, ctypes.c_int, ctypes.c_float
    dll.emu_cam_overlay.argtypes = [p, i32, p, i64, p, i32, p, p, p, i64, i64, i64, f32, i32, p, i64]
    dll.emu_cam_overlay.restype = ctypes.c_char_p
    dll.emu_cam_overlay_boxes.argtypes = [p, i32, p, i64, p, p, p, i64, p, p, i64, i64, i64, f32, i32]
    dll.emu_cam_overlay_boxes.restype = ctypes.c_char_p
    dll.emu_launches.restype = ctypes.c_int
    dll.emu_set_max_smem_optin.argtypes = [i32]
    return dll


def _ptr(a: np.ndarray | None) -> int | None:
    return None if a is None else a.ctypes.data


def guarded(shape: tuple[int, ...], dtype, offset_bytes: int = 0, guard: int = 64) -> tuple[np.ndarray, np.ndarray]:
    """An array inside a buffer filled with a canary, starting ``offset_bytes`` past a 64-byte
    boundary: (buffer, view). The kernel must write the view and nothing around it."""
    itemsize = np.dtype(dtype).itemsize
    nbytes = int(np.prod(shape)) * itemsize
    raw = np.full(nbytes + 2 * guard + offset_bytes + 64, 0xA5, dtype=np.uint8)
    start = (-raw.ctypes.data) % 64 + guard + offset_bytes
    view = raw[start:start + nbytes].view(dtype).reshape(shape)
    return raw, view


def untouched_outside(raw: np.ndarray, view: np.ndarray) -> bool:
    start = view.ctypes.data - raw.ctypes.data
    outside = np.concatenate([raw[:start], raw[start + view.nbytes:]])
    return bool((outside == 0xA5).all())


def cam_overlay(features, weights, classes, images, *, alpha=0.5, rgb=False, heatmaps=False,
                image_offset=0, workspace_bytes=None):
    """The emulated CUDA cam_overlay: (overlays, heat or None, launches, guards intact)."""
    dll = library()
    n, h, w = images.shape[:3]
    _, src = guarded(images.shape, np.uint8, image_offset)
    src[...] = images
    out_raw, out = guarded(images.shape, np.uint8, image_offset)
    heat_raw, heat = guarded((n, h, w), np.float32) if heatmaps else (None, None)
    need = _workspace_bytes(n, h, w)
    ws = np.full((workspace_bytes if workspace_bytes is not None else need) + 16, 0xCD, dtype=np.uint8)
    ws_view = ws[(-ws.ctypes.data) % 16:]
    before = dll.emu_launches()
    error = dll.emu_cam_overlay(
        _ptr(features), int(features.dtype == np.float16), _ptr(weights), weights.shape[0], _ptr(classes),
        int(classes.dtype == np.int32), _ptr(src), _ptr(out), _ptr(heat), n, h, w, alpha, int(rgb),
        _ptr(ws_view), workspace_bytes if workspace_bytes is not None else need)
    if error:
        raise ValueError(error.decode())
    intact = untouched_outside(out_raw, out) and (heat is None or untouched_outside(heat_raw, heat))
    return out.copy(), (None if heat is None else heat.copy()), dll.emu_launches() - before, intact


def cam_overlay_boxes(features, weights, classes, frame_index, boxes, frames, *, alpha=0.5, rgb=False):
    dll = library()
    n, h, w = frames.shape[:3]
    out_raw, out = guarded(frames.shape, np.uint8)
    error = dll.emu_cam_overlay_boxes(
        _ptr(features), int(features.dtype == np.float16), _ptr(weights), weights.shape[0], _ptr(classes),
        _ptr(frame_index), _ptr(boxes), len(classes), _ptr(frames), _ptr(out), n, h, w, alpha, int(rgb))
    if error:
        raise ValueError(error.decode())
    return out.copy(), untouched_outside(out_raw, out)


def _workspace_bytes(n: int, h: int, w: int) -> int:
    from maskrt import _C

    return _C.cam_overlay_workspace_bytes(n, h, w)
