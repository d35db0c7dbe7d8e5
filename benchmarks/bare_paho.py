"""A bare paho-mqtt 2.x subscriber that drains its persistent session, counting only (auto-ack).

The reference Attic is measured against: the same library, storing nothing. Run as a
subprocess by benchmarks/drain.py; prints the seconds from CONNACK to the last message.
"""

from __future__ import annotations

import sys
import threading
import time

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties


def main() -> None:
    port, client_id, topic, count = int(sys.argv[1]), sys.argv[2], sys.argv[3], int(sys.argv[4])
    done = threading.Event()
    state = {"n": 0, "start": 0.0, "end": 0.0}

    def on_connect(client, userdata, flags, reason_code, properties):
        state["start"] = time.perf_counter()
        client.subscribe(topic, 1)

    def on_message(client, userdata, message):
        state["n"] += 1
        if state["n"] >= count:
            state["end"] = time.perf_counter()
            done.set()

    client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=client_id, protocol=mqtt.MQTTv5)
    client.on_connect = on_connect
    client.on_message = on_message
    properties = Properties(PacketTypes.CONNECT)
    properties.SessionExpiryInterval = 3600
    client.connect("127.0.0.1", port, clean_start=False, properties=properties)
    client.loop_start()
    if not done.wait(600):
        sys.exit(f"only {state['n']} of {count} messages arrived")
    client.disconnect()
    client.loop_stop()
    print(f"{state['end'] - state['start']:.4f}")


if __name__ == "__main__":
    main()
