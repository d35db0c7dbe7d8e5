"""`attic try`: one message through a stream's filters, with no broker and no files written."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

from click.testing import CliRunner

from attic.cli import main
from attic.config import load_config
from attic.trying import format_outcome, try_message
from tests.support import write_config

REPO = Path(__file__).parent.parent
PAYLOAD = '{"ts": 1795420800250, "temperature": 21.5, "humidity": 48}'


def example_copy(tmp_path: Path) -> Path:
    """config.example.yaml and its filters folder in tmp_path, so nothing can land in the checkout."""
    shutil.copy(REPO / "config.example.yaml", tmp_path / "config.yaml")
    shutil.copytree(REPO / "filters", tmp_path / "filters")
    return tmp_path / "config.yaml"


def run_try(*args: str, stdin: bytes | None = None) -> tuple[int, str, str]:
    result = CliRunner().invoke(main, ["try", *args], input=stdin)
    return result.exit_code, result.stdout, result.stderr


def test_try_on_the_example_config_prints_the_row_and_writes_nothing(tmp_path):
    config = example_copy(tmp_path)
    proc = subprocess.run([sys.executable, "-m", "attic", "try", "-c", str(config), "--stream", "tele",
                           "--topic", "sensors/north/dev1/telemetry", "--payload", PAYLOAD],
                          capture_output=True, text=True, cwd=tmp_path, timeout=60)
    assert proc.returncode == 0, proc.stderr
    row, types = proc.stdout.splitlines()
    assert row.startswith("messages: {ts_us: ")
    assert row.endswith(", topic: 'sensors/north/dev1/telemetry', payload: b'" + PAYLOAD + "', qos: 1, retain: 0, "
                        "temperature: 21.5, humidity: 48.0, battery: None, site: 'north', device: 'dev1', "
                        "device_ts_us: 1795420800250000, temperature_f: 70.7}")
    assert types == ("  column types: temperature REAL, humidity REAL, battery REAL, site TEXT, device TEXT, "
                     "device_ts_us INTEGER, temperature_f REAL")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["config.yaml", "filters"]  # no logs/ folder


def test_try_shows_the_rejection_and_exits_1(tmp_path):
    config = example_copy(tmp_path)
    code, out, _ = run_try("-c", str(config), "--stream", "tele", "--topic", "sensors/a/b/telemetry",
                           "--payload", '{"temperature": 127}')
    assert (code, out) == (1, "rejected by range_check: temperature 127.0 is above max 85\n")
    code, out, _ = run_try("-c", str(config), "--stream", "tele", "--topic", "sensors/a/b/telemetry",
                           "--payload", "not json")
    assert code == 1
    assert out == "rejected by json_fields: payload is not JSON: Expecting value: line 1 column 1 (char 0)\n"


def test_try_reads_a_payload_file_or_stdin_and_shows_drops_and_tables(tmp_path):
    (tmp_path / "filters").mkdir()
    config = write_config(tmp_path, """
        streams:
          - name: plain
            topic: "#"
          - name: routed
            topic: "#"
            qos: 0
            filters:
              - drop: {topic: "junk/#"}
              - rename: {topic: "tele/+/STATE", table: state}
    """)
    (tmp_path / "body.bin").write_bytes(b"\x00\xff")
    code, out, _ = run_try("-c", str(config), "--stream", "plain", "--topic", "a", "--payload-file",
                           str(tmp_path / "body.bin"), "--retain")
    assert code == 0 and out.endswith(", topic: 'a', payload: b'\\x00\\xff', qos: 1, retain: 1}\n")
    code, out, _ = run_try("-c", str(config), "--stream", "routed", "--topic", "tele/plug/STATE",
                           "--payload-file", "-", stdin=b"ON")
    assert code == 0 and out.startswith("state: {") and "qos: 0" in out
    code, out, _ = run_try("-c", str(config), "--stream", "routed", "--topic", "junk/1", "--payload", "x")
    assert (code, out) == (0, "dropped by drop: nothing would be stored\n")
    assert not (tmp_path / "logs").exists()


def test_try_refuses_unknown_streams_bad_filters_and_ambiguous_payloads(tmp_path):
    config = write_config(tmp_path, """
        streams:
          - name: tele
            topic: "#"
            filters: [{range_check: {field: t, mni: 1}}]
    """)
    code, _, err = run_try("-c", str(config), "--stream", "tel", "--topic", "a", "--payload", "1")
    assert (code, err) == (2, "config.yaml: no stream 'tel' (streams: tele)\n")
    code, _, err = run_try("-c", str(config), "--stream", "tele", "--topic", "a", "--payload", "1")
    assert (code, err) == (2, "config.yaml:5: streams[0].filters[0].range_check: unknown option 'mni' "
                              "(options: field, min, max, required)\n")
    code, _, err = run_try("-c", str(config), "--stream", "tele", "--topic", "a")
    assert code == 2 and "give --payload or --payload-file" in err


def test_try_message_as_a_library_call(tmp_path):
    config = load_config(example_copy(tmp_path))
    outcome = try_message(config, "tele", "sensors/a/b/telemetry", b'{"temperature": 20}', ts_us=17)
    assert not outcome.rejected and outcome.rows[0].ts_us == 17
    assert outcome.rows[0].fields["temperature_f"] == 68.0
    assert format_outcome(outcome)[0].startswith("messages: {ts_us: 17, ")
