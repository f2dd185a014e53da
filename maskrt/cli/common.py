"""What several verbs share: opening the Engine their backend flags describe, the one-line
report of an expected failure, and quieting OpenCV's, FFmpeg's, libpng's and libjpeg's own log
lines."""

from __future__ import annotations

import argparse
import contextlib
import os
import re
import sys
import tempfile
import threading
import traceback
import warnings
from collections.abc import Iterator
from typing import Any, TextIO

#: OpenCV's and FFmpeg's own log lines (``[ WARN:0@7.3] global cap.cpp:212 open VIDEOIO(FFMPEG):
#: ...``, ``moov atom not found``) are written straight to the terminal by C code and would land
#: between maskrt's progress lines; what they mean already reaches the records' reasons. So the
#: command line silences them, unless the user set these variables or runs with --debug.
#: (-8 is FFmpeg's AV_LOG_QUIET. OpenCV reads OPENCV_FFMPEG_LOGLEVEL once, when the process
#: first opens a video, so the command line sets it before its verb runs.)
NATIVE_LOG_ENV = {"OPENCV_LOG_LEVEL": "SILENT", "OPENCV_FFMPEG_LOGLEVEL": "-8"}


def open_engine(args: argparse.Namespace, **engine_options: Any) -> tuple[Any, bool]:
    """The Engine of ``--model``, ``--backend`` and ``--backend-option`` (plus ``engine_options``
    such as ``chunk_size``), and whether its model is untrained. Anything that keeps it from
    running here (backend unavailable, bad option, unreadable model) is a ValueError whose
    message is fit for the user, so verbs print it and exit 2 instead of a traceback."""
    from maskrt.backends import BackendUnavailable, backend_options
    from maskrt.engine import Engine
    from maskrt.graph.errors import ModelLoadError, UntrainedModelWarning

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", UntrainedModelWarning)
        try:
            engine = Engine(args.model, backend=args.backend, **engine_options,
                            **backend_options(args))
        except (BackendUnavailable, ModelLoadError, FileNotFoundError) as err:
            raise ValueError(str(err)) from err
        except Exception as err:
            unloadable = model_rejected(args.model, err)
            if unloadable is None:
                raise  # a bug: keeps its traceback
            raise unloadable from err
    for warning in caught:  # let the other warnings through as they came
        if not issubclass(warning.category, UntrainedModelWarning):
            warnings.warn_explicit(warning.message, warning.category, warning.filename,
                                   warning.lineno)
    return engine, any(issubclass(w.category, UntrainedModelWarning) for w in caught)


def model_rejected(model: Any, err: BaseException) -> ValueError | None:
    """A ValueError for the user when ``err`` is ONNX Runtime refusing the ``--model`` file they
    gave (not an ONNX file, a corrupt or unsupported graph), else None. ONNX Runtime's errors
    derive from Exception only, so they are told by their module."""
    if model is None or not type(err).__module__.startswith("onnxruntime"):
        return None
    return ValueError(f"{model}: ONNX Runtime cannot load this model ({error_line(err)})")


def positive_int(text: str) -> int:
    """argparse type: an integer >= 1."""
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected an integer >= 1, got {text}")
    return value


def non_negative_int(text: str) -> int:
    """argparse type: an integer >= 0."""
    value = int(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"expected an integer >= 0, got {text}")
    return value


def non_negative_float(text: str) -> float:
    """argparse type: a number >= 0."""
    value = float(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"expected a number >= 0, got {text}")
    return value


def expected_errors() -> tuple[type[BaseException], ...]:
    """The failures a user causes and can fix: a missing or unreadable file, a bad value, a model
    file that is not one, a backend this machine cannot run, a TensorRT build that fails. The
    command line reports them in one line (exit 2); anything else is a bug in maskrt and keeps
    its traceback. (ImageError, DatasetError, OnnxFormatError and SidecarError are ValueErrors.)"""
    from maskrt.backends.base import BackendUnavailable
    from maskrt.backends.tensorrt.build import EngineBuildError
    from maskrt.graph.errors import ModelLoadError

    return (ValueError, OSError, BackendUnavailable, ModelLoadError, EngineBuildError)


