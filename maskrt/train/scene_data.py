"""Fine-tuning data from annotated scene photos: the face crops the classifier meets in scenes.

Two sources, both cut from one VOC scene split (``images/`` + ``annotations/``):

* ``gt``: every annotated ``with_mask`` / ``without_mask`` box widened 1.2x about its centre
  and clipped (:func:`maskrt.train.scene_crops.scene_crops`; difficult boxes left out);
* ``det``: the faces the shipped detector finds (``maskrt.detect.make_detector("default")``),
  cut as the face stage cuts them (:func:`maskrt.detect.regions.face_regions`, widened 1.2x), each
  labelled with the class of the annotated box it overlaps most, when that IoU is >= 0.5; faces
  that match no box, or whose box is ``mask_worn_incorrectly``/difficult, are left out.

:func:`write_tree` writes them as an ImageFolder tree (``train/with_mask``, ``train/without_mask``,
lossless PNG at the crop's own size, so that ``maskrt train`` resizes them exactly like scoring
does) next to symbolic links to a face-crop ImageFolder split, and links ``val`` to a given val
folder, so that ``maskrt train`` reads one tree::

    python -m maskrt.train.scene_data ../shared/data/scenes/train runs/scene_ft \\
        --faces ../shared/data/facemask/train --val ../shared/data/facemask/val

Only ever pass a *training* scene split: the val split is for measuring.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import sys
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from maskrt.labels import CLASSES

#: how far crops are widened about the box centre: the face stage's default (detect.PRESETS)
WIDEN = 1.2
#: a detected face takes the label of the annotated box it overlaps at least this much (VOC's 0.5)
MATCH_IOU = 0.5


@dataclass
class Crop:
    """One training crop: uint8 BGR pixels, class index, the photo it came from, its source."""

    image: np.ndarray
    label: int
    photo: str
    source: str  # "gt", "det", "clip" or "incorrect"


def ground_truth_crops(split: str | os.PathLike[str], widen: float = WIDEN) -> list[Crop]:
    """The annotated faces of ``split`` as widened crops (see the module docstring)."""
    from maskrt.train.scene_crops import scene_crops

    crops = scene_crops(split, widen=widen)
    return [Crop(im, int(label), Path(photo).stem, "gt")
            for im, label, photo in zip(crops.crops, crops.labels, crops.sources)]


def detector_crops(split: str | os.PathLike[str], widen: float = WIDEN,
                   match_iou: float = MATCH_IOU) -> tuple[list[Crop], Counter]:
    """The faces the default detector finds in ``split``, labelled by the annotated box they
    match; also a count of what was left out and why."""
    from maskrt.detect import make_detector, preset_settings
    from maskrt.image import decode_image
    from maskrt.train.scenes import index_scenes

    settings = preset_settings("default", widen=widen)
    crops: list[Crop] = []
    left_out: Counter = Counter()
    with make_detector("default") as detector:
        for scene in index_scenes(split):
            image = decode_image(scene.image)
            faces = detector.detect([image])[0]
            for crop, label in _labelled_regions(faces, image.shape, scene.truth, settings,
                                                 match_iou, left_out):
                crops.append(Crop(crop_of(image, crop), label, scene.image.stem, "det"))
    return crops, left_out


def _labelled_regions(faces, shape, truth, settings, match_iou,
                      left_out: Counter) -> Iterator[tuple[tuple[int, int, int, int], int]]:
    """(crop box, class index) of each detected face that matches an annotated face."""
    from maskrt.detect.regions import face_regions
    from maskrt.train.voc_metric import iou_matrix

    regions, _ = face_regions(faces, shape, widen=settings["widen"],
                              min_face=settings["min_face"], max_faces=settings["max_faces"])
    if not regions:
        return
    # Matching uses the clipped face box (what the scene metric matches), not the widened crop.
    iou = iou_matrix(np.array([r.box for r in regions], np.float64), truth.boxes)
    for region, row in zip(regions, iou):
        best = int(np.argmax(row)) if row.size else -1
        if best < 0 or row[best] < match_iou:
            left_out["unmatched"] += 1
        elif truth.difficult[best] or truth.labels[best] not in CLASSES:
            left_out["difficult"] += 1
        else:
            yield region.crop_box or region.box, CLASSES.index(truth.labels[best])


#: the annotation name of faces whose mask is below the nose or chin
INCORRECT = "mask_worn_incorrectly"
#: the least visibility and side (px) of a clip's mask_worn_incorrectly face taken with
#: ``incorrect``: what makes a with/without_mask box "considered" (make_clips.py)
CLIP_VISIBLE, CLIP_MIN_SIDE = 0.5, 8.0


def incorrect_crops(split: str | os.PathLike[str], widen: float = WIDEN) -> list[Crop]:
    """The ``mask_worn_incorrectly`` faces of a scene split as widened crops labelled
    ``without_mask`` (source "incorrect")."""
    from maskrt.image import decode_image
    from maskrt.train.scene_crops import widened_box
    from maskrt.train.scenes import index_scenes

    crops = []
    for scene in index_scenes(split):
        boxes = [box for box, name in zip(scene.truth.boxes, scene.truth.labels) if name == INCORRECT]
        if not boxes:
            continue
        image = decode_image(scene.image)
        h, w = image.shape[:2]
        for box in boxes:
            x0, y0, x1, y1 = widened_box(np.asarray(box, np.float64), widen, w, h)
            crops.append(Crop(image[y0:y1, x0:x1].copy(), CLASSES.index("without_mask"),
                              scene.image.stem, "incorrect"))
    return crops


def _clip_label(considered: bool, cls: int, box: np.ndarray, visibility: float,
                incorrect: bool) -> tuple[int, str] | None:
    """(class index, source) a clip's gt box is taken with, or None."""
    from maskrt.train.clips import GT_CLASSES

    name = GT_CLASSES.get(int(cls))
    if considered and name in CLASSES:
        return CLASSES.index(name), "clip"
    if incorrect and name == INCORRECT and visibility >= CLIP_VISIBLE \
            and min(box[2] - box[0], box[3] - box[1]) >= CLIP_MIN_SIDE:
        return CLASSES.index("without_mask"), "incorrect"
    return None


