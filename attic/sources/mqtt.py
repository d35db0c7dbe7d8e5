"""The MQTT source of one stream: a paho-mqtt 2.x client that timestamps and enqueues.

``on_message`` runs on paho's network thread and is the budget to protect: it takes the
reception time first, then puts a plain tuple ``(ts_us, topic, payload, qos, retain, token)``
on the writer's bounded queue, and does nothing else. When the queue is full it waits
(backpressure), so with QoS >= 1 the broker holds the rest.

QoS >= 1 streams use a persistent session (fixed client id, clean start off, a session
expiry) and manual acknowledgement: the writer calls ``ack(tokens)`` after the commit that
holds the messages. A token packs ``mid | qos << 16 | generation << 18``; acks are sent
only for messages of the current connection, since after a reconnect the broker redelivers
what was not acknowledged (at-least-once: a duplicate row is possible, a lost one is not).

paho is imported only here and in paho_tuning.py: its API changes between major versions.
"""

from __future__ import annotations

import logging
import os
import queue
import socket
import ssl
import sys
import threading
import time
from collections.abc import Callable

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from paho.mqtt.subscribeoptions import SubscribeOptions

from attic.config import Broker, client_id_for
from attic.sources.paho_tuning import TunedClient

log = logging.getLogger("attic.mqtt")

# Benchmarks only: ack on receipt like a plain subscriber, to measure what ack-after-commit costs.
# It gives up the delivery guarantee, so it is an environment variable, not a config key.
BENCH_AUTO_ACK = os.environ.get("ATTIC_BENCH_AUTO_ACK") == "1"

EventSink = Callable[[str, str], None]  # (kind, detail) → an attic_events row


def make_client(broker: Broker, client_id: str, persistent: bool, manual_ack: bool = False) -> mqtt.Client:
    """Given broker settings, return a configured (not yet connected) paho client."""
    v5 = broker.protocol == "5"
    client = TunedClient(
        CallbackAPIVersion.VERSION2,
        client_id=client_id,
        protocol=mqtt.MQTTv5 if v5 else mqtt.MQTTv311,
        clean_session=None if v5 else not persistent,
        manual_ack=manual_ack,
    )
    if broker.username is not None:
        client.username_pw_set(broker.username, broker.password)
    if broker.tls is not None:
        tls = broker.tls
        client.tls_set(ca_certs=str(tls.ca_file) if tls.ca_file else None,
                       certfile=str(tls.cert_file) if tls.cert_file else None,
                       keyfile=str(tls.key_file) if tls.key_file else None,
                       cert_reqs=ssl.CERT_NONE if tls.insecure else ssl.CERT_REQUIRED)
        if tls.insecure:
            client.tls_insecure_set(True)
    client.reconnect_delay_set(1, 60)
    return client


def connect_async(client: mqtt.Client, broker: Broker, persistent: bool) -> None:
    """Start connecting (the network loop does the rest), with the session settings for ``persistent``."""
    if broker.protocol == "5":
        properties = Properties(PacketTypes.CONNECT)
        properties.SessionExpiryInterval = int(broker.session_expiry_s) if persistent else 0
        client.connect_async(broker.host, broker.port, int(broker.keepalive_s),
                             clean_start=not persistent, properties=properties)
    else:
        client.connect_async(broker.host, broker.port, int(broker.keepalive_s))


