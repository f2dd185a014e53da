"""Reading ImageFolder trees (``with_mask/`` and ``without_mask/``) the way scoring reads images.

Every image is decoded with :func:`maskrt.image.decode_image` (OpenCV, BGR) and squashed to
the network input with :func:`maskrt.image.resize_to_input`, exactly as ``maskrt score`` and
:class:`maskrt.Engine` do, so training, validation and deployment see the same pixels.

Bad trees fail with a :class:`DatasetError` that says what was expected (missing or empty class
folders, unexpected folders); unreadable image files are skipped with a warning and counted.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from maskrt.image import ImageError, decode_image, resize_to_input
from maskrt.labels import CLASSES, INPUT_SIZE

#: File name endings treated as images (case-insensitive); other files are ignored and counted.
IMAGE_EXTENSIONS = frozenset({".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff", ".jp2",
                              ".pgm", ".ppm", ".pbm", ".pnm"})


class DatasetError(ValueError):
    """A data folder is not the ImageFolder tree maskrt expects; the message says why."""


class SkippedImageWarning(UserWarning):
    """An image file of a data folder could not be decoded and was left out."""


@dataclass
class ImageFolderIndex:
    """The image files of one ImageFolder tree: ``paths[i]`` has class index ``labels[i]``."""

    root: Path
    paths: list[Path]
    labels: np.ndarray  # int64[N]
    ignored: list[Path] = field(default_factory=list)  # files without an image extension

    def __len__(self) -> int:
        return len(self.paths)

    def counts(self) -> dict[str, int]:
        return {name: int((self.labels == i).sum()) for i, name in enumerate(CLASSES)}


@dataclass
class LoadedImages:
    """Decoded, squash-resized images of a tree, kept in RAM: ``images[i]`` is uint8 BGR."""

    root: Path
    images: np.ndarray  # uint8[N, size, size, 3] BGR
    labels: np.ndarray  # int64[N]
    paths: list[Path]
    skipped: list[tuple[Path, str]] = field(default_factory=list)  # (file, why)

    def __len__(self) -> int:
        return len(self.paths)

    def counts(self) -> dict[str, int]:
        return {name: int((self.labels == i).sum()) for i, name in enumerate(CLASSES)}


def index_image_folder(root: str | os.PathLike[str]) -> ImageFolderIndex:
    """List ``root/with_mask/*`` and ``root/without_mask/*`` (recursively, sorted).

    Raises :class:`DatasetError` when ``root`` is not a folder, a class folder is missing or holds
    no image files, or ``root`` holds other (non-hidden) folders, which would be a class maskrt
    does not know.
    """
    root = Path(root)
    if not root.is_dir():
        raise DatasetError(f"{root}: expected a folder with {CLASSES[0]}/ and {CLASSES[1]}/ "
                           "sub-folders, but it is not a folder" if root.exists() else
                           f"{root}: no such folder (expected a folder with {CLASSES[0]}/ and "
                           f"{CLASSES[1]}/ sub-folders)")
    subdirs = sorted(p.name for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    missing = [c for c in CLASSES if c not in subdirs]
    if missing:
        raise DatasetError(f"{root}: expected class folders {list(CLASSES)}, missing {missing} "
                           f"(found folders: {subdirs or 'none'})")
    extra = [d for d in subdirs if d not in CLASSES]
    if extra:
        raise DatasetError(f"{root}: expected only the class folders {list(CLASSES)}, also found "
                           f"{extra}; maskrt models have exactly these two classes")
    paths: list[Path] = []
    labels: list[int] = []
    ignored: list[Path] = []
    for index, name in enumerate(CLASSES):
        found = 0
        for path in _walk_files(root / name):
            if path.suffix.lower() in IMAGE_EXTENSIONS:
                paths.append(path)
                labels.append(index)
                found += 1
            else:
                ignored.append(path)
        if found == 0:
            raise DatasetError(f"{root / name}: expected image files ({', '.join(sorted(IMAGE_EXTENSIONS))}), "
                               "found none")
    return ImageFolderIndex(root, paths, np.asarray(labels, dtype=np.int64), ignored)


def _walk_files(folder: Path) -> Iterator[Path]:
    for dirpath, dirnames, filenames in os.walk(folder, followlinks=True):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        for name in sorted(filenames):
            if not name.startswith("."):
                yield Path(dirpath) / name


def load_image_folder(root: str | os.PathLike[str], size: int = INPUT_SIZE, *,
                      progress: bool = False, desc: str | None = None) -> LoadedImages:
    """Decode every image of an ImageFolder tree and squash-resize it to ``size`` x ``size``.

    Unreadable files are skipped with a :class:`SkippedImageWarning` and listed in ``.skipped``.
    Raises :class:`DatasetError` if a class ends up with no readable image.
    """
    index = index_image_folder(root)
    images = np.empty((len(index), size, size, 3), dtype=np.uint8)
    keep = np.zeros(len(index), dtype=bool)
    skipped: list[tuple[Path, str]] = []
    iterator: Sequence[int] | Iterator[int] = range(len(index))
    if progress:
        from tqdm import tqdm
        iterator = tqdm(iterator, desc=desc or f"loading {index.root}", unit="img", leave=False)
    for i in iterator:
        path = index.paths[i]
        try:
            image = decode_image(path)
        except ImageError as err:
            skipped.append((path, str(err)))
            warnings.warn(f"skipping unreadable image {path}: {err}", SkippedImageWarning, stacklevel=2)
            continue
        images[i] = resize_to_input(image, size)
        keep[i] = True
    labels = index.labels[keep]
    for c, name in enumerate(CLASSES):
        if not (labels == c).any():
            raise DatasetError(f"{index.root / name}: none of its images could be decoded "
                               f"({sum(1 for p, _ in skipped if index.labels[index.paths.index(p)] == c)} skipped)")
    paths = [p for p, k in zip(index.paths, keep) if k]
    return LoadedImages(index.root, images[keep] if not keep.all() else images, labels, paths, skipped)


def split_dirs(data_dir: str | os.PathLike[str], splits: Sequence[str] = ("train", "val")) -> list[Path]:
    """``data_dir/train``, ``data_dir/val``... checked to exist, or a :class:`DatasetError`."""
    data_dir = Path(data_dir)
    if not data_dir.is_dir():
        raise DatasetError(f"{data_dir}: no such data folder (expected {', '.join(s + '/' for s in splits)} "
                           "inside it, each with with_mask/ and without_mask/)")
    out = []
    for split in splits:
        path = data_dir / split
        if not path.is_dir():
            raise DatasetError(f"{data_dir}: expected a {split}/ folder (with with_mask/ and "
                               f"without_mask/ inside), not found")
        out.append(path)
    return out
