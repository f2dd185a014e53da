"""What several verbs share: opening the Engine their backend flags describe."""

from __future__ import annotations

import argparse
import warnings
from typing import Any


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
    for warning in caught:  # let the other warnings through as they came
        if not issubclass(warning.category, UntrainedModelWarning):
            warnings.warn_explicit(warning.message, warning.category, warning.filename,
                                   warning.lineno)
    return engine, any(issubclass(w.category, UntrainedModelWarning) for w in caught)


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
