"""Choose the face presets on the scene ``val`` split: mAP (IoU 0.5 and 0.3) and without_mask
recall for a grid of upscale x widen x score threshold, in one run.

Detection runs once per upscale at the lowest threshold (NMS in score order means a higher
threshold only filters: boxes under it never suppress boxes over it), classification once per
(upscale, widen); thresholds then only filter. Prints a table sorted by mAP@0.5.

    python benchmarks/tune_faces.py [--data ../shared/data/scenes/val]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path


REPO = Path(__file__).resolve().parents[1]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, default=REPO.parent / "shared/data/scenes/val")
    parser.add_argument("--upscale", type=float, nargs="+", default=[1.0, 1.5, 2.0, 2.5])
    parser.add_argument("--widen", type=float, nargs="+", default=[1.0, 1.1, 1.2, 1.3])
    parser.add_argument("--threshold", type=float, nargs="+", default=[0.1, 0.2, 0.3, 0.4, 0.5])
    parser.add_argument("--min-face", type=float, nargs="+", default=[4.0])
    args = parser.parse_args()
    sys.path.insert(0, str(REPO))
    from maskrt.detect.regions import face_regions
    from maskrt.detect.yunet import YuNetDetector
    from maskrt.engine import Engine
    from maskrt.image import decode_image
    from maskrt.train.scenes import index_scenes
    from maskrt.train.voc_metric import Detections, evaluate

    scenes = index_scenes(args.data)
    images = [decode_image(s.image) for s in scenes]
    truth = [s.truth for s in scenes]
    engine = Engine()
    rows = []
    for upscale in args.upscale:
        start = time.perf_counter()
        found = YuNetDetector(upscale=upscale, score_threshold=min(args.threshold)).detect(images)
        detect_s = (time.perf_counter() - start) / len(images)
        for widen, min_face in [(w, m) for w in args.widen for m in args.min_face]:
            regions = [face_regions(f, im.shape, widen=widen, min_face=min_face, max_faces=500)[0]
                       for f, im in zip(found, images)]
            crops = [r.crop(im) for im, rs in zip(images, regions) for r in rs]
            results = iter(engine.classify(crops) if crops else [])
            decided = [[next(results) for _ in rs] for rs in regions]
            for threshold in args.threshold:
                dets = []
                for rs, ds in zip(regions, decided):
                    keep = [(r, d) for r, d in zip(rs, ds) if r.score >= threshold]
                    dets.append(Detections.make(
                        [list(r.box) for r, _ in keep], [d.label for _, d in keep],
                        [r.score * float(d.probabilities[d.class_index]) for r, d in keep],
                        [r.score for r, _ in keep]))
                s50, s30 = evaluate(dets, truth, 0.5), evaluate(dets, truth, 0.3)
                faces = sum(len(d.labels) for d in dets) / len(dets)
                rows.append((s50.map, s30.map, s50.recall["without_mask"],
                             s50.recall["with_mask"], upscale, widen, threshold, faces, detect_s,
                             min_face))
    print(f"{len(images)} images of {args.data}; detection time is per image at the lowest "
          "threshold; faces = classified faces per image (each costs one classifier pass)")
    print(f"{'map50':>6} {'map30':>6} {'rec50 no':>8} {'rec50 mask':>10} {'upscale':>7} "
          f"{'widen':>5} {'thr':>4} {'faces':>6} {'detect s':>8} {'min_face':>8}")
    for row in sorted(rows, key=lambda r: -r[0]):
        print(f"{row[0]:6.3f} {row[1]:6.3f} {row[2]:8.3f} {row[3]:10.3f} {row[4]:7.2f} "
              f"{row[5]:5.2f} {row[6]:4.2f} {row[7]:6.2f} {row[8]:8.3f} {row[9]:8.0f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