class MqttSource:
    """Subscribes one stream's topic and feeds its writer queue."""

    def __init__(self, stream: str, topic: str, qos: int, broker: Broker, records: queue.Queue,
                 event: EventSink, stall_after_s: float | None = None, worker: int | None = None,
                 workers: int = 1):
        self.stream = stream
        self.qos = qos
        self.broker = broker
        self.queue = records
        self.event = event
        self.stall_after_s = stall_after_s
        self.persistent = qos > 0
        self.manual_ack = self.persistent and not BENCH_AUTO_ACK
        self.topic = f"$share/attic-{stream}/{topic}" if workers > 1 else topic
        self.client_id = client_id_for(broker.client_id, stream, worker)
        self.address = f"{broker.host}:{broker.port}"
        self.received = 0
        self.dropped = 0        # QoS 0 messages refused while stopping (counted, never silent)
        self.reconnects = 0
        self.last_message = time.time_ns() // 1000  # µs; read by the watchdog
        self._generation = 0    # bumps on every connect; see ack()
        self._connected = False
        self._down_logged = False
        self._intake = True
        self._closing = threading.Event()
        self.subscribed = threading.Event()  # the broker confirmed the subscription on this connection
        self.session_present = False         # the last connect resumed a session the broker held
        self.subscribe_on_connect = True     # off for a drain (attic.workers): it only empties the session
        self.unsubscribe: list[str] = []     # topics an earlier config subscribed this session to (Stream)
        self._watchdog: threading.Thread | None = None
        self.client = make_client(broker, self.client_id, self.persistent, manual_ack=self.manual_ack)
        self.client.on_connect = self._on_connect
        self.client.on_connect_fail = self._on_connect_fail
        self.client.on_disconnect = self._on_disconnect
        self.client.on_subscribe = self._on_subscribe
        self.client.on_message = self._on_message

    # ------------------------------------------------------------------ life cycle

    def start(self) -> None:
        connect_async(self.client, self.broker, self.persistent)
        self.client.loop_start()
        if self.stall_after_s:
            self._watchdog = threading.Thread(target=self._watch, name=f"attic-watchdog-{self.stream}")
            self._watchdog.start()

    def stop_intake(self) -> None:
        """Take no more messages: from now on QoS >= 1 messages stay unacked for redelivery."""
        self._intake = False

    def close(self) -> None:
        """Disconnect (the persistent session stays on the broker) and end the network thread."""
        self._closing.set()
        self.client.disconnect()
        self.client.loop_stop()
        if self._watchdog is not None:
            self._watchdog.join()

    # ------------------------------------------------------------------ the hot path

    def _on_message(self, client: mqtt.Client, userdata: object, message: mqtt.MQTTMessage) -> None:
        ts_us = time.time_ns() // 1000  # reception time: the first thing done
        qos = message.qos
        token = message.mid | qos << 16 | self._generation << 18 if qos else 0
        item = (ts_us, message.topic, message.payload, qos, message.retain, token)
        self.received += 1
        self.last_message = ts_us
        if self._intake:
            try:
                self.queue.put_nowait(item)
                return
            except queue.Full:
                pass
            while self._intake:  # backpressure: the writer is behind or the disk is failing
                try:
                    self.queue.put(item, timeout=0.5)
                    return
                except queue.Full:
                    continue
        if not qos:
            self.dropped += 1  # QoS 0 while stopping: the protocol keeps no copy; count it

    def ack(self, tokens: list[int]) -> None:
        """Acknowledge committed messages (called by the writer thread after a commit)."""
        generation = self._generation
        by_qos: dict[int, list[int]] = {1: [], 2: []}
        for token in tokens:
            if token >> 18 == generation:  # acks of an earlier connection: the broker redelivers those
                by_qos[(token >> 16) & 3].append(token & 0xFFFF)
        for qos, mids in by_qos.items():
            if mids:
                self.client.ack_batch(mids, qos)

    # ------------------------------------------------------------------ connection state

    def _on_connect(self, client, userdata, flags, reason_code, properties) -> None:
        if reason_code.is_failure:
            if not self._down_logged:
                log.error("stream %s: %s refused the connection (%s); retrying with backoff up to 60s",
                          self.stream, self.address, reason_code)
                self.event("disconnected", f"{self.address} refused: {reason_code}")
                self._down_logged = True
            return
        self._generation += 1
        self._connected = True
        self._down_logged = False
        self.last_message = time.time_ns() // 1000
        self.session_present = bool(flags.session_present)
        resumed = " (session resumed)" if flags.session_present else ""
        log.info("stream %s: connected to %s as %s%s", self.stream, self.address, self.client_id, resumed)
        self.event("connected", f"{self.address} as {self.client_id}{resumed}")
        if not self.subscribe_on_connect:
            return
        if self.broker.protocol == "5":
            # retainHandling=1: retained messages only for a new subscription, not on every resume
            client.subscribe(self.topic, options=SubscribeOptions(qos=self.qos, retainHandling=1))
        else:
            client.subscribe(self.topic, self.qos)
        if self.unsubscribe and self.session_present:
            # the stream's topic changed: a persistent session keeps the old subscription (and would
            # keep receiving its messages) until it is removed; messages already queued still arrive
            stale, self.unsubscribe = self.unsubscribe, []
            client.unsubscribe(stale)
            log.info("stream %s: unsubscribed its session from the earlier topic %s", self.stream,
                     ", ".join(stale))
            self.event("unsubscribed", ", ".join(stale))

    def _on_subscribe(self, client, userdata, mid, reason_codes, properties) -> None:
        for code in reason_codes:
            if code.is_failure:
                log.error("stream %s: %s refused the subscription to %s (%s); check the broker's ACL",
                          self.stream, self.address, self.topic, code)
                self.event("subscribe_failed", f"{self.topic}: {code}")
            else:
                log.info("stream %s: subscribed to %s (QoS %d)", self.stream, self.topic, code.value)
                self.event("subscribed", f"{self.topic} qos {code.value}")
                self.subscribed.set()

    def _on_connect_fail(self, client, userdata) -> None:
        # paho calls this from inside its `except OSError`, so the error is still at hand.
        error = sys.exc_info()[1]
        if not self._down_logged:
            why = getattr(error, "strerror", None) or error or "connection failed"
            log.error("stream %s: cannot connect to %s (%s); retrying with backoff up to 60s",
                      self.stream, self.address, why)
            self.event("disconnected", f"cannot connect to {self.address}: {why}")
            self._down_logged = True

    def _on_disconnect(self, client, userdata, flags, reason_code, properties) -> None:
        was_connected, self._connected = self._connected, False
        self.subscribed.clear()
        if self._closing.is_set():
            log.info("stream %s: disconnected from %s", self.stream, self.address)
            self.event("disconnected", f"{self.address}: stopped")
            return
        if was_connected:
            self.reconnects += 1
            log.warning("stream %s: disconnected from %s (%s); reconnecting with backoff up to 60s",
                        self.stream, self.address, reason_code)
            self.event("disconnected", f"{self.address}: {reason_code}")
            self._down_logged = True

    # ------------------------------------------------------------------ stall watchdog

    def _watch(self) -> None:
        """No message for ``stall_after`` while connected: record it and force a reconnect."""
        limit_us = int(self.stall_after_s * 1_000_000)
        while not self._closing.wait(min(1.0, self.stall_after_s / 4)):
            if not self._connected:
                continue
            silent_us = time.time_ns() // 1000 - self.last_message
            if silent_us < limit_us:
                continue
            log.warning("stream %s: no message for %.0fs on %s; reconnecting and resubscribing",
                        self.stream, silent_us / 1e6, self.topic)
            self.event("stalled", f"no message for {silent_us / 1e6:.0f}s on {self.topic}; reconnecting")
            self.last_message = time.time_ns() // 1000
            sock = self.client.socket()
            if sock is not None:
                try:  # the network loop sees the connection drop and reconnects by itself
                    sock.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass


