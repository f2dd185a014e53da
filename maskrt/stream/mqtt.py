"""MQTT events of a running pipeline: :class:`MqttSink` publishes records to a broker.

Topics (``SOURCE`` is the source id made topic-safe by :func:`maskrt.stream.sinks.safe_name`;
the message's ``source_id`` field has it unchanged)::

    PREFIX/SOURCE/faces    one message per scored region (a face, or the whole frame with
                           ``--regions frame``): the record's JSON fields (records.jsonl's), and
                           ``jpeg`` (base64) with ``jpeg=True``
    PREFIX/SOURCE/events   one message per dropped or failed frame, with its reason
    PREFIX/SOURCE/tracks   one message per track event of a tracked source (video, camera):
                           track_started, decision (the first, and each change), track_ended

``events`` chooses between people and faces: "tracks" (the default) publishes the track events,
and face records only of frames that are not tracked (photos); "faces" every face record and no
track events; "both" everything. A subscriber of a tracked camera so gets a few messages per
person, not one per frame.

A scored frame in which no face was found is not published (a camera watching an empty room
would send one message per frame saying nothing). Messages are QoS 1 (at least once).

What is published (each step counted in the summary's ``outputs``): every face decision by
default; with ``only_without_mask=P`` only ``without_mask`` decisions with ``p_without_mask >=
P`` (the others are ``mqtt_filtered``; dropped/failed events are not filtered; track events pass
when the track's decision is ``without_mask`` with ``p_track_without_mask >= P``); with ``min_interval_s=S`` at
most one message per source and topic every S seconds, on the sink's monotonic clock (the
others are ``mqtt_suppressed``). ``jpeg=True`` adds a small JPEG of the face (the region cut out
of the overlay when the pipeline explains, else out of the frame, at most ``jpeg_side`` pixels
a side) as base64 in ``jpeg``; the sink then asks the pipeline to keep frames.

Delivery policy when the broker goes away: scoring never waits for the broker. While the client
is disconnected, messages are held in a bounded buffer (``max_buffered``, 1000 by default; 0:
none) and sent, in order, as soon as the client has reconnected; when the buffer is full the
oldest message is dropped (``mqtt_dropped``), and messages still buffered at :meth:`close`
(the broker never came back) are dropped too. ``mqtt_buffered`` counts the messages that went
through the buffer. The client reconnects in the background with back-off (1 s doubling to 8 s,
the cap live sources use). Messages already handed to the socket when the connection broke stay
pending in the client and are sent again after a reconnect; those still unacknowledged at
:meth:`close` are ``mqtt_unacked``. At most ``max_pending`` messages wait for acknowledgement;
more are dropped. Every message the sink decides to send ends as exactly one of
``mqtt_published`` (acknowledged), ``mqtt_dropped`` or ``mqtt_unacked``.

``paho.mqtt.client`` is imported only when the sink is made (``pip install maskrt[mqtt]``).
"""

from __future__ import annotations

import base64
import json
import logging
import threading
import time
from collections import deque
from typing import Any, Callable

import numpy as np

from maskrt.labels import CLASSES, WITHOUT_MASK
from maskrt.stream.records import SCORED, Record, whole_frame
from maskrt.stream.sinks import Sink, safe_name

log = logging.getLogger("maskrt.mqtt")

DEFAULT_PORT = 1883
#: messages held while the broker is away, by default
DEFAULT_BUFFER = 1000
#: what ``events`` accepts: track events (and faces of untracked frames), faces, or both
EVENT_MODES = ("tracks", "faces", "both")
#: the longest side of a face JPEG, in pixels
JPEG_SIDE = 96


def _import_paho() -> Any:
    try:
        import paho.mqtt.client as mqtt
    except ImportError as err:
        raise ImportError("MQTT events need paho-mqtt 2.x: pip install maskrt[mqtt]") from err
    if not hasattr(mqtt, "CallbackAPIVersion"):  # paho-mqtt 1.x: other callback signatures
        raise ImportError("MQTT events need paho-mqtt>=2 (found an older one): "
                          "pip install maskrt[mqtt]")
    return mqtt


def parse_broker(spec: str) -> tuple[str, int]:
    """``HOST[:PORT]`` (``[::1]:1883`` for IPv6) -> (host, port); ValueError when malformed."""
    host, port = spec.strip(), DEFAULT_PORT
    if host.startswith("["):  # [IPv6]:PORT
        inner, _, rest = host[1:].partition("]")
        host, port_text = inner, rest[1:] if rest.startswith(":") else ""
    elif host.count(":") == 1:
        host, _, port_text = host.partition(":")
    else:
        port_text = ""
    if port_text:
        if not port_text.isdigit() or not 0 < int(port_text) < 65536:
            raise ValueError(f"--mqtt {spec!r}: expected HOST:PORT with PORT in 1..65535")
        port = int(port_text)
    if not host:
        raise ValueError(f"--mqtt {spec!r}: expected HOST:PORT, e.g. 127.0.0.1:1883")
    return host, port


