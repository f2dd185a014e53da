"""What ``maskrt score`` tells while it runs and when it ends: the progress line on stderr and
the summary on stdout."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any, TextIO


class Progress:
    """A status line on stderr: total frames/s, scored/dropped/failed, and per source frames/s,
    dropped and failed (the first 8 sources; a count of the rest)."""

    def __init__(self, pipeline: Any, stream: TextIO, interval: float) -> None:
        self.pipeline = pipeline
        self.stream = stream
        self.interval = interval
        self.tty = bool(getattr(stream, "isatty", lambda: False)())
        self._next = time.perf_counter() + interval
        self._done = False

    def maybe_print(self) -> None:
        # Once the pipeline has finished, the final line is finish()'s, printed once.
        if (self.interval <= 0 or self._done or self.pipeline.finished
                or time.perf_counter() < self._next):
            return
        self._next = time.perf_counter() + self.interval
        self._print()

    def _print(self) -> None:
        from maskrt.stream.records import DROPPED, FAILED, SCORED

        c = self.pipeline.counters()
        t = c["total"]
        parts = [f"[{c['elapsed_s']:6.1f}s] {t['read']} read, {t[SCORED]} scored, "
                 f"{t[DROPPED]} dropped, {t[FAILED]} failed, {c['fps']:.1f} fr/s"]
        items = list(c["sources"].items())
        for source_id, s in items[:8]:
            short = source_id if len(source_id) <= 24 else "..." + source_id[-21:]
            extra = f" {s['state']}" if s["state"] not in ("reading", "streaming", "watching") else ""
            parts.append(f"{short}: {s['fps']:.1f}/s d{s[DROPPED]} f{s[FAILED]}{extra}")
        if len(items) > 8:
            parts.append(f"+{len(items) - 8} more")
        line = " | ".join(parts)
        if self.tty:
            self.stream.write("\r\x1b[K" + line)
        else:
            self.stream.write(line + "\n")
        self.stream.flush()

    def finish(self) -> None:
        if self.interval <= 0 or self._done:
            return
        self._done = True
        self._print()  # the final counts, however short the run was
        if self.tty:
            self.stream.write("\n")


def print_summary(summary: dict[str, Any], out: Path, summary_written: bool = True) -> None:
    from maskrt.stream.records import DROPPED, FAILED, SCORED

    counts = summary["counts"]
    latency = summary["latency_ms"]
    fps = summary["throughput_fps"]
    print(f"{counts['read']} frames read: {counts[SCORED]} scored, {counts[DROPPED]} dropped, "
          f"{counts[FAILED]} failed ({'accounting ok' if summary['accounting_ok'] else 'ACCOUNTING MISMATCH'})")
    if counts[SCORED]:
        print(f"throughput {fps} frames/s over {summary['flowing_s']} s of frames flowing; "
              f"latency ms p50 {latency['p50']} p95 {latency['p95']} p99 {latency['p99']}")
    waiting = {s: v["waiting_s"] for s, v in summary["sources"].items() if v.get("waiting_s")}
    if summary["idle_s"] >= 0.5 or waiting:
        print(f"idle {summary['idle_s']} s (no frame flowing); waiting on sources (s): {waiting}")
    print(f"labels: {summary['labels']}; backend: {summary['backend']}")
    if summary.get("skipped_files"):
        print(f"skipped {summary['skipped_files']} files that are not images or videos "
              f"(by extension: .txt, .xml, .json, ...)")
    outputs = summary["outputs"]
    if "mqtt" in outputs:
        print(f"mqtt {outputs['mqtt']}: {outputs['mqtt_published']} published, "
              f"{outputs['mqtt_dropped']} dropped, {outputs['mqtt_unacked']} unacknowledged, "
              f"{outputs['mqtt_buffered']} buffered while disconnected, "
              f"{outputs['mqtt_filtered']} filtered, {outputs['mqtt_suppressed']} rate-limited")
    if "tracks" in outputs:
        print(f"people: {outputs['tracks_ended']} tracks {outputs['track_labels']}; faces "
              f"classified {summary['classified_faces']}, reused {summary['reused_faces']}; "
              f"wrote {outputs['tracks']} and {outputs['events']}")
    if outputs.get("records_lost"):
        print(f"records lost: {outputs['records_lost']} could not be written to "
              f"{outputs['records']}")
    print(f"wrote {out / 'records.jsonl'}"
          + (f" and {out / 'summary.json'}" if summary_written else " (not the summary)"))
    lost = lost_cameras(summary)
    if lost is not None:  # last: a run whose cameras died must not end looking like a done job
        print(lost)


#: the kinds of source that reconnect (and are lost when their reconnect policy gives up)
LIVE_KINDS = ("camera", "stream")


def lost_cameras(summary: dict[str, Any]) -> str | None:
    """One line naming the cameras and streams that were lost (their reconnect policy gave up,
    or their reader failed), saying whether that was all of them; None when none was."""
    live = {s: v for s, v in summary["sources"].items() if v.get("kind") in LIVE_KINDS}
    lost = [s for s, v in live.items() if v["state"] == "failed"]
    if not lost:
        return None
    policy = (summary.get("settings") or {}).get("reconnect")
    gave_up = "gave up reconnecting" + (f" (--reconnect {policy})" if policy else "")
    if len(live) == 1:
        which = f"the only camera/stream, {lost[0]},"
    elif len(lost) == len(live):
        which = f"all {len(live)} cameras/streams"
    else:
        which = f"{len(lost)} of {len(live)} cameras/streams"
    named = "" if len(live) == 1 else ": " + ", ".join(lost[:3]) + (
        f" and {len(lost) - 3} more" if len(lost) > 3 else "")
    why = live[lost[0]].get("last_error")
    return f"LOST: {which} {gave_up}{named}" + (f"; last error: {why}" if why else "")