class BrokerDropWatch:
    """Watches a broker's own drop counter and records every increase in the streams it serves.

    A broker silently drops QoS 1 messages for a subscriber whose queue is full (Mosquitto's
    default ``max_queued_messages 1000``), before Attic ever sees them. Mosquitto publishes the
    total as ``$SYS/broker/publish/messages/dropped``; an increase becomes a ``broker_dropped``
    event in every stream on that broker, so the gap is in the data. One small QoS 0 client per
    broker keeps the streams' ``on_message`` free of topic checks.
    """

    def __init__(self, broker: Broker, topic: str, sinks: list[EventSink], name: str):
        self.broker = broker
        self.topic = topic
        self.sinks = sinks
        self.name = name
        self.last: int | None = None
        self.dropped = 0  # increases seen while running
        client_id = f"{client_id_for(broker.client_id, name)}-{time.time_ns() % 1_000_000}"
        self.client = make_client(broker, client_id, persistent=False)
        self.client.on_connect = self._on_connect
        self.client.on_message = self._on_message

    def start(self) -> None:
        connect_async(self.client, self.broker, persistent=False)
        self.client.loop_start()

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()

    def _on_connect(self, client, userdata, flags, reason_code, properties) -> None:
        if not reason_code.is_failure:
            client.subscribe(self.topic, 0)

    def _on_message(self, client, userdata, message) -> None:
        try:
            total = int(float(message.payload.decode()))
        except (UnicodeDecodeError, ValueError):
            return
        if self.last is not None and total > self.last:
            increase = total - self.last
            self.dropped += increase
            log.warning("broker %s:%d dropped %d messages (total %d) before Attic received them: a client's "
                        "queue was full; raise max_queued_messages (see README: Broker settings)",
                        self.broker.host, self.broker.port, increase, total)
            for sink in self.sinks:
                sink("broker_dropped", f"{self.broker.host}:{self.broker.port} dropped {increase} "
                                       f"(total {total})")
        self.last = total


