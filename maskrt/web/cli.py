"""The live view's command-line side: ``maskrt score ... --web [HOST:]PORT`` (the flags, the
sink, lingering after the run) and ``maskrt view RUN_DIR`` (:mod:`maskrt.cli.view`).

Light at import time (argparse only): ``maskrt score --help`` imports it.
"""

from __future__ import annotations

import argparse
import errno
import sys
import time
from typing import Any


def add_web_arguments(parser: argparse.ArgumentParser) -> None:
    from maskrt.cli.common import non_negative_float

    parser.add_argument("--web", default=None, metavar="[HOST:]PORT",
                        help="serve a live view of the run in the browser at http://HOST:PORT/ "
                             "(HOST defaults to 127.0.0.1: this machine only; 0.0.0.0 serves "
                             "every interface, to anyone who can reach it: frames and faces; "
                             "PORT 0 picks a free one)")
    parser.add_argument("--web-fps", type=_positive_float, default=5.0, metavar="FPS",
                        help="pictures per second per source on the page at most (default 5; "
                             "encoded only while a browser watches)")
    parser.add_argument("--web-linger", type=non_negative_float, default=0.0, metavar="SECONDS",
                        help="keep serving the page this long after the run ended, with its "
                             "final figures (default 0; a signal ends it sooner)")


def _positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number > 0, got {text!r}") from None
    if not value > 0:
        raise argparse.ArgumentTypeError(f"expected a number > 0, got {text!r}")
    return value


def check_web_arguments(args: argparse.Namespace) -> None:
    """ValueError: a --web-* flag without --web, or a malformed address."""
    from maskrt.web.sink import parse_address

    if args.web is None:
        if args.web_fps != 5.0 or args.web_linger:
            raise ValueError("--web-fps and --web-linger need --web [HOST:]PORT")
        return
    try:
        parse_address(args.web)
    except ValueError as err:
        raise ValueError(f"--web: {err}") from None


def make_web_sink(args: argparse.Namespace, settings: dict[str, Any] | None = None) -> Any:
    """The WebSink of ``--web`` (None without it), serving from now; ValueError: its port is
    taken or the address cannot be served (named)."""
    if getattr(args, "web", None) is None:
        return None
    from maskrt.web.sink import WebSink

    try:
        sink = WebSink(args.web, fps=args.web_fps, linger_s=args.web_linger, settings=settings)
    except OSError as err:
        what = ("address already in use (another maskrt view?)" if err.errno == errno.EADDRINUSE
                else err.strerror or str(err))
        raise ValueError(f"--web {args.web}: cannot serve: {what}") from err
    print(f"maskrt score: live view at {sink.url}", file=sys.stderr)
    return sink


def web_sink_of(sinks: Any) -> Any:
    from maskrt.web.sink import WebSink

    return next((s for s in sinks if isinstance(s, WebSink)), None)


def linger(sinks: Any, signals: Any) -> None:
    """After the run: keep the page up for ``--web-linger`` seconds (it shows the final
    summary), ended sooner by a stop signal. Nothing when the run itself was stopped by one."""
    sink = web_sink_of(sinks)
    if sink is None or sink.linger_s <= 0 or signals.name is not None:
        if sink is not None:
            sink.stop()
        return
    print(f"maskrt score: the live view stays at {sink.url} for {sink.linger_s:g} s "
          f"(Ctrl-C ends it)", file=sys.stderr)
    deadline = time.monotonic() + sink.linger_s
    while not sink.wait(0.2) and signals.name is None and time.monotonic() < deadline:
        pass
    sink.stop()