def clip_crops(clips: str | os.PathLike[str], every: int = 6, widen: float = WIDEN,
               incorrect: bool = False) -> list[Crop]:
    """The considered ground-truth faces of every ``every``-th frame of a clip set (see the
    module docstring; ``incorrect``: its mask_worn_incorrectly faces too, as without_mask);
    ``photo`` names the clip and frame."""
    from maskrt.train.clip_frames import sampled_frames
    from maskrt.train.clips import load_clip_set
    from maskrt.train.scene_crops import widened_box

    if every < 1:
        raise ValueError(f"clip crops: expected every >= 1, got {every}")
    crops: list[Crop] = []
    for clip in load_clip_set(clips):
        for index, frame, truth in sampled_frames(clip, every):
            h, w = frame.shape[:2]
            for box, considered, cls, visible in zip(truth.boxes, truth.consider,
                                                     truth.classes, truth.visibility):
                taken = _clip_label(considered, cls, box, visible, incorrect)
                if taken is not None:
                    x0, y0, x1, y1 = widened_box(box, widen, w, h)
                    crops.append(Crop(frame[y0:y1, x0:x1].copy(), taken[0],
                                      f"{clip.name}_f{index:04d}", taken[1]))
    return crops


def crop_of(image: np.ndarray, box: tuple[int, int, int, int]) -> np.ndarray:
    x0, y0, x1, y1 = box
    return image[y0:y1, x0:x1].copy()


