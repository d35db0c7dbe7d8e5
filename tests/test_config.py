"""Every malformed config is refused by both `check` and `run` with one line per problem naming the place.

Golden files: tests/cases/<case>/config.yaml and the exact expected.err.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from click.testing import CliRunner

from attic.cli import main
from attic.config import ConfigError, client_id_for, load_config
from tests.support import write_config

CASES = Path(__file__).parent / "cases"
CASE_NAMES = sorted(p.name for p in CASES.iterdir() if (p / "config.yaml").exists())


def run_cli(*args: str) -> tuple[int, str]:
    result = CliRunner().invoke(main, list(args))
    return result.exit_code, result.stderr if hasattr(result, "stderr") else result.output


@pytest.mark.parametrize("case", CASE_NAMES)
@pytest.mark.parametrize("command", ["check", "run"])
def test_bad_config_is_refused_with_the_place(case, command, monkeypatch):
    monkeypatch.chdir(CASES / case)
    code, err = run_cli(command, "-c", "config.yaml")
    expected = (CASES / case / "expected.err").read_text().replace("{case_dir}", str(CASES / case))
    assert err == expected
    assert code == 2
    assert "Traceback" not in err
    for line in err.splitlines():
        assert line.startswith("config.yaml"), line


def test_every_problem_is_one_line_with_a_place():
    for case in CASE_NAMES:
        for line in (CASES / case / "expected.err").read_text().splitlines():
            assert line.startswith("config.yaml:"), (case, line)


def test_missing_config_file(tmp_path):
    code, err = run_cli("check", "-c", str(tmp_path / "nope.yaml"))
    assert code == 2
    assert err.strip() == f"{tmp_path / 'nope.yaml'}: cannot read config: No such file or directory"


def test_defaults_overrides_env_and_relative_paths(tmp_path, monkeypatch):
    monkeypatch.setenv("ATTIC_TEST_PW", "s3cret")
    (tmp_path / "pw.txt").write_text("from-file\n")
    path = write_config(tmp_path, """
        broker: {host: broker.local, username: u, password: "${ATTIC_TEST_PW}", keepalive: 1m}
        storage: {root: data, rotate: 15m, commit_every: 100ms, keep: 90d, timezone: local}
        streams:
          - {name: all, topic: "#", qos: 0}
          - {name: tele, topic: "s/+/t", host: other.local, port: 8883, password_file: pw.txt, protocol: 3.1.1,
             stall_after: 5m}
    """)
    config = load_config(path)
    assert config.storage.root == tmp_path / "data"
    assert (config.storage.rotate_s, config.storage.commit_every_s, config.storage.keep_s) == (900, 0.1, 90 * 86400)
    everything, tele = config.streams
    assert (everything.broker.host, everything.broker.password, everything.broker.keepalive_s) == \
        ("broker.local", "s3cret", 60)
    assert (tele.broker.host, tele.broker.port, tele.broker.username, tele.broker.password) == \
        ("other.local", 8883, "u", "from-file")
    assert tele.broker.protocol == "3.1.1" and everything.broker.protocol == "5"
    assert tele.stall_after_s == 300 and everything.qos == 0
    assert config.filters_dir == tmp_path / "filters"
    assert "s3cret" not in str(everything.settings) and "s3cret" not in repr(everything)


def test_client_id_template():
    assert client_id_for("x-{stream}", "tele") == "x-tele"
    assert client_id_for(None, "tele", 2).endswith("-tele-w2")
    assert client_id_for(None, "tele").startswith("attic-")


def test_example_config_is_valid(monkeypatch):
    root = Path(__file__).parent.parent
    monkeypatch.chdir(root)
    code, err = run_cli("check", "-c", "config.example.yaml")
    assert code == 0, err


def test_config_error_lists_all(tmp_path):
    path = write_config(tmp_path, "streams:\n  - {name: a, qos: 9}\n  - {name: b, topic: x, qos: -1}\n")
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert len(info.value.problems) == 3
    assert os.path.basename(str(path)) in info.value.problems[0]
