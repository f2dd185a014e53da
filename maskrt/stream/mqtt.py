"""MQTT events of a running pipeline: :class:`MqttSink` publishes records to a broker.

Topics (``SOURCE`` is the source id made topic-safe by :func:`maskrt.stream.sinks.safe_name`;
the message's ``source_id`` field has it unchanged)::

    PREFIX/SOURCE/faces    one message per scored region (a face, or the whole frame with
                           ``--regions frame``): the record's JSON fields (records.jsonl's)
    PREFIX/SOURCE/events   one message per dropped or failed frame, with its reason

A scored frame in which no face was found is not published (a camera watching an empty room
would send one message per frame saying nothing). Messages are QoS 1 (at least once).

Delivery policy when the broker goes away: scoring never waits for the broker. While the client
is disconnected, messages are not queued but counted as dropped (``mqtt_dropped``): a queue
would only delay the same loss on a long outage and grow without bound on a camera feed, and
events hours late are rarely worth more than a count of what was missed. The client reconnects
in the background with back-off (1 s doubling to 8 s, the cap live sources use) and publishing
resumes. Messages already handed to the socket when the connection broke stay pending and are
sent again after a reconnect; those still unacknowledged at :meth:`close` are ``mqtt_unacked``.
At most ``max_pending`` messages wait for acknowledgement; more are dropped.

``paho.mqtt.client`` is imported only when the sink is made (``pip install maskrt[mqtt]``).
"""

from __future__ import annotations

import json
import logging
import threading
import time
from typing import Any

import numpy as np

from maskrt.stream.records import SCORED, Record
from maskrt.stream.sinks import Sink, safe_name

log = logging.getLogger("maskrt.mqtt")

DEFAULT_PORT = 1883


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


class MqttSink(Sink):
    """Publishes records to an MQTT broker (see the module's docstring for topics and policy).

    host, port: the broker. topic_prefix: the first topic level(s). connect_timeout_s: how long
    :meth:`open` waits for the first connection (then scoring starts anyway and the client keeps
    trying). flush_timeout_s: how long :meth:`close` waits for acknowledgements while connected.
    """

    def __init__(self, host: str, port: int = DEFAULT_PORT, topic_prefix: str = "maskrt", *,
                 client_id: str = "", keepalive: int = 30, max_pending: int = 10000,
                 connect_timeout_s: float = 5.0, flush_timeout_s: float = 5.0) -> None:
        mqtt = _import_paho()
        if not topic_prefix or any(c in topic_prefix for c in "#+") or topic_prefix[-1] == "/":
            raise ValueError(f"--mqtt-topic {topic_prefix!r}: expected a topic prefix without "
                             "wildcards (+, #) or a trailing /")
        self.host, self.port, self.topic_prefix = host, port, topic_prefix
        # MQTT_ERR_NO_CONN: the socket broke under publish(); paho keeps the QoS 1 message and
        # sends it again after reconnecting, so it is pending, not dropped.
        self._kept = (int(mqtt.MQTT_ERR_SUCCESS), int(mqtt.MQTT_ERR_NO_CONN))
        self._keepalive = keepalive
        self._connect_timeout_s = connect_timeout_s
        self._flush_timeout_s = flush_timeout_s
        self._lock = threading.Lock()
        self._connected = threading.Event()
        self._pending: set[int] = set()  # sent, not yet acknowledged (message ids)
        self._acked_early: set[int] = set()  # acknowledged before publish() returned its id
        self.published = self.dropped = self.disconnects = 0
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

    def _on_disconnect(self, client: Any, userdata: Any, flags: Any, reason_code: Any,
                       properties: Any) -> None:
        if self._connected.is_set() and not self._closing:
            log.warning("%s: disconnected (%s); dropping events until reconnected",
                        self.broker, reason_code)
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
        # The first records of a run should not be dropped only because the TCP handshake was
        # slower than the first frame; a broker that is down does not hold the run longer.
        if not self._connected.wait(self._connect_timeout_s):
            log.warning("%s: not connected after %g s; scoring goes on, events are dropped "
                        "until the broker answers", self.broker, self._connect_timeout_s)

    def _start(self) -> None:
        if self._started:
            return
        self._started = True
        # connect_async + loop_start: paho's thread connects, and reconnects after a loss,
        # with the back-off above; nothing here blocks on the network.
        self._client.connect_async(self.host, self.port, keepalive=self._keepalive)
        self._client.loop_start()

    def write(self, record: Record, frame: np.ndarray | None = None) -> None:
        topic = topic_of(self.topic_prefix, record)
        if topic is None:
            return
        if not self._started:  # used without a pipeline
            self._start()
        if not self._connected.is_set():
            with self._lock:
                self.dropped += 1
            return
        payload = json.dumps(record.to_dict(), ensure_ascii=False)
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
        """Waits (at most ``timeout_s``) until every sent message is acknowledged, while
        connected: a broker that is gone cannot acknowledge, so waiting for it is pointless."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline and self._connected.is_set():
            with self._lock:
                if not self._pending:
                    return
            time.sleep(0.02)

    def close(self) -> dict[str, Any]:
        if self._started:
            self.flush(self._flush_timeout_s)
            self._closing = True
            self._client.disconnect()
            self._client.loop_stop()
            self._started = False
        with self._lock:
            unacked = len(self._pending)
            part = {"mqtt": self.broker, "mqtt_published": self.published,
                    "mqtt_dropped": self.dropped, "mqtt_unacked": unacked,
                    "mqtt_disconnects": self.disconnects}
        if self.dropped or unacked:
            log.warning("%s: %d events dropped while disconnected, %d unacknowledged at close",
                        self.broker, self.dropped, unacked)
        return part
