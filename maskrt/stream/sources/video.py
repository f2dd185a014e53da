"""Video files, decoded with OpenCV's FFmpeg backend."""

from __future__ import annotations

import threading
from typing import Iterator

from maskrt.stream.sources.base import Frame
from maskrt.stream.sources.files import PathSource


class VideoFileSource(PathSource):
    """A video file decoded with OpenCV's FFmpeg backend, every frame, as fast as it is consumed.

    A video that cannot be opened yields one failed frame; one that ends before the frame count
    in its header (a truncated or corrupt file) yields a failed frame saying where it ended.
    """

    kind = "video"

    def frames(self, stop: threading.Event) -> Iterator[Frame]:
        import cv2

        self.state = "reading"
        cap = cv2.VideoCapture(str(self.path), cv2.CAP_FFMPEG)
        try:
            if not cap.isOpened():
                self.state = "failed"
                reason = "file not found" if not self.path.exists() else "not a readable video"
                self.last_error = f"{self.path}: cannot open as a video ({reason})"
                yield Frame(0, None, uri=str(self.path), error=self.last_error)
                return
            fps = cap.get(cv2.CAP_PROP_FPS)
            self.fps = fps if fps and fps > 0 else None
            expected = int(cap.get(cv2.CAP_PROP_FRAME_COUNT) or 0)
            index = 0
            while not stop.is_set():
                ok, image = cap.read()
                if not ok or image is None:
                    break
                msec = cap.get(cv2.CAP_PROP_POS_MSEC)
                if (not msec and index > 0) and self.fps:
                    msec = 1000.0 * index / self.fps
                yield Frame(index, msec / 1000.0, image=image)
                index += 1
            if stop.is_set():
                return
            # Container frame counts can be estimates (mkv, webm): tolerate 1% or one frame.
            if index == 0 or (expected > 0 and expected - index > max(1, expected // 100)):
                self.state = "failed"
                self.last_error = (f"{self.path}: video ended after {index} of {expected} frames "
                                   "(truncated or corrupt)" if index else
                                   f"{self.path}: no decodable frame in the video")
                yield Frame(index, index / self.fps if self.fps else None, uri=str(self.path),
                            error=self.last_error)
                return
            self.state = "finished"
        finally:
            cap.release()


