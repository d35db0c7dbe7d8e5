"""Speed-ups for paho-mqtt 2.x's receive path, each measured with benchmarks/drain.py.

The network thread is where a Python MQTT logger spends most of its CPU. Profiles (py-spy)
showed costs that do nothing for us; each is removed here without changing what paho
does on the wire or hands to ``on_message``:

1. ``ReadAhead``: paho reads a packet with three or more ``recv`` calls (command byte, each
   length byte, body), a syscall and a GIL round trip each. Reading 64 KiB at a time took the
   drain of a 50k backlog from ~4.8k to ~12.9k msg/s together with (2).
2. ``TunedClient.ack_batch``: ``Client.ack`` queues one packet and wakes the network thread
   per message; a batch of acks after a commit goes out as one write instead.
3. ``decode_publish``: for MQTT 5, paho builds a ``Properties`` object per PUBLISH, whose
   constructor fills two large dicts: 19 µs per message against 2.8 µs for a 3.1.1 PUBLISH.
   Almost every PUBLISH carries no properties (length byte 0); for those, the packet is
   decoded directly and given a fresh empty ``Properties`` cloned from a template.
4. ``TunedClient._handle_on_message``: no per-message topic match for ``message_callback_add``
   filters (Attic uses only ``on_message``).

paho-mqtt is pinned below 3 in setup.cfg; tests/test_paho_tuning.py checks the decoder
against paho's own for every kind of PUBLISH.
"""

from __future__ import annotations

import paho.mqtt.client as mqtt
from paho.mqtt import _packet
from paho.mqtt.enums import MQTTProtocolVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

READ_AHEAD = 65536


class ReadAhead:
    """A socket whose ``recv`` serves paho's small reads from a read-ahead buffer.

    ``pending()`` tells paho's loop that buffered bytes are waiting (the hook it uses for TLS
    sockets), so it never sleeps in select() with data in hand.
    """

    __slots__ = ("_sock", "_buffer", "_pos")

    def __init__(self, sock: object):
        self._sock = sock
        self._buffer = b""
        self._pos = 0

    def recv(self, size: int) -> bytes:
        pos = self._pos
        if pos >= len(self._buffer):
            data = self._sock.recv(READ_AHEAD)  # BlockingIOError / SSL errors pass through to paho
            if size >= len(data):
                return data
            self._buffer, pos = data, 0
        end = pos + size
        self._pos = end
        return self._buffer[pos:end]

    def pending(self) -> int:
        inner = self._sock.pending() if hasattr(self._sock, "pending") else 0
        return len(self._buffer) - self._pos + inner

    def send(self, data: bytes) -> int:
        return self._sock.send(data)

    def __getattr__(self, name: str) -> object:
        return getattr(self._sock, name)


class TunedClient(mqtt.Client):
    """paho's client with a read-ahead socket, acks sent in batches, and a direct ``on_message``."""

    def _create_socket(self):  # noqa: ANN202 - paho's private hook, the one its websocket wrapper uses
        return ReadAhead(super()._create_socket())

    def ack_batch(self, mids: list[int], qos: int) -> None:
        """Queue PUBACKs (QoS 1) or PUBCOMPs (QoS 2) for ``mids`` as one write, one wake-up.

        The packets are the ones paho sends (fixed header, length 2, message id; MQTT 5
        allows leaving out a success reason code).
        """
        command = 0x40 if qos == 1 else 0x70
        header = bytes((command, 2))
        data = b"".join(header + mid.to_bytes(2, "big") for mid in mids)
        self._packet_queue(command, data, 0, 0)

    def _handle_on_message(self, message: mqtt.MQTTMessage) -> bool:
        """Call ``on_message`` directly: paho first matches every topic against the filters of
        ``message_callback_add`` under a lock (~4 µs per message), and Attic registers none."""
        on_message = self.on_message
        if on_message is not None:
            with self._in_callback_mutex:
                try:
                    on_message(self, self._userdata, message)
                except Exception as err:
                    self._easy_log(mqtt.MQTT_LOG_ERR, "Caught exception in on_message: %s", err)
                    if not self.suppress_exceptions:
                        raise
        return False

    def message_callback_add(self, sub: str, callback: object) -> None:
        raise NotImplementedError("TunedClient hands every message to on_message")


_paho_decode_publish = _packet.decode_publish
_EMPTY = Properties(PacketTypes.PUBLISH)


def empty_properties() -> Properties:
    """A new, empty PUBLISH ``Properties`` without rebuilding its lookup tables (they are constant)."""
    properties = object.__new__(Properties)
    properties.__dict__.update(_EMPTY.__dict__)
    return properties


def decode_publish(header: int, packet: bytes | bytearray, protocol: MQTTProtocolVersion) -> _packet.PublishPacket:
    """paho's ``decode_publish``, with a direct path for MQTT 5 PUBLISH packets without properties."""
    if protocol == MQTTProtocolVersion.MQTTv5 and len(packet) > 2:
        topic_end = 2 + (packet[0] << 8 | packet[1])
        qos = (header & 0x06) >> 1
        at = topic_end + 2 if qos else topic_end  # the property length (a variable byte integer)
        if topic_end > 2 and qos < 3 and at < len(packet) and packet[at] == 0:
            return _packet.PublishPacket(
                dup=bool(header & 0x08), qos=qos, retain=bool(header & 0x01),
                topic=bytes(packet[2:topic_end]),
                mid=packet[topic_end] << 8 | packet[topic_end + 1] if qos else 0,
                properties=empty_properties(), payload=bytes(packet[at + 1:]))
    return _paho_decode_publish(header, packet, protocol)


_packet.decode_publish = decode_publish  # paho's client calls it as _packet.decode_publish