def topic_of(prefix: str, record: Record) -> str | None:
    """The topic a record is published to, or None when it is not published."""
    if record.status == SCORED:
        if record.region_index is None:  # scored, but no face in the frame
            return None
        kind = "faces"
    else:
        kind = "events"
    return f"{prefix}/{safe_name(record.source_id)}/{kind}"


def face_jpeg(record: Record, frame: np.ndarray | None, overlay: np.ndarray | None,
              side: int = JPEG_SIDE, quality: int = 85) -> str | None:
    """The record's region as a base64 JPEG at most ``side`` pixels a side: cut out of
    ``overlay`` (frame-sized: the CAM drawn over the frame) when given, else out of ``frame``;
    None when there is neither or the box is empty."""
    import cv2

    image = overlay if overlay is not None else frame
    if image is None or record.box is None:
        return None
    if not whole_frame(record):
        h, w = image.shape[:2]
        x0, y0, x1, y1 = record.frame_box or record.box  # the frame's pixels, not the original's
        image = image[max(0, y0):min(h, y1), max(0, x0):min(w, x1)]
    if image.size == 0:
        return None
    scale = side / max(image.shape[:2])
    if scale < 1:
        size = (max(1, round(image.shape[1] * scale)), max(1, round(image.shape[0] * scale)))
        image = cv2.resize(image, size, interpolation=cv2.INTER_AREA)
    ok, data = cv2.imencode(".jpg", np.ascontiguousarray(image),
                            [cv2.IMWRITE_JPEG_QUALITY, quality])
    return base64.b64encode(data.tobytes()).decode("ascii") if ok else None


