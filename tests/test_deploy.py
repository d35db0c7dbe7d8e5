"""Running as a service: deploy/attic.service is a valid unit that runs, reloads and stops Attic the way
the README says, and --log-level sets what reaches the journal."""

from __future__ import annotations

import configparser
import inspect
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import click
import pytest

from attic.cli import main
from attic.service import Service
from tests.support import AtticProcess, committed_count, publish, wait_for, write_config

REPO = Path(__file__).parent.parent
UNIT = REPO / "deploy" / "attic.service"
LOG_LINE = re.compile(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3} (DEBUG|INFO|WARNING|ERROR|CRITICAL) \S")


def unit() -> configparser.ConfigParser:
    parser = configparser.ConfigParser(strict=False, interpolation=None)
    parser.optionxform = str  # systemd keys are case-sensitive
    parser.read_string(UNIT.read_text())
    return parser


def test_the_unit_runs_reloads_and_stops_attic_as_documented():
    service = unit()["Service"]
    assert service["User"] == service["Group"] == "attic"
    assert service["ExecReload"] == "/bin/kill -HUP $MAINPID"
    assert service["Restart"] == "on-failure"
    assert service.get("KillSignal", "SIGTERM") == "SIGTERM"  # Attic drains on SIGTERM
    stream_drain_s = inspect.signature(Service.stop).parameters["timeout"].default
    assert int(service["TimeoutStopSec"]) > stream_drain_s

    # ExecStart is a command line `attic run` accepts
    argv = shlex.split(service["ExecStart"])
    assert argv[0] == "/opt/attic/bin/attic"
    assert argv[1] == "run"
    params = main.get_command(click.Context(main), "run").make_context("run", argv[2:]).params
    assert params["config_path"] == "/etc/attic/config.yaml" and params["log_level"] == "info"

    # the hardening leaves one place to write, where the README puts the files
    assert service["ProtectSystem"] == "strict" and service["StateDirectory"] == "attic"
    assert service["WorkingDirectory"] == "/var/lib/attic"
    readme = (REPO / "README.md").read_text()
    howto = readme.split("\n## Running as a service\n", 1)[1].split("\n## ", 1)[0]
    for text in ("/opt/attic/bin/pip install", "/etc/attic/config.yaml", "storage.root: /var/lib/attic/",
                 "install -m 644 deploy/attic.service /etc/systemd/system/", "systemctl reload attic",
                 "journalctl -u attic"):
        assert text in howto, f"README, Running as a service: {text!r} missing"


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="systemd-analyze is not installed")
def test_systemd_accepts_the_unit(tmp_path):
    attic = shutil.which("attic") or str(Path(sys.executable).parent / "attic")
    copy = tmp_path / "attic.service"
    copy.write_text(UNIT.read_text().replace("/opt/attic/bin/attic", attic))  # verify wants the binary to exist
    done = subprocess.run(["systemd-analyze", "verify", str(copy)], capture_output=True, text=True, timeout=60)
    assert (done.returncode, done.stdout + done.stderr) == (0, "")  # an unknown key or bad value is a warning


def test_log_level_warning_keeps_info_lines_out_of_the_journal(tmp_path, broker, ns):
    config = write_config(tmp_path, f"""
        broker: {{host: 127.0.0.1, port: {broker.port}, client_id: "{ns}-{{stream}}"}}
        storage: {{root: logs}}
        report: {{every: 1s}}
        streams: [{{name: tele, topic: "{ns}/#", qos: 1}}]
    """)
    attic = AtticProcess(config, args=("--log-level", "debug")).start()
    quiet = AtticProcess(write_config(tmp_path, (tmp_path / "config.yaml").read_text().replace(
        "name: tele", "name: quiet").replace("root: logs", "root: quiet"), "quiet.yaml"),
        args=("--log-level", "warning")).start()
    try:
        broker.wait_subscribed(f"{ns}-tele", f"{ns}/#")
        broker.wait_subscribed(f"{ns}-quiet", f"{ns}/#")
        publish(broker.port, [(f"{ns}/d", b"%d" % i) for i in range(200)])
        wait_for(lambda: committed_count(tmp_path / "logs", "tele") == 200
                 and committed_count(tmp_path / "quiet", "quiet") == 200, 10, message="200 rows in each")
        attic.wait_log("stream tele: report ", count=2)
    finally:
        assert attic.stop() == 0 and quiet.stop() == 0, attic.log_text() + quiet.log_text()
    for process, levels in ((attic, {"DEBUG", "INFO"}), (quiet, set())):
        lines = process.log_text().splitlines()
        assert all(LOG_LINE.match(line) for line in lines), lines  # one plain line per entry
        assert {LOG_LINE.match(line).group(1) for line in lines} == levels, lines