def error_line(err: BaseException) -> str:
    """The message of ``err`` on one line. A message spanning lines (usually a third-party error
    quoted inside ours) keeps its first line; --debug shows the whole of it."""
    if isinstance(err, OSError) and err.strerror and err.filename:
        text = f"{err.filename}: {err.strerror}"  # not "[Errno 2] No such file...: '/x'"
    else:
        text = str(err).strip() or type(err).__name__
    first, _, rest = text.partition("\n")
    return first.rstrip() + (" [...]" if rest.strip() else "")


def fail(verb: str, err: BaseException, args: argparse.Namespace | None = None, *,
         prefix: str = "", suffix: str = "", file: TextIO | None = None) -> int:
    """Report an expected failure as ``maskrt VERB: PREFIX MESSAGE SUFFIX`` (after its traceback
    with --debug) and return the exit status 2."""
    stream = file if file is not None else sys.stderr
    if getattr(args, "debug", False):
        stream.write(_traceback_without_message(err))
    print(f"maskrt {verb}: {prefix}{error_line(err)}{suffix}", file=stream)
    return 2


def _traceback_without_message(err: BaseException) -> str:
    """The traceback of ``err`` ending in its type name only: its message is the line fail()
    prints next, and print_exception's own last line would show the same message twice."""
    lines = traceback.format_exception(err)
    message = traceback.format_exception_only(err)
    if lines[-len(message):] == message:
        lines[-len(message):] = [f"{type(err).__module__}.{type(err).__qualname__}\n"
                                 if type(err).__module__ != "builtins"
                                 else f"{type(err).__qualname__}\n"]
    return "".join(lines)


@contextlib.contextmanager
def quiet_native_logs() -> Iterator[None]:
    """Silence OpenCV's and FFmpeg's log lines (see :data:`NATIVE_LOG_ENV`), and libpng's and
    libjpeg's (:func:`quiet_decoders`), for the block, and put back what was there after it
    (main is also called in-process, by tests and hosts)."""
    import cv2  # loaded here anyway by almost every verb; it read OPENCV_LOG_LEVEL when loaded

    from maskrt import image

    ours = {name: value for name, value in NATIVE_LOG_ENV.items() if name not in os.environ}
    os.environ.update(ours)
    previous, guard = cv2.utils.logging.getLogLevel(), image.decode_guard
    if "OPENCV_LOG_LEVEL" in ours:
        cv2.utils.logging.setLogLevel(cv2.utils.logging.LOG_LEVEL_SILENT)
    quiet_decoders()
    try:
        yield
    finally:
        cv2.utils.logging.setLogLevel(previous)
        image.decode_guard = guard
        for name in ours:
            os.environ.pop(name, None)


def quiet_decoders() -> None:
    """Keep libpng's and libjpeg's lines off stderr (:class:`DecoderStderr`) while OpenCV's log
    level is SILENT: they are native log lines too, but OpenCV's level does not reach them."""
    import cv2

    from maskrt import image

    if cv2.utils.logging.getLogLevel() == cv2.utils.logging.LOG_LEVEL_SILENT:
        image.decode_guard = DECODER_STDERR.quiet


#: What libpng and libjpeg print themselves ("libpng warning: iCCP: known incorrect sRGB
#: profile", "Corrupt JPEG data: 12 extraneous bytes before marker 0xd9"), straight to the
#: process's stderr, not through OpenCV's log: OpenCV's log level cannot stop them. Matched
#: anywhere, not only at a line's start: Python writes a line's text and its newline apart, so
#: a decoder's message may come in between.
_DECODER_MESSAGE = re.compile(rb"(?:libpng (?:warning|error)|Corrupt JPEG data|Premature end of "
                              rb"JPEG file|Invalid SOS parameters|Inconsistent progression "
                              rb"sequence|Unknown Adobe color transform|Warning: unknown JFIF "
                              rb"revision|Application transferred too (?:few|many) scanlines)"
                              rb"[^\n]*\n")


