"""A private Mosquitto process on a free loopback port, for tests, benchmarks and ``attic demo``.

Started with a config of its own and stopped by its own PID; it never touches the machine's
shared broker. Started as root, Mosquitto drops to its own user and then cannot write its
persistence file in our folder, hence ``user root`` in that case.
"""

from __future__ import annotations

import os
import re
import shutil
import socket
import subprocess
import textwrap
import time
from collections.abc import Callable
from pathlib import Path


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_for(condition: Callable[[], object], timeout: float = 10.0, interval: float = 0.02,
             message: str = "condition") -> object:
    """Poll ``condition`` until it returns something truthy; raise AssertionError after ``timeout``."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {message}")
        time.sleep(interval)


def stop_process(proc: subprocess.Popen | None, timeout: float = 10.0) -> None:
    """SIGTERM a process we started (by its PID) and wait; SIGKILL it if it does not end in ``timeout``."""
    if proc is not None and proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def mosquitto_binary() -> str | None:
    """The mosquitto executable, also when /usr/sbin is not on PATH."""
    return shutil.which("mosquitto") or next(
        (p for p in ("/usr/sbin/mosquitto", "/usr/local/sbin/mosquitto") if os.access(p, os.X_OK)), None)


class Mosquitto:
    """A private Mosquitto on a free loopback port, with its log in a file we can wait on."""

    def __init__(self, folder: Path, port: int | None = None, extra: str = "", persistence: bool = True):
        self.folder = Path(folder)
        self.folder.mkdir(parents=True, exist_ok=True)
        self.port = port or free_port()
        self.extra = extra
        self.persistence = persistence
        self.conf = self.folder / "mosquitto.conf"
        self.log = self.folder / "mosquitto.log"
        self.proc: subprocess.Popen | None = None

    def start(self) -> Mosquitto:
        lines = [
            f"listener {self.port} 127.0.0.1",
            "allow_anonymous true",
            "log_dest stderr",
            "log_type error", "log_type warning", "log_type notice", "log_type information",
            "log_type subscribe",
            "connection_messages true",
            "sys_interval 1",
            f"persistence {'true' if self.persistence else 'false'}",
            f"persistence_location {self.folder}/",
            "autosave_interval 1",
        ]
        if os.geteuid() == 0:
            lines.append("user root")  # else Mosquitto drops to its own user and cannot write here
        self.conf.write_text("\n".join(lines) + "\n" + textwrap.dedent(self.extra) + "\n")
        binary = mosquitto_binary()
        if binary is None:
            raise FileNotFoundError("mosquitto is not installed (apt-get install mosquitto)")
        log = open(self.log, "ab")  # noqa: SIM115 - the child owns it
        self.proc = subprocess.Popen([binary, "-c", str(self.conf)], stdout=log, stderr=log)
        log.close()
        wait_for(self._listening, 10, message=f"mosquitto on port {self.port}")
        return self

    def _listening(self) -> bool:
        if self.proc.poll() is not None:
            raise AssertionError(f"mosquitto exited: {self.log.read_text()[-2000:]}")
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=0.2):
                return True
        except OSError:
            return False

    def log_text(self) -> str:
        return self.log.read_text(errors="replace")

    def wait_subscribed(self, client_id_part: str, topic: str, timeout: float = 10.0, after: int = 0) -> None:
        """Wait until the broker logs a subscription of a client whose id contains ``client_id_part``."""
        pattern = re.compile(rf"{re.escape(client_id_part)}\S* \d {re.escape(topic)}$", re.M)
        wait_for(lambda: pattern.search(self.log_text(), after), timeout,
                 message=f"{client_id_part} subscribing to {topic}")

    def stop(self) -> None:
        stop_process(self.proc)

    def kill(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()


