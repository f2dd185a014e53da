"""What several verbs share: opening the Engine their backend flags describe, the one-line
report of an expected failure, and quieting OpenCV's, FFmpeg's, libpng's and libjpeg's own log
lines."""

from __future__ import annotations

import argparse
import contextlib
import os
import signal
import sys
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
    """Keep libpng's and libjpeg's lines off stderr (:mod:`maskrt.cli.decoder_stderr`) while
    OpenCV's log level is SILENT: they are native log lines too, but OpenCV's level does not
    reach them."""
    import cv2

    from maskrt import image
    from maskrt.cli.decoder_stderr import DECODER_STDERR

    if cv2.utils.logging.getLogLevel() == cv2.utils.logging.LOG_LEVEL_SILENT:
        image.decode_guard = DECODER_STDERR.quiet


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


@contextlib.contextmanager
def interrupted_by_signals() -> Iterator[None]:
    """Within the block, SIGINT and SIGTERM raise KeyboardInterrupt in the main thread, whatever
    handlers were inherited: a background job of a non-interactive shell starts with SIGINT
    ignored (Ctrl-C then did nothing), and SIGTERM (docker stop, systemd) ended the process
    without its cleanup. Called outside the main thread, it changes nothing."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = {signum: signal.signal(signum, _interrupt)
                for signum in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt(signal.Signals(signum).name)