class DecoderStderr:
    """Keeps libpng's and libjpeg's lines off stderr: :func:`quiet_native_logs` makes
    :meth:`quiet` the decoders' guard (``maskrt.image.decode_guard``) while OpenCV's log level
    is SILENT. They can only be stopped at the file descriptor: while a decode runs, fd 2 is a
    memory file; after each decode what other threads wrote there meanwhile goes on to the real
    stderr (whole lines, in order, delayed by a decode at most) and the decoders' own lines are
    dropped. What they meant is in the ImageError (a record's reason)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._users, self._saved, self._fd, self._passed, self._partial = 0, -1, -1, 0, b""

    @contextlib.contextmanager
    def quiet(self) -> Iterator[None]:
        with self._lock:
            entered = self._enter_locked()
        try:
            yield
        finally:
            if entered:
                with self._lock:
                    self._leave_locked()

    def _enter_locked(self) -> bool:
        if not hasattr(os, "pread"):  # reading must not move the offset the writers share
            return False
        if self._users == 0:
            with contextlib.suppress(OSError, ValueError, AttributeError):
                sys.stderr.flush()  # Python's own buffered text goes out first, in order
            try:
                saved = os.dup(2)
            except OSError:  # no stderr (closed): nothing to keep quiet
                return False
            try:
                self._fd = _memory_file()
            except OSError:  # out of descriptors or memory: decode with the lines, not fail
                os.close(saved)
                return False
            os.dup2(self._fd, 2)
            self._saved, self._passed, self._partial = saved, 0, b""
        self._users += 1
        return True

    def _leave_locked(self) -> None:
        self._users -= 1
        last = self._users == 0
        if last:
            os.dup2(self._saved, 2)
        end = os.fstat(self._fd).st_size
        data = self._partial + os.pread(self._fd, end - self._passed, self._passed)
        self._passed = end
        cut = len(data) if last else data.rfind(b"\n") + 1  # a line still being written waits
        data, self._partial = data[:cut], data[cut:]
        # (libpng writes its message and its newline apart: a line another thread wrote in
        # between goes with the message; rare, only while a PNG warns.)
        self._write(_DECODER_MESSAGE.sub(b"", data))
        if last:
            os.close(self._saved)
            os.close(self._fd)

    def _write(self, data: bytes) -> None:
        with contextlib.suppress(OSError):  # the real stderr is gone: nothing else reaches it
            while data:
                data = data[os.write(self._saved, data):]


def _memory_file() -> int:
    """A file in memory where the system has one (a full disk must not lose stderr lines), in
    append mode: threads write to it at once, and a memory file has no lock on a shared offset
    (without O_APPEND, their lines overwrite each other)."""
    import fcntl

    if hasattr(os, "memfd_create"):
        fd = os.memfd_create("maskrt-decoder-stderr")
    else:
        fd, name = tempfile.mkstemp(prefix="maskrt-decoder-stderr-")
        os.unlink(name)
    fcntl.fcntl(fd, fcntl.F_SETFL, fcntl.fcntl(fd, fcntl.F_GETFL) | os.O_APPEND)
    return fd


#: The process's one DecoderStderr (there is one fd 2 per process).
DECODER_STDERR = DecoderStderr()


def add_track_arguments(parser: argparse.ArgumentParser) -> None:
    """--track, --reuse and --track-option (the video verbs: score, eval on clips)."""
    parser.add_argument("--track", choices=("auto", "on", "off"), default="auto",
                        help="follow every face across frames and decide per person (track_id, "
                             "track_label); auto (default): on for videos and live sources, off "
                             "for photos")
    parser.add_argument("--reuse", choices=("on", "off"), default="on",
                        help="where tracking is on, classify a tracked face only when it is "
                             "worth it and reuse its track's decision and CAM otherwise "
                             "(default on)")
    parser.add_argument("--track-option", action="append", default=[], metavar="KEY=VALUE",
                        help="override a tracking setting, repeatable (README, 'Video'): "
                             "max_lost, min_hits, high_score, reclassify_every, grow, ...")


def track_kwargs(args: argparse.Namespace) -> dict[str, Any]:
    """Pipeline's track, reuse and track_options from the flags (ValueError: a bad option)."""
    from maskrt.track.settings import parse_track_options

    return {"track": args.track, "reuse": args.reuse == "on",
            "track_options": parse_track_options(args.track_option)}
