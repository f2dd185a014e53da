"""Scale-out on Ray: offline scoring of files, folders and videos with Ray Data, online scoring
with Ray Serve, and live cameras sent to the Serve deployment by ingest actors.

Ray is an optional dependency (``pip install maskrt[ray]``) and is imported only by the code
that uses it, so ``import maskrt`` and ``import maskrt.ray`` work without it; calling anything
here that needs Ray raises :class:`RayNotInstalled` saying what to install.

* :class:`UnitScorer` (:mod:`maskrt.ray.units`): loads the classifier and the face detector once
  per actor and runs each unit of work (a run of photos, a whole video) through ``maskrt
  score``'s pipeline (faces found, tracked and decided): ``maskrt score``'s records.
* :class:`MaskScorer` (:mod:`maskrt.ray.scorer`): loads the graph once per actor and scores a
  batch ``dict[str, np.ndarray]`` of uint8 BGR frames of any size with the decode, resize and
  decision code of ``maskrt score --regions frame`` (the whole frame is the one region).
* :func:`score_dataset` (:mod:`maskrt.ray.dataset`): ``map_batches`` over an actor pool, one row
  per face (``regions="frame"``: per frame) and per frame dropped or failed with the reason,
  ``records.jsonl`` (or Parquet) and a ``summary.json`` with the accounting identity, like
  ``maskrt score``'s.
* :mod:`maskrt.ray.serve`: the Ray Serve deployment (``serve run maskrt.ray.serve:app``): every
  face of a frame, as :meth:`maskrt.Engine.faces` gives them (``regions="frame"``: one decision).
* :func:`ingest` (:mod:`maskrt.ray.ingest`): ingest actors reading maskrt's stream sources and
  sending frames to the deployment, each source's faces tracked in its actor
  (:mod:`maskrt.ray.live_tracks`); Serve's back-pressure becomes ``dropped`` records.
"""

from __future__ import annotations

import importlib
from typing import Any

#: what to run to get Ray, named by every error about its absence
INSTALL_HINT = "pip install maskrt[ray]"


class RayNotInstalled(ImportError):
    """Ray (with its data and serve parts) is not installed; the message says what to install."""


def require_ray(part: str = "") -> Any:
    """The ``ray`` module, after importing ``ray.<part>`` ("data", "serve") when given; raises
    :class:`RayNotInstalled` naming ``pip install maskrt[ray]`` when it is missing."""
    name = f"ray.{part}" if part else "ray"
    try:
        importlib.import_module(name)
    except ImportError as err:
        raise RayNotInstalled(f"maskrt.ray: expected the {name} package (Ray >= 2.50 with its data "
                              f"and serve parts), but it cannot be imported ({err}); install it "
                              f"with: {INSTALL_HINT}") from err
    return importlib.import_module("ray")


_EXPORTS = {
    "MaskScorer": "maskrt.ray.scorer",
    "RecordScorer": "maskrt.ray.scorer",
    "UnitScorer": "maskrt.ray.units",
    "score_dataset": "maskrt.ray.dataset",
    "ingest": "maskrt.ray.ingest",
    "build_app": "maskrt.ray.serve",
    "connect": "maskrt.ray.cluster",
}

__all__ = ["INSTALL_HINT", "RayNotInstalled", "require_ray", *_EXPORTS]


def __getattr__(name: str) -> Any:
    module_name = _EXPORTS.get(name)
    if module_name is None:
        raise AttributeError(f"module 'maskrt.ray' has no attribute {name!r}")
    if module_name == "maskrt.ray.serve":
        require_ray("serve")
    return getattr(importlib.import_module(module_name), name)