def write_tree(out: Path, crops: list[Crop], faces: Path | None, val: Path | None,
               faces_per_class: int | None = None, seed: int = 0) -> dict[str, dict[str, int]]:
    """Write ``out/train`` (crops as PNG + links to ``faces``' images) and link ``out/val``.

    ``faces_per_class`` keeps a random subset of that many face images per class (all when None).
    Returns the counts per source and class.
    """
    import cv2

    train = out / "train"
    for cls in CLASSES:
        (train / cls).mkdir(parents=True, exist_ok=False)
    counts: dict[str, Counter] = {"gt": Counter(), "det": Counter(), "clip": Counter(),
                                  "incorrect": Counter(), "faces": Counter()}
    seen: Counter = Counter()
    for crop in crops:
        cls = CLASSES[crop.label]
        seen[(crop.source, crop.photo)] += 1
        name = f"scene_{crop.source}_{crop.photo}_{seen[(crop.source, crop.photo)]:03d}.png"
        if not cv2.imwrite(str(train / cls / name), crop.image):
            raise OSError(f"could not write {train / cls / name}")
        counts[crop.source][cls] += 1
    if faces is not None:
        counts["faces"] = _link_faces(faces, train, faces_per_class, seed)
    if val is not None:
        (out / "val").symlink_to(val.resolve(), target_is_directory=True)
    return {k: {cls: v[cls] for cls in CLASSES} for k, v in counts.items()}


def _link_faces(faces: Path, train: Path, per_class: int | None, seed: int) -> Counter:
    """Symbolic links to the face-crop images (a seeded subset of ``per_class`` per class)."""
    from maskrt.train.data import IMAGE_EXTENSIONS

    counts: Counter = Counter()
    rng = random.Random(seed)
    for cls in CLASSES:
        paths = sorted(p for p in (faces / cls).iterdir() if p.suffix.lower() in IMAGE_EXTENSIONS)
        if per_class is not None and per_class < len(paths):
            paths = sorted(rng.sample(paths, per_class))
        for path in paths:
            (train / cls / f"faces_{path.name}").symlink_to(path.resolve())
        counts[cls] = len(paths)
    return counts


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m maskrt.train.scene_data",
                                     description="face crops of a VOC scene split as an ImageFolder tree")
    parser.add_argument("scenes", type=Path, help="a TRAINING scene split (images/, annotations/)")
    parser.add_argument("out", type=Path, help="new folder for the tree (train/, val/)")
    parser.add_argument("--faces", type=Path, default=None,
                        help="face-crop ImageFolder split to link into train/ (e.g. facemask/train)")
    parser.add_argument("--faces-per-class", type=int, default=None,
                        help="link a seeded random subset of this many face images per class")
    parser.add_argument("--val", type=Path, default=None, help="folder to link as val/")
    parser.add_argument("--sources", default="gt,det", help="gt, det or both (default %(default)s)")
    parser.add_argument("--clips", type=Path, default=None,
                        help="a clip set made from the SAME training split (make_clips.py): "
                             "adds its ground-truth faces as the clip source")
    parser.add_argument("--clip-every", type=int, default=6,
                        help="take clip faces from every N-th frame (default %(default)s)")
    parser.add_argument("--incorrect-as", choices=("skip", "without_mask"), default="skip",
                        help="mask_worn_incorrectly faces: left out (default) or trained as "
                             "without_mask (the split's and, with --clips, the clips')")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    if args.out.exists():
        print(f"error: {args.out} exists; choose a new folder", file=sys.stderr)
        return 2
    sources = {s.strip() for s in args.sources.split(",") if s.strip()}
    crops: list[Crop] = ground_truth_crops(args.scenes) if "gt" in sources else []
    left_out: Counter = Counter()
    if "det" in sources:
        det, left_out = detector_crops(args.scenes)
        crops += det
    incorrect = args.incorrect_as == "without_mask"
    if incorrect:
        crops += incorrect_crops(args.scenes)
    if args.clips is not None:
        crops += clip_crops(args.clips, args.clip_every, incorrect=incorrect)
    counts = write_tree(args.out, crops, args.faces, args.val, args.faces_per_class, args.seed)
    report = {"scenes": str(args.scenes.resolve()), "counts": counts,
              "detector_left_out": dict(left_out)}
    (args.out / "counts.json").write_text(json.dumps(report, indent=2) + "\n")
    print(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
