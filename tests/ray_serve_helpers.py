"""A Serve deployment the Ray tests hold still, importable in the replicas by name (the test
cluster's PYTHONPATH names this folder). Apart from ray_helpers: importing it needs Ray Serve,
and test_ray.py imports ray_helpers where Ray is missing too (its tests then skip)."""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

from maskrt.ray.serve import MaskDeployment


class HeldDeployment(MaskDeployment.func_or_class):
    """The maskrt deployment whose replica holds every batch until the file ``gate`` exists:
    requests pile up behind it as behind a slow backend, on a fast machine or a loaded one."""

    def __init__(self, *args: Any, gate: str, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.gate = gate

    def _answers(self, items: list[Any]) -> list[dict[str, Any]]:
        while not os.path.exists(self.gate):
            time.sleep(0.02)
        return super()._answers(items)


def held_app(gate: Path, *, max_batch: int, max_ongoing_requests: int,
             max_queued_requests: int) -> Any:
    """A one-replica :class:`HeldDeployment` scoring whole frames, ready for ``serve.run``."""
    from ray import serve

    from maskrt.ray.serve import DEPLOYMENT_NAME

    deployment = serve.deployment(HeldDeployment, name=DEPLOYMENT_NAME).options(
        num_replicas=1, max_ongoing_requests=max_ongoing_requests,
        max_queued_requests=max_queued_requests, ray_actor_options={"num_cpus": 0.5},
        logging_config={"enable_access_log": False, "log_level": "WARNING"})
    return deployment.bind(gate=str(gate), max_batch=max_batch, regions="frame")
