"""Connecting to a Ray cluster (or starting a local one), quietly, and what the cluster offers."""

from __future__ import annotations

import logging
from typing import Any

from maskrt.ray import require_ray


def connect(address: str | None = None, *, num_cpus: int | None = None,
            num_gpus: int | None = None, quiet: bool = True, **init_options: Any) -> Any:
    """Ray, initialised: ``address`` None starts a local cluster (``num_cpus`` / ``num_gpus``
    logical resources, default: what the machine has), ``"auto"`` joins the cluster this machine
    belongs to, ``"HOST:PORT"`` (or ``ray://HOST:PORT``) that one. Already initialised: left as
    it is. ``quiet``: Ray Data's progress bars off and Ray's own loggers at WARNING (the caller
    prints its own progress)."""
    ray = require_ray()
    if not ray.is_initialized():
        options: dict[str, Any] = {"include_dashboard": False,
                                   "logging_level": logging.WARNING if quiet else logging.INFO}
        if address is None:
            options.update(num_cpus=num_cpus, num_gpus=num_gpus)
        elif num_cpus is not None or num_gpus is not None:
            raise ValueError(f"num_cpus/num_gpus: expected None when joining the cluster at "
                             f"{address!r} (its nodes say what they have), got {num_cpus}/{num_gpus}")
        options.update(init_options)
        ray.init(address=address, **options)
    if quiet:
        quiet_ray()
    return ray


def quiet_ray() -> None:
    """Ray Data's progress bars off, and its and Serve's info lines below WARNING."""
    from ray.data import DataContext

    context = DataContext.get_current()
    context.enable_progress_bars = False
    for name in ("ray.data", "ray.serve"):
        logging.getLogger(name).setLevel(logging.WARNING)
    # ... and its warning that they are off: we turned them off
    logging.getLogger("ray.data._internal.progress").setLevel(logging.ERROR)


def cluster_gpus() -> float:
    """How many GPUs the cluster has (logical resources), 0 without any."""
    ray = require_ray()
    return float(ray.cluster_resources().get("GPU", 0.0))


def cluster_cpus() -> float:
    ray = require_ray()
    return float(ray.cluster_resources().get("CPU", 0.0))


def quiet_worker(cwd: str | None = None) -> None:
    """In a Ray worker: OpenCV's, FFmpeg's, libpng's and libjpeg's own log lines off (as the
    command line does; what they meant reaches the records' reasons) unless the environment
    sets them, and the working folder the driver's (``cwd``), so relative paths name the same
    files as on the driver."""
    import os

    import cv2

    from maskrt.cli.common import NATIVE_LOG_ENV, quiet_decoders

    for name, value in NATIVE_LOG_ENV.items():
        if name not in os.environ:
            os.environ[name] = value
            if name == "OPENCV_LOG_LEVEL":
                cv2.utils.logging.setLogLevel(cv2.utils.logging.LOG_LEVEL_SILENT)
    quiet_decoders()  # libpng's and libjpeg's lines too
    if cwd and os.getcwd() != cwd and os.path.isdir(cwd):
        os.chdir(cwd)
