"""The paho speed-ups decode and read exactly what paho itself does."""

from __future__ import annotations

import pytest
from paho.mqtt.enums import MQTTProtocolVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from attic.sources import paho_tuning
from attic.sources.paho_tuning import ReadAhead, decode_publish

V5, V311 = MQTTProtocolVersion.MQTTv5, MQTTProtocolVersion.MQTTv311


def publish_body(topic: bytes, payload: bytes, qos: int, properties: bytes | None) -> bytes:
    body = len(topic).to_bytes(2, "big") + topic
    if qos:
        body += (4321).to_bytes(2, "big")
    if properties is not None:
        body += properties
    return body + payload


def with_expiry() -> bytes:
    properties = Properties(PacketTypes.PUBLISH)
    properties.MessageExpiryInterval = 30
    return properties.pack()


CASES = [
    (0x30, publish_body(b"a/b", b"hello", 0, b"\x00"), V5),
    (0x33, publish_body(b"sensors/x/telemetry", b'{"t": 21.5}', 1, b"\x00"), V5),
    (0x3D, publish_body(b"a", b"", 2, b"\x00"), V5),                    # dup, QoS 2, retain, no payload
    (0x32, bytearray(publish_body(b"a/b", b"\x00\xff" * 40, 1, b"\x00")), V5),
    (0x32, publish_body(b"a/b", b"x", 1, with_expiry()), V5),            # properties: paho's own path
    (0x32, publish_body(b"a/b", b"x", 1, None), V311),
]


@pytest.mark.parametrize(("header", "packet", "protocol"), CASES)
def test_decode_publish_matches_paho(header, packet, protocol):
    ours = decode_publish(header, packet, protocol)
    theirs = paho_tuning._paho_decode_publish(header, packet, protocol)
    assert ours._replace(properties=None) == theirs._replace(properties=None)
    assert type(ours.payload) is bytes and type(ours.topic) is bytes
    if protocol == V5:
        assert ours.properties.json() == theirs.properties.json()
        assert ours.properties is not theirs.properties


def test_empty_properties_are_separate_objects():
    first, second = paho_tuning.empty_properties(), paho_tuning.empty_properties()
    first.MessageExpiryInterval = 5
    assert first.json() == {"MessageExpiryInterval": 5} and second.json() == {}


class Chunks:
    """A socket that returns the given chunks, then raises BlockingIOError like a drained socket."""

    def __init__(self, chunks: list[bytes]):
        self.chunks = chunks

    def recv(self, size: int) -> bytes:
        if not self.chunks:
            raise BlockingIOError
        return self.chunks.pop(0)


def test_read_ahead_serves_small_reads_from_one_big_read_and_reports_pending():
    sock = ReadAhead(Chunks([b"\x30\x05abcde\x40\x02", b"\x00\x07"]))
    assert sock.recv(1) == b"\x30" and sock.pending() == 8
    assert sock.recv(1) == b"\x05" and sock.recv(5) == b"abcde"
    assert sock.recv(1) == b"\x40" and sock.recv(1) == b"\x02" and sock.pending() == 0
    assert sock.recv(2) == b"\x00\x07"  # a read at least as big as what arrived: handed over as is
    with pytest.raises(BlockingIOError):
        sock.recv(1)