class Publisher:
    """A plain publishing client (the simulator; small JSON reports) that knows what the broker has.

    ``acked`` counts messages the broker acknowledged (QoS 0: written to the socket), so a
    caller can say "sent" only of what the broker holds. ``max_inflight`` stays at or below
    the broker's receive maximum (Mosquitto: 20); beyond it Mosquitto silently drops QoS 2.
    """

    def __init__(self, broker: Broker, client_id: str = "", max_inflight: int = 20):
        self.broker = broker
        self.published = 0  # publish() calls the client took
        self.acked = 0      # acknowledged by the broker
        self.errors = 0     # refused by the client, or by the broker in its PUBACK
        self._answered = 0  # acked + refused by the broker
        self.last_error = ""  # why the last connection attempt failed
        self.connected = threading.Event()
        self.client = make_client(broker, client_id, persistent=False)
        self.client.max_inflight_messages_set(max_inflight)
        self.client.max_queued_messages_set(0)  # queue without limit; the caller paces with pending()
        self.client.on_connect = self._on_connect
        self.client.on_connect_fail = self._on_connect_fail
        self.client.on_disconnect = lambda *args: self.connected.clear()
        self.client.on_publish = self._on_publish

    def start(self, timeout: float = 10.0) -> bool:
        """Connect in the background; return whether the broker accepted us within ``timeout``."""
        connect_async(self.client, self.broker, persistent=False)
        self.client.loop_start()
        return self.connected.wait(timeout)

    def publish(self, topic: str, payload: bytes, qos: int = 1, retain: bool = False) -> bool:
        info = self.client.publish(topic, payload, qos=qos, retain=retain)
        if info.rc not in (mqtt.MQTT_ERR_SUCCESS, mqtt.MQTT_ERR_NO_CONN):  # NO_CONN: queued for the reconnect
            self.errors += 1
            return False
        self.published += 1
        return True

    def pending(self) -> int:
        """Messages taken but not yet acknowledged by the broker."""
        return self.published - self._answered

    def flush(self, timeout: float = 30.0) -> bool:
        """Wait until the broker acknowledged everything published; False on timeout."""
        deadline = time.monotonic() + timeout
        while self.pending() > 0 and time.monotonic() < deadline:
            time.sleep(0.01)
        return self.pending() <= 0

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()

    def _on_connect(self, client, userdata, flags, reason_code, properties) -> None:
        if reason_code.is_failure:
            self.last_error = f"refused: {reason_code}"
        else:
            self.connected.set()

    def _on_connect_fail(self, client, userdata) -> None:
        error = sys.exc_info()[1]  # paho calls this inside its `except OSError`
        self.last_error = getattr(error, "strerror", None) or str(error or "connection failed")

    def _on_publish(self, client, userdata, mid, reason_code, properties) -> None:
        self._answered += 1
        if reason_code.is_failure:
            self.errors += 1
        else:
            self.acked += 1
