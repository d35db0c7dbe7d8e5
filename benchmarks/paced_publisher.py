"""Publish QoS 1 messages at a steady rate, each carrying its number and its publish time.

Run as a subprocess by benchmarks/latency.py so that publishing and measuring do not share
a GIL. Payload: ``b"<seq> <publish time, µs since the epoch>"``, the time taken just before
the publish call. Messages go out in 1 ms ticks (the number due so far, minus those sent),
so the rate holds without per-message sleeps. Prints the number the broker acknowledged.
"""

from __future__ import annotations

import sys
import time

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion


def main() -> None:
    port, topic, rate, seconds = int(sys.argv[1]), sys.argv[2], float(sys.argv[3]), float(sys.argv[4])
    count = int(rate * seconds)
    client = mqtt.Client(CallbackAPIVersion.VERSION2, protocol=mqtt.MQTTv5)
    client.max_inflight_messages_set(20)  # Mosquitto's default receive maximum
    client.max_queued_messages_set(0)
    acked = [0]
    client.on_publish = lambda *args: acked.__setitem__(0, acked[0] + 1)
    client.connect("127.0.0.1", port)
    client.loop_start()
    start = time.perf_counter()
    sent = 0
    while sent < count:
        due = min(count, int((time.perf_counter() - start) * rate) + 1)
        while sent < due:
            client.publish(topic, b"%d %d" % (sent, time.time_ns() // 1000), qos=1)
            sent += 1
        time.sleep(0.001)
    deadline = time.monotonic() + 60
    while acked[0] < count and time.monotonic() < deadline:
        time.sleep(0.01)
    client.disconnect()
    client.loop_stop()
    print(acked[0])


if __name__ == "__main__":
    main()
