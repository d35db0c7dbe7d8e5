"""A pure-Python MQTT broker (amqtt) for ``attic demo`` on machines without Mosquitto.

Run as its own process — ``python -m attic.demo_broker --port P`` — so the demo stops it by
PID like any broker, and its asyncio loop never competes with Attic's threads for the GIL.
It listens on 127.0.0.1 only and allows anonymous clients: a private broker for one demo,
never a server for a network. amqtt speaks MQTT 3.1.1 only, so the demo's config says
``protocol: 3.1.1`` when it uses this broker. Installed with ``pip install 'attic[demo]'``.
"""

from __future__ import annotations

import argparse
import asyncio
import importlib.util
import logging
import os
import signal
import subprocess
import sys
from pathlib import Path

from attic.mosquitto import Mosquitto, free_port, mosquitto_binary, stop_process, wait_for

CHOICES = ("auto", "mosquitto", "amqtt")


def broker_config(port: int) -> dict:
    """amqtt's config: one TCP listener on loopback, anonymous clients, no $SYS or packet logging."""
    return {
        "listeners": {"default": {"type": "tcp", "bind": f"127.0.0.1:{port}", "max_connections": 100}},
        "plugins": {"amqtt.plugins.authentication.AnonymousAuthPlugin": {"allow_anonymous": True}},
    }


async def serve(port: int) -> None:
    """Run the broker until SIGTERM or SIGINT, then shut it down cleanly."""
    from amqtt.broker import Broker
    broker = Broker(broker_config(port))
    await broker.start()
    print(f"amqtt broker listening on 127.0.0.1:{port}", flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    await broker.shutdown()


class AmqttBroker:
    """``python -m attic.demo_broker`` as a child process on a free port, stopped by its PID.

    It runs in a session of its own, so a Ctrl-C in the terminal reaches the demo, which
    then stops everything in order, instead of killing the broker under a draining Attic.
    """

    def __init__(self, folder: Path, port: int | None = None):
        self.folder = Path(folder)
        self.folder.mkdir(parents=True, exist_ok=True)
        self.port = port or free_port()
        self.log = self.folder / "amqtt.log"
        self.proc: subprocess.Popen | None = None

    def start(self, timeout: float = 20.0) -> AmqttBroker:
        with open(self.log, "ab") as log:
            self.proc = subprocess.Popen([sys.executable, "-m", "attic.demo_broker", "--port", str(self.port)],
                                         stdout=log, stderr=log, start_new_session=True)
        wait_for(self._listening, timeout, message=f"amqtt on port {self.port}")
        return self

    def _listening(self) -> bool:
        """Whether it said so (probing the port instead would make amqtt log an error)."""
        text = self.log.read_text(errors="replace")
        if self.proc.poll() is not None:
            raise RuntimeError(f"the amqtt broker exited: {text[-2000:]}")
        return f"listening on 127.0.0.1:{self.port}" in text

    def stop(self) -> None:
        stop_process(self.proc)


def start_broker(folder: Path, choice: str | None = None) -> Mosquitto | AmqttBroker:
    """Start the demo's broker: Mosquitto when installed, else amqtt. Raise RuntimeError if neither.

    ``choice`` (default: the ATTIC_DEMO_BROKER environment variable, else ``auto``) forces
    one: ``mosquitto`` or ``amqtt``.
    """
    choice = choice or os.environ.get("ATTIC_DEMO_BROKER") or "auto"
    if choice not in CHOICES:
        raise RuntimeError(f"ATTIC_DEMO_BROKER={choice!r}: use one of {', '.join(CHOICES)}")
    if choice != "amqtt" and mosquitto_binary():
        # Mosquitto would share our terminal's process group: with SIGINT blocked while it
        # starts, it inherits the mask and a Ctrl-C reaches only the demo, which stops it in order.
        old = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT})
        try:
            return Mosquitto(folder, persistence=False).start()
        finally:
            signal.pthread_sigmask(signal.SIG_SETMASK, old)
    if choice == "mosquitto":
        raise RuntimeError("ATTIC_DEMO_BROKER=mosquitto but mosquitto is not installed")
    if importlib.util.find_spec("amqtt") is None:
        raise RuntimeError("no MQTT broker: install mosquitto, or the pure-Python one with "
                           "pip install 'attic[demo]'")
    return AmqttBroker(folder).start()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m attic.demo_broker", description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(levelname)s %(name)s %(message)s")
    try:
        asyncio.run(serve(args.port))
    except ImportError:
        sys.exit("amqtt is not installed: pip install 'attic[demo]' (or install mosquitto)")


if __name__ == "__main__":  # pragma: no cover
    main()
