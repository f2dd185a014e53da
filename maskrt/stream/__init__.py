"""Streaming: sources -> stages over bounded queues -> records -> sinks (see ARCHITECTURE.md).

* ``sources/``: where frames come from. ``readers.py``: one reader thread per source, the
  per-source queues and their round-robin fan-in.
* ``queue.py``: the one bounded queue type (block or drop-oldest). ``work.py``: the units of work
  (a frame, its regions). ``accounting.py``: the ledger every frame's status goes through.
* ``stages.py``: the per-frame stages (decode, user stages, prepare) and the Stage protocol;
  ``batching.py``: infer and explain. ``pipeline.py``: :class:`Pipeline`, the composition root.
* ``records.py``, ``sinks.py``, ``summary.py``: what comes out and where it goes.
"""

from maskrt.stream.pipeline import Pipeline
from maskrt.stream.records import Record
from maskrt.stream.sinks import Sink
from maskrt.stream.stages import Stage
from maskrt.stream.work import FrameTask, Region

__all__ = ["FrameTask", "Pipeline", "Record", "Region", "Sink", "Stage"]
