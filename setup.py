"""Build maskrt._C with CMake (see CMakeLists.txt); the rest of the metadata is in pyproject.toml.

Environment:
  MASKRT_CUDA        auto (default: build the CUDA kernels when nvcc works), on (fail without
                     nvcc) or off.
  MASKRT_CUDA_ARCHS  CUDA architectures, default "75;80;90".
  MASKRT_OPENMP      1 to thread the CPU kernel with OpenMP instead of std::thread (see
                     CMakeLists.txt for why std::thread is the default).
  MASKRT_BUILD_TYPE  CMake build type, default Release.
  CMAKE_BUILD_PARALLEL_LEVEL  parallel compile jobs (CMake's own variable).
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

from setuptools import Extension, setup
from setuptools.command.build_ext import build_ext

ROOT = Path(__file__).resolve().parent


class CMakeExtension(Extension):
    """An extension whose sources CMake compiles; setuptools only knows its name."""

    def __init__(self, name: str) -> None:
        super().__init__(name, sources=[])


class CMakeBuild(build_ext):
    def build_extension(self, ext: Extension) -> None:
        mode = os.environ.get("MASKRT_CUDA", "auto").strip().lower() or "auto"
        if mode not in ("auto", "on", "off"):
            sys.exit(f"maskrt: MASKRT_CUDA must be auto, on or off, got {mode!r}")
        # get_ext_fullpath puts the .so next to the sources for `pip install -e .` (inplace)
        # and into build/lib* for a regular install.
        out_dir = Path(self.get_ext_fullpath(ext.name)).resolve().parent
        build_dir = Path(self.build_temp).resolve() / "cmake"
        build_dir.mkdir(parents=True, exist_ok=True)
        args = [
            f"-DMASKRT_CUDA={mode}",
            f"-DMASKRT_OUTPUT_DIR={out_dir}",
            f"-DPython_EXECUTABLE={sys.executable}",
            f"-DCMAKE_BUILD_TYPE={os.environ.get('MASKRT_BUILD_TYPE', 'Release')}",
            f"-Dpybind11_DIR={_pybind11_cmake_dir()}",
        ]
        if os.environ.get("MASKRT_OPENMP"):
            args.append(f"-DMASKRT_OPENMP={'ON' if os.environ['MASKRT_OPENMP'] not in ('0', 'off', 'OFF') else 'OFF'}")
        if "MASKRT_CUDA_ARCHS" in os.environ:
            args.append(f"-DMASKRT_CUDA_ARCHS={os.environ['MASKRT_CUDA_ARCHS']}")
        if shutil.which("ninja") and not os.environ.get("CMAKE_GENERATOR") and not (build_dir / "CMakeCache.txt").exists():
            args.append("-GNinja")
        if mode == "off":
            # A cached CUDA compiler from an earlier configure must not switch CUDA back on.
            args.append("-UCMAKE_CUDA_COMPILER")
        subprocess.run(["cmake", "-S", str(ROOT), "-B", str(build_dir), *args], check=True)
        _report_cuda_choice(build_dir)
        jobs = os.environ.get("CMAKE_BUILD_PARALLEL_LEVEL", str(os.cpu_count() or 1))
        subprocess.run(["cmake", "--build", str(build_dir), "--parallel", jobs], check=True)


def _pybind11_cmake_dir() -> str:
    import pybind11  # a build requirement (pyproject.toml)

    return pybind11.get_cmake_dir()


def _report_cuda_choice(build_dir: Path) -> None:
    """Print the resolved CUDA choice from the CMake cache (one line, easy to find in pip -v logs)."""
    cache = (build_dir / "CMakeCache.txt").read_text(errors="replace")
    compiler = re.search(r"^CMAKE_CUDA_COMPILER:\w+=(.+)$", cache, re.M)
    archs = re.search(r"^MASKRT_CUDA_ARCHS:\w+=(.+)$", cache, re.M)
    nvcc = compiler.group(1).strip() if compiler and "NOTFOUND" not in compiler.group(1) else ""
    if nvcc and os.environ.get("MASKRT_CUDA", "auto").strip().lower() != "off":
        version = _nvcc_version(nvcc)
        print(f"maskrt: CUDA kernels ON (nvcc {version} at {nvcc}, archs {archs.group(1) if archs else '?'})",
              flush=True)
    else:
        print("maskrt: CUDA kernels OFF (MASKRT_CUDA=off or no nvcc found)", flush=True)


def _nvcc_version(nvcc: str) -> str:
    try:
        text = subprocess.run([nvcc, "--version"], capture_output=True, text=True, check=True).stdout
    except (OSError, subprocess.CalledProcessError):
        return "?"
    match = re.search(r"release (\d+\.\d+)", text)
    return match.group(1) if match else "?"


setup(ext_modules=[CMakeExtension("maskrt._C")], cmdclass={"build_ext": CMakeBuild})
