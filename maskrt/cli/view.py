"""``maskrt view RUN_DIR [--port P]``: the live view's page over a finished ``maskrt score``
run (summary, tiles, the face gallery with filters by source, label and time), served until
Ctrl-C or SIGTERM (:mod:`maskrt.web.run_view`)."""

from __future__ import annotations

import argparse
import errno
import sys
from pathlib import Path


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("run_dir", type=Path, metavar="RUN_DIR",
                        help="the --out folder of a maskrt score run")
    parser.add_argument("--port", type=int, default=8080,
                        help="port to serve at (default 8080; 0 picks a free one)")
    parser.add_argument("--host", default="127.0.0.1",
                        help="address to serve at (default 127.0.0.1: this machine only; "
                             "0.0.0.0 serves the run's faces to anyone who can reach it)")


def main(args: argparse.Namespace) -> int:
    from maskrt.cli.common import interrupted_by_signals
    from maskrt.web.run_view import serve_run

    if not 0 <= args.port <= 65535:
        raise ValueError(f"--port: expected 0..65535, got {args.port}")
    try:
        server = serve_run(args.run_dir, args.host, args.port)
    except OSError as err:
        if err.errno == errno.EADDRINUSE:
            raise ValueError(f"--port {args.port}: address already in use") from err
        raise
    try:
        with interrupted_by_signals():  # before the line: whoever waits for it may signal next
            print(f"maskrt view: {args.run_dir} at {server.url} (Ctrl-C ends it)",
                  file=sys.stderr)
            while not server.wait_closed(1.0):
                pass
    except KeyboardInterrupt:
        pass
    finally:
        server.close()
    return 0
