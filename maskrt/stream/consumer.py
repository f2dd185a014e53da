"""The consumer side of a pipeline: every record the caller takes goes to every sink, with the
track events its frame made; at the end of the stream the tracks still open end and the sinks
close, once, their parts of the summary's ``outputs`` gathered."""

from __future__ import annotations

from typing import Any, Callable, Sequence

from maskrt.stream.records import Record
from maskrt.stream.sinks import Sink


class SinkFanout:
    """Hands records and track events to ``sinks``; ``final_events`` gives the events of the
    tracks still open when the stream ends."""

    def __init__(self, sinks: Sequence[Sink],
                 final_events: Callable[[], list[dict[str, Any]]]) -> None:
        self.sinks = list(sinks)
        self._final_events = final_events
        self.parts: dict[str, Any] = {}
        self.closed = False
        #: the track events made when the stream ended (the others come with the records)
        self.final_events: list[dict[str, Any]] = []

    def deliver(self, record: Record) -> None:
        for sink in self.sinks:
            sink.write(record, record.frame)
            if record.events:
                sink.events(record.events)

    def end(self) -> None:
        """The end of the stream: open tracks end, their events go out, the sinks close."""
        if self.closed:
            return
        self.closed = True
        self.final_events = self._final_events()
        for sink in self.sinks:
            if self.final_events:
                sink.events(self.final_events)
        for sink in self.sinks:
            part = sink.close()
            if part:
                self.parts.update(part)
