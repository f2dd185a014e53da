"""Two cam_overlay calls per frame size (224x224 and 1080x1920, batch 256, FP16 features), for
Nsight Compute to profile: run.sh's ``ncu`` step reads each launch's duration, throughput and
occupancy of the two kernels (cam_rows_kernel, blend_rows_kernel), which says where the
kernel-only time of bench_gpu.py goes.

    ncu --clock-control none -k regex:"cam_rows|blend_rows" python benchmarks/gpu/ncu_cam.py
"""

from __future__ import annotations

import torch

from maskrt.cam import cam_overlay

SIZES = ((224, 224), (1080, 1920))
BATCH = 256


def main() -> None:
    gen = torch.Generator(device="cuda").manual_seed(0)
    features = torch.rand((BATCH, 512, 7, 7), generator=gen, device="cuda").half()
    weights = torch.randn((2, 512), generator=gen, device="cuda")
    classes = torch.randint(0, 2, (BATCH,), generator=gen, device="cuda")
    for h, w in SIZES:
        images = torch.randint(0, 256, (BATCH, h, w, 3), generator=gen, device="cuda",
                               dtype=torch.uint8)
        for _ in range(2):
            cam_overlay(features, weights, classes, images, check_classes=False)
        torch.cuda.synchronize()
        print(f"ncu_cam: {BATCH} x {h}x{w} done", flush=True)


if __name__ == "__main__":
    main()