class MqttSink(Sink):
    """Publishes records to an MQTT broker (see the module's docstring for topics and policy).

    host, port: the broker. topic_prefix: the first topic level(s). connect_timeout_s: how long
    :meth:`open` waits for the first connection (then scoring starts anyway and the client keeps
    trying). flush_timeout_s: how long :meth:`close` waits for acknowledgements while connected.
    only_without_mask: publish only ``without_mask`` faces with ``p_without_mask`` >= this
    (None: every face). min_interval_s: at most one message per source and topic this often
    (0: no limit). jpeg: add the face as a small JPEG (base64 ``jpeg``, at most ``jpeg_side``
    px). max_buffered: messages held while disconnected (0: drop them). events: "tracks",
    "faces" or "both" (see the module's docstring). clock: the rate limit's
    clock (seconds; tests give their own).
    """

    def __init__(self, host: str, port: int = DEFAULT_PORT, topic_prefix: str = "maskrt", *,
                 client_id: str = "", keepalive: int = 30, max_pending: int = 10000,
                 connect_timeout_s: float = 5.0, flush_timeout_s: float = 5.0,
                 only_without_mask: float | None = None, min_interval_s: float = 0.0,
                 jpeg: bool = False, jpeg_side: int = JPEG_SIDE,
                 max_buffered: int = DEFAULT_BUFFER, events: str = "tracks",
                 clock: Callable[[], float] = time.monotonic) -> None:
        mqtt = _import_paho()
        _check_options(topic_prefix, only_without_mask, min_interval_s, max_buffered, jpeg_side)
        if events not in EVENT_MODES:
            raise ValueError(f"--mqtt-events {events!r}: expected one of {list(EVENT_MODES)}")
        self.events_mode = events
        self.host, self.port, self.topic_prefix = host, port, topic_prefix
        self.only_without_mask, self.min_interval_s = only_without_mask, float(min_interval_s)
        self.jpeg, self.jpeg_side, self.max_buffered = bool(jpeg), int(jpeg_side), max_buffered
        self.needs_frames = self.jpeg  # the frame to cut the face from, without an overlay
        self._clock = clock
        # MQTT_ERR_NO_CONN: the socket broke under publish(); paho keeps the QoS 1 message and
        # sends it again after reconnecting, so it is pending, not dropped.
        self._kept = (int(mqtt.MQTT_ERR_SUCCESS), int(mqtt.MQTT_ERR_NO_CONN))
        self._keepalive = keepalive
        self._connect_timeout_s = connect_timeout_s
        self._flush_timeout_s = flush_timeout_s
        self._lock = threading.Lock()  # the counters and message ids (paho's callbacks take it)
        self._send_lock = threading.Lock()  # the buffer, and the order of publish() calls
        self._connected = threading.Event()
        self._pending: set[int] = set()  # sent, not yet acknowledged (message ids)
        self._acked_early: set[int] = set()  # acknowledged before publish() returned its id
        self._buffer: deque[tuple[str, str]] = deque()  # (topic, payload) while disconnected
        self._last_sent: dict[tuple[str, str], float] = {}  # (source, topic kind) -> clock
        self._overlay: tuple[str, int, Any] | None = None  # the last frame's overlay (faces)
        self._full_logged = False
        self.published = self.dropped = self.disconnects = 0
        self.buffered = self.filtered = self.suppressed = 0
        self._client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=client_id,
                                   protocol=mqtt.MQTTv311)
        self._client.max_queued_messages_set(max_pending)
        self._client.reconnect_delay_set(min_delay=1, max_delay=8)
        self._client.on_connect = self._on_connect
        self._client.on_disconnect = self._on_disconnect
        self._client.on_publish = self._on_publish
        self._started = False
        self._closing = False  # our own disconnect at close is not an outage

    @property
    def broker(self) -> str:
        return f"mqtt://{self.host}:{self.port}/{self.topic_prefix}"

    @property
    def connected(self) -> bool:
        return self._connected.is_set()

    # ------------------------------------------------------------------ paho callbacks

    def _on_connect(self, client: Any, userdata: Any, flags: Any, reason_code: Any,
                    properties: Any) -> None:
        if reason_code.is_failure:
            log.warning("%s: connection refused: %s", self.broker, reason_code)
            return
        log.info("%s: connected", self.broker)
        self._connected.set()
        # What was held during the outage goes first (publish() from paho's own thread is
        # fine: it only queues the packet); write() drains too, under the same lock.
        self._drain()

    def _on_disconnect(self, client: Any, userdata: Any, flags: Any, reason_code: Any,
                       properties: Any) -> None:
        if self._connected.is_set() and not self._closing:
            log.warning("%s: disconnected (%s); buffering events (at most %d) until "
                        "reconnected", self.broker, reason_code, self.max_buffered)
            with self._lock:
                self.disconnects += 1
        self._connected.clear()

    def _on_publish(self, client: Any, userdata: Any, mid: int, reason_code: Any,
                    properties: Any) -> None:
        # Called from paho's thread, possibly while paho holds its own message lock, so this
        # takes only ours (and write() never holds ours while calling into paho).
        with self._lock:
            if mid in self._pending:
                self._pending.discard(mid)
                self.published += 1
            else:
                self._acked_early.add(mid)

    # ------------------------------------------------------------------ the sink protocol

    def open(self, pipeline: Any) -> None:
        self._start()
        # The first records of a run should not wait in the buffer only because the TCP
        # handshake was slower than the first frame; a broker that is down does not hold the
        # run longer.
        if not self._connected.wait(self._connect_timeout_s):
            log.warning("%s: not connected after %g s; scoring goes on, events are buffered "
                        "(at most %d) until the broker answers", self.broker,
                        self._connect_timeout_s, self.max_buffered)

    def _start(self) -> None:
        if self._started:
            return
        self._started = True
        # connect_async + loop_start: paho's thread connects, and reconnects after a loss,
        # with the back-off above; nothing here blocks on the network.
        self._client.connect_async(self.host, self.port, keepalive=self._keepalive)
        self._client.loop_start()

    def write(self, record: Record, frame: np.ndarray | None = None) -> None:
        if record.overlay is not None and self.jpeg:  # later faces of the frame share it
            self._overlay = (record.source_id, record.frame_index, record.overlay)
        topic = topic_of(self.topic_prefix, record)
        if topic is None:
            return
        if not self._wanted(record, topic):
            return
        if not self._started:  # used without a pipeline
            self._start()
        entry = record.to_dict()
        if self.jpeg and record.status == SCORED:
            entry["jpeg"] = face_jpeg(record, frame, self._overlay_of(record), self.jpeg_side)
        self._send(topic, json.dumps(entry, ensure_ascii=False))

    def events(self, events: list[dict[str, Any]]) -> None:
        if self.events_mode == "faces":
            return
        for event in events:
            source_id = event["source_id"]
            if not self._pass(event["track_label"], event["p_track_without_mask"]):
                continue
            topic = f"{self.topic_prefix}/{safe_name(source_id)}/tracks"
            if not self._rate_ok(source_id, topic):
                continue
            if not self._started:
                self._start()
            self._send(topic, json.dumps(event, ensure_ascii=False))

    def _wanted(self, record: Record, topic: str) -> bool:
        """Faces: whether the mode publishes them, the filter; then the per-source rate limit;
        counts what the last two stop."""
        if record.status == SCORED:
            if self.events_mode == "tracks" and record.track_frames is not None:
                return False  # a tracked face: its person's events say it
            if not self._pass(record.label, record.p_without_mask):
                return False
        return self._rate_ok(record.source_id, topic)

    def _pass(self, label: str | None, p_without_mask: float | None) -> bool:
        """The only_without_mask filter (counted when it stops a message)."""
        if self.only_without_mask is None or (
                label == CLASSES[WITHOUT_MASK] and (p_without_mask or 0.0) >= self.only_without_mask):
            return True
        with self._lock:
            self.filtered += 1
        return False

    def _rate_ok(self, source_id: str, topic: str) -> bool:
        if self.min_interval_s > 0:
            key, now = (source_id, topic.rsplit("/", 1)[1]), self._clock()
            last = self._last_sent.get(key)
            if last is not None and now - last < self.min_interval_s:
                with self._lock:
                    self.suppressed += 1
                return False
            self._last_sent[key] = now
        return True

    def _overlay_of(self, record: Record) -> Any:
        if record.overlay is not None:
            return record.overlay
        kept = self._overlay
        if kept is not None and kept[:2] == (record.source_id, record.frame_index):
            return kept[2]
        return None

    def _send(self, topic: str, payload: str) -> None:
        with self._send_lock:
            if not self._connected.is_set():
                self._hold(topic, payload)
                return
            self._drain_locked()  # what the outage left goes out first
            self._publish(topic, payload)

    def _hold(self, topic: str, payload: str) -> None:
        """Buffer a message while disconnected (the oldest is dropped when full)."""
        with self._lock:
            if self.max_buffered <= 0:
                self.dropped += 1
                return
            if len(self._buffer) >= self.max_buffered:
                self._buffer.popleft()
                self.dropped += 1
                if not self._full_logged:
                    self._full_logged = True
                    log.warning("%s: event buffer full (%d); dropping the oldest events",
                                self.broker, self.max_buffered)
            self._buffer.append((topic, payload))
            self.buffered += 1

    def _drain(self) -> None:
        with self._send_lock:
            self._drain_locked()

    def _drain_locked(self) -> None:
        while self._buffer and self._connected.is_set():
            topic, payload = self._buffer.popleft()
            self._publish(topic, payload)

    def _publish(self, topic: str, payload: str) -> None:
        info = self._client.publish(topic, payload, qos=1)
        with self._lock:
            if info.rc not in self._kept:  # the pending bound is reached
                self.dropped += 1
                return
            if info.mid in self._acked_early:
                self._acked_early.discard(info.mid)
                self.published += 1
            else:
                self._pending.add(info.mid)

    def flush(self, timeout_s: float) -> None:
        """Sends what is buffered and waits (at most ``timeout_s``) until every sent message is
        acknowledged, while connected: a broker that is gone cannot acknowledge, so waiting for
        it is pointless."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline and self._connected.is_set():
            self._drain()
            with self._lock:
                if not self._pending and not self._buffer:
                    return
            time.sleep(0.02)

    def close(self) -> dict[str, Any]:
        if self._started:
            self.flush(self._flush_timeout_s)
            self._closing = True
            self._client.disconnect()
            self._client.loop_stop()
            self._started = False
        with self._send_lock, self._lock:
            unsent = len(self._buffer)  # the broker never came back for these
            self._buffer.clear()
            self.dropped += unsent
            unacked = len(self._pending)
            part = {"mqtt": self.broker, "mqtt_published": self.published,
                    "mqtt_dropped": self.dropped, "mqtt_unacked": unacked,
                    "mqtt_disconnects": self.disconnects, "mqtt_buffered": self.buffered,
                    "mqtt_filtered": self.filtered, "mqtt_suppressed": self.suppressed}
        if self.dropped or unacked:
            log.warning("%s: %d events dropped (%d still buffered at the end), %d "
                        "unacknowledged at close", self.broker, self.dropped, unsent, unacked)
        return part


def _check_options(topic_prefix: str, only_without_mask: float | None, min_interval_s: float,
                   max_buffered: int, jpeg_side: int) -> None:
    if not topic_prefix or any(c in topic_prefix for c in "#+") or topic_prefix[-1] == "/":
        raise ValueError(f"--mqtt-topic {topic_prefix!r}: expected a topic prefix without "
                         "wildcards (+, #) or a trailing /")
    if only_without_mask is not None and not 0.0 <= only_without_mask <= 1.0:
        raise ValueError(f"--mqtt-only-without-mask {only_without_mask}: expected a "
                         "probability in [0, 1]")
    if not min_interval_s >= 0:
        raise ValueError(f"--mqtt-min-interval {min_interval_s}: expected seconds >= 0")
    if max_buffered < 0:
        raise ValueError(f"--mqtt-buffer {max_buffered}: expected a count >= 0")
    if jpeg_side < 8:
        raise ValueError(f"jpeg_side {jpeg_side}: expected at least 8 pixels")
