"""Registers, spills and instructions per pixel of the CUDA cam_overlay kernels, without a GPU.

    python benchmarks/gpu/sass_report.py [--archs 75,80,90] [--out benchmarks/gpu/SASS.md]

Compiles csrc/ops/cuda/cam_overlay.cu to one cubin per architecture (``nvcc -cubin -O3
-Xptxas -v``), reads registers and spill bytes per kernel from ptxas, and counts the machine
instructions of the pixel kernel's main loop in ``cuobjdump -sass`` (the instructions between the
loop's head and its backward branch), divided by the pixels one iteration handles. A change that
makes the inner loop longer or makes a kernel spill shows here, on any machine with nvcc.

Needs nvcc (CUDACXX, PATH or /usr/local/cuda/bin) and cuobjdump with nvdisasm (beside nvcc, on
PATH, or from the wheels: ``pip install nvidia-cuda-cuobjdump nvidia-cuda-nvdisasm``, whose
``nvidia/cu13/bin`` this script also looks in).
"""

from __future__ import annotations

import argparse
import datetime
import os
import re
import shutil
import subprocess
import sys
import sysconfig
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
SOURCE = ROOT / "csrc" / "ops" / "cuda" / "cam_overlay.cu"
KERNEL_NAMES = [(re.compile(r"blend_rows_kernelILi(\d+)E"), "blend_rows_kernel<{}>"),
                (re.compile(r"cam_rows_kernelI(f|6__half)E"), "cam_rows_kernel<{}>")]
INSTRUCTION = re.compile(r"^\s+/\*([0-9a-f]{4,})\*/\s+(.*?);")
BRANCH = re.compile(r"BRA\s+(?:`?\(?)?(0x[0-9a-f]+)")


def find_tool(name: str) -> str | None:
    """CUDACXX's folder, PATH, /usr/local/cuda/bin, then the pip wheels' nvidia/cu13/bin."""
    folders = []
    if os.environ.get("CUDACXX"):
        folders.append(str(Path(os.environ["CUDACXX"]).parent))
    found = shutil.which(name)
    if found:
        return found
    folders.append("/usr/local/cuda/bin")
    folders.append(str(Path(sysconfig.get_paths()["purelib"]) / "nvidia" / "cu13" / "bin"))
    for folder in folders:
        candidate = Path(folder) / name
        if candidate.is_file() and os.access(candidate, os.X_OK):
            return str(candidate)
    return None


def pretty(mangled: str) -> str:
    for pattern, template in KERNEL_NAMES:
        match = pattern.search(mangled)
        if match:
            arg = {"f": "float", "6__half": "half"}.get(match.group(1), match.group(1))
            return template.format(arg)
    return mangled


def compile_cubin(nvcc: str, arch: str, out: Path) -> dict[str, dict[str, int]]:
    """Builds the cubin; returns {kernel: {registers, spill_stores, spill_loads}} from ptxas."""
    cmd = [nvcc, "-std=c++17", "-O3", f"-arch=sm_{arch}", "-cubin", "-Xptxas", "-v",
           f"-I{ROOT / 'csrc'}", "-o", str(out), str(SOURCE)]
    proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        raise RuntimeError(f"nvcc failed for sm_{arch}:\n{proc.stderr[-2000:]}")
    stats: dict[str, dict[str, int]] = {}
    current = None
    for line in proc.stderr.splitlines():
        entry = re.search(r"Compiling entry function '(\S+)'", line)
        if entry:
            current = pretty(entry.group(1))
            stats[current] = {}
        elif current and (spill := re.search(r"(\d+) bytes spill stores, (\d+) bytes spill loads", line)):
            stats[current].update(spill_stores=int(spill.group(1)), spill_loads=int(spill.group(2)))
        elif current and (regs := re.search(r"Used (\d+) registers", line)):
            stats[current]["registers"] = int(regs.group(1))
    return stats


def loop_instructions(sass: str) -> dict[str, int]:
    """{kernel: instructions in its longest loop} from cuobjdump -sass text."""
    result: dict[str, int] = {}
    for block in re.split(r"\n\s*Function : ", sass)[1:]:
        name = pretty(block.split("\n", 1)[0].strip())
        offsets: list[int] = []
        longest = 0
        for line in block.splitlines():
            match = INSTRUCTION.match(line)
            if not match:
                continue
            offset = int(match.group(1), 16)
            offsets.append(offset)
            branch = BRANCH.search(match.group(2))
            if branch and int(branch.group(1), 16) < offset:  # a backward branch closes a loop
                head = int(branch.group(1), 16)
                longest = max(longest, sum(1 for o in offsets if head <= o <= offset))
        result[name] = longest
    return result


def report(archs: list[str]) -> str:
    nvcc, cuobjdump = find_tool("nvcc"), find_tool("cuobjdump")
    if nvcc is None:
        raise SystemExit("nvcc not found (CUDACXX, PATH, /usr/local/cuda/bin)")
    env = dict(os.environ)
    if cuobjdump:  # cuobjdump runs nvdisasm, found on PATH or beside it
        env["PATH"] = f"{Path(cuobjdump).parent}{os.pathsep}{env.get('PATH', '')}"
    version = subprocess.run([nvcc, "--version"], capture_output=True, text=True).stdout.strip().splitlines()[-1]
    lines = [f"# SASS of the CUDA cam_overlay kernels ({datetime.date.today()})", "",
             f"`python benchmarks/gpu/sass_report.py`; nvcc: {version}. Loop = instructions of the kernel's "
             "longest loop; per pixel = loop / pixels per iteration (blend_rows_kernel<k> handles k pixels "
             "per iteration; k = 16 where the width is a multiple of 16 and the buffers 16-byte aligned).",
             "", "| arch | kernel | registers | spill stores / loads (bytes) | loop instructions | per pixel |",
             "|---|---|---|---|---|---|"]
    with tempfile.TemporaryDirectory() as tmp:
        for arch in archs:
            cubin = Path(tmp) / f"cam_sm{arch}.cubin"
            stats = compile_cubin(nvcc, arch, cubin)
            loops: dict[str, int] = {}
            if cuobjdump:
                sass = subprocess.run([cuobjdump, "-sass", str(cubin)], capture_output=True, text=True, env=env)
                loops = loop_instructions(sass.stdout) if sass.returncode == 0 else {}
            for kernel, st in sorted(stats.items()):
                loop = loops.get(kernel)
                pix = re.search(r"blend_rows_kernel<(\d+)>", kernel)
                per_pixel = f"{loop / int(pix.group(1)):.1f}" if loop and pix else "-"
                lines.append(f"| sm_{arch} | {kernel} | {st.get('registers', '?')} | "
                             f"{st.get('spill_stores', '?')} / {st.get('spill_loads', '?')} | "
                             f"{loop if loop else '-'} | {per_pixel} |")
    if not cuobjdump:
        lines += ["", "(cuobjdump not found: no instruction counts; pip install nvidia-cuda-cuobjdump "
                  "nvidia-cuda-nvdisasm)"]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--archs", default="75,80,90", help="comma-separated SM versions (default 75,80,90)")
    parser.add_argument("--out", type=Path, help="also write the Markdown note here")
    args = parser.parse_args(argv)
    text = report([a.strip() for a in args.archs.split(",") if a.strip()])
    print(text)
    if args.out:
        args.out.write_text(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
