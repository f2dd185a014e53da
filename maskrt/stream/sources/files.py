"""Image files, folders (recursive) and drop folders: lossless sources whose frames are encoded
image bytes, decoded later by the pipeline's decode stage."""

from __future__ import annotations

import logging
import os
import threading
import time
from pathlib import Path
from typing import Any, Iterator

from maskrt import image
from maskrt.image import ImageError, read_image_file, truncation_reason
from maskrt.stream.sources.base import (DROP_PREFIX, NOT_MEDIA_EXTENSIONS, PARTIAL_SUFFIXES,
                                        VIDEO_EXTENSIONS, Frame, Source, display_path)

log = logging.getLogger("maskrt.sources")


# The first bytes of the image formats whose ends can be checked (truncation_reason).
_SIGNATURES = (b"\xff\xd8\xff", b"\x89PNG\r\n\x1a\n")


def _upload_in_progress(data: bytes) -> bool:
    """Whether bytes read from a drop folder look like an upload that is not finished: nothing
    written yet (an uploader creates the file, then writes), only part of a JPEG/PNG signature,
    or a JPEG/PNG without its end marker."""
    if any(len(data) < len(sig) and sig.startswith(data) for sig in _SIGNATURES):
        return True  # also b"": an empty file
    return truncation_reason(data) is not None


def _mtime(path: Path) -> float | None:
    try:
        return path.stat().st_mtime
    except OSError:
        return None


def _not_media(path: Path) -> bool:
    return path.suffix.lower() in NOT_MEDIA_EXTENSIONS


def _read_file(path: Path, index: int) -> Frame:
    # Read by the real path; named by its display form (the name may not be valid UTF-8).
    # A file over MAX_FILE_BYTES fails unread: a folder of huge files must not fill memory.
    shown = display_path(path)
    try:
        data = read_image_file(path, what=shown, max_bytes=image.MAX_FILE_BYTES)
    except OSError as err:
        return Frame(index, _mtime(path), uri=shown,
                     error=f"{shown}: cannot read file ({err.strerror or err})")
    except ImageError as err:
        return Frame(index, _mtime(path), uri=shown, error=str(err))
    return Frame(index, _mtime(path), data=data, uri=shown)


class PathSource(Source):
    """A source named by one filesystem path; its id defaults to the path."""

    def __init__(self, path: str | os.PathLike[str], id: str | None = None, **kw: Any) -> None:
        self.path = Path(path)
        super().__init__(id, **kw)

    def default_id(self) -> str:
        return str(self.path)

    def _failed(self, problem: str) -> Frame:
        """The one failed frame of a source whose path cannot be read at all."""
        self.state = "failed"
        self.last_error = f"{display_path(self.path)}: {problem}"
        return Frame(0, None, uri=display_path(self.path), error=self.last_error)


class ImageFileSource(PathSource):
    """One image file: one frame."""

    kind = "image"

    def frames(self, stop: threading.Event) -> Iterator[Frame]:
        self.state = "reading"
        yield _read_file(self.path, 0)
        self.state = "finished"


class FolderSource(PathSource):
    """Every non-hidden regular file under ``path``, recursively, sorted by path (directories are
    listed one at a time, so a folder of millions of files never sits in memory as a list).

    extensions: only files with these endings (e.g. ``{".jpg", ".png"}``); default: all files but
    those that are clearly not media (:data:`NOT_MEDIA_EXTENSIONS`), so that a stray unknown file
    is reported as a ``failed`` record instead of silently skipped. Files left out by either rule
    are counted in ``skipped_files`` (never read, so never in ``read``).
    """

    kind = "folder"

    def __init__(self, path: str | os.PathLike[str], id: str | None = None, *,
                 extensions: set[str] | None = None, **kw: Any) -> None:
        self.extensions = {e.lower() for e in extensions} if extensions else None
        super().__init__(path, id, **kw)

    def files(self) -> Iterator[Path]:
        """The folder's files in the order they are read (``skipped_files`` counts the others)."""
        self.skipped_files = 0
        yield from self._walk(self.path)

    def _wanted(self, path: Path) -> bool:
        """Whether a file is read as a frame; one that is not is counted as skipped."""
        if self.extensions is not None:
            wanted = path.suffix.lower() in self.extensions
        else:
            wanted = not _not_media(path)
        if not wanted:
            self.skipped_files += 1
        return wanted

    def _walk(self, directory: Path) -> Iterator[Path]:
        try:
            with os.scandir(directory) as it:
                entries = sorted(it, key=lambda e: e.name)
        except OSError as err:
            log.warning("%s: cannot list %s: %s", self.id, display_path(directory), err)
            return
        for entry in entries:
            if entry.name.startswith("."):
                continue
            try:
                if entry.is_dir(follow_symlinks=False):
                    yield from self._walk(Path(entry.path))
                elif entry.is_file() and self._wanted(Path(entry.path)):
                    yield Path(entry.path)
            except OSError:
                continue

    def frames(self, stop: threading.Event) -> Iterator[Frame]:
        # Imported here: video.py builds on PathSource from this module.
        from maskrt.stream.sources.video import read_video

        if not self.path.is_dir():
            yield self._failed("not a folder")
            return
        self.state = "reading"
        index = 0
        for path in self.files():
            if stop.is_set():
                return
            if path.suffix.lower() in VIDEO_EXTENSIONS:  # its frames, not one undecodable image
                index, _ = yield from read_video(path, stop, index, uri=display_path(path))
                continue
            yield _read_file(path, index)
            index += 1
        if not stop.is_set():
            self.state = "finished"


class DropFolderSource(PathSource):
    """A folder that cameras upload face crops into (e.g. over FTP), watched by polling.

    Each new complete file is yielded once. A file is complete when it has not been modified for
    ``settle_s`` seconds and is not named like an upload in progress (:data:`PARTIAL_SUFFIXES`,
    hidden files). An empty file, or a JPEG or PNG that still looks cut short (no end marker), is
    given up to ``incomplete_grace_s`` seconds after its last modification to be completed before
    it is passed on (and then fails as empty or truncated). A file replaced under the same name (new inode, size
    or mtime) is a new file. ``existing``: also score the files present at start.
    The source runs until it is removed or the pipeline stops; it never drops (lossless).
    It remembers every file it passed on (path -> inode, size, mtime) and lists the folder every
    ``poll_s``: move or delete scored files when millions pass through one folder. Files that
    are clearly not media (:data:`NOT_MEDIA_EXTENSIONS`, e.g. a camera's .xml event next to its
    JPEG) are skipped, each counted once in ``skipped_files``. So is a symbolic link whose target
    lies outside the folder, unless ``follow_links``: whoever can upload into the folder could
    otherwise have any file the scorer can read scored (links inside the folder are read).
    """

    kind = "drop"
    finite = False

    def __init__(self, path: str | os.PathLike[str], id: str | None = None, *,
                 settle_s: float = 1.0, poll_s: float = 0.25, incomplete_grace_s: float = 30.0,
                 existing: bool = True, recursive: bool = False, follow_links: bool = False,
                 **kw: Any) -> None:
        self.settle_s = settle_s
        self.poll_s = poll_s
        self.incomplete_grace_s = incomplete_grace_s
        self.existing = existing
        self.recursive = recursive
        self.follow_links = follow_links
        super().__init__(path, id, **kw)

    def default_id(self) -> str:
        return f"{DROP_PREFIX}{self.path}"

    # Like FolderSource._walk in shape, but a drop folder skips uploads in progress, recurses
    # only when asked and needs each file's stat to tell a new file from a seen one.
    def _scan(self, directory: Path) -> Iterator[tuple[Path, os.stat_result]]:
        try:
            with os.scandir(directory) as it:
                entries = sorted(it, key=lambda e: e.name)
        except OSError:
            return
        for entry in entries:
            name = entry.name
            if name.startswith(".") or name.lower().endswith(PARTIAL_SUFFIXES):
                continue
            try:
                if entry.is_dir(follow_symlinks=False):
                    if self.recursive:
                        yield from self._scan(Path(entry.path))
                elif entry.is_file():
                    yield Path(entry.path), entry.stat()
            except OSError:
                continue

    def frames(self, stop: threading.Event) -> Iterator[Frame]:
        if not self.path.is_dir():
            yield self._failed("drop folder does not exist")
            return
        seen: dict[Path, tuple[int, int, int]] = {}
        if not self.existing:
            seen = {p: (st.st_ino, st.st_size, st.st_mtime_ns) for p, st in self._scan(self.path)}
        index = 0
        self.state = "watching"
        while not stop.is_set():
            for path, st in self._scan(self.path):
                key = (st.st_ino, st.st_size, st.st_mtime_ns)
                if seen.get(path) == key or self._skipped(path, key, seen):
                    continue
                age = time.time() - st.st_mtime
                if age < self.settle_s:
                    continue
                frame = _read_file(path, index)
                if (frame.data is not None and age < self.incomplete_grace_s
                        and _upload_in_progress(frame.data)):
                    continue  # an upload still in progress: look again at the next poll
                seen[path] = key
                index += 1
                yield frame
                if stop.is_set():
                    return
            stop.wait(self.poll_s)

    def _skipped(self, path: Path, key: tuple[int, int, int],
                 seen: dict[Path, tuple[int, int, int]]) -> bool:
        """Whether a new file is not read (not media, or a link out of the folder): then it is
        remembered and counted once."""
        if not _not_media(path) and not self._links_outside(path):
            return False
        seen[path] = key
        self.skipped_files += 1
        return True

    def _links_outside(self, path: Path) -> bool:
        """Whether ``path`` is a link, not allowed by ``follow_links``, to a file outside the
        folder (logged once: a skipped file is remembered until it changes)."""
        if self.follow_links or not path.is_symlink():
            return False
        try:
            # resolve(): through chains of links, and the folder itself may be reached by one.
            inside = path.resolve(strict=True).is_relative_to(self.path.resolve(strict=True))
        except (OSError, RuntimeError):  # gone meanwhile, or a loop: nothing to read safely
            inside = False
        if not inside:
            log.info("%s: skipped %s: a link to a file outside the drop folder (follow_links "
                     "allows it)", self.id, display_path(path))
        return not inside
