"""Broker options end to end: QoS 0/2, MQTT 3.1.1 sessions, username/password, TLS, durability."""

from __future__ import annotations

import shutil
import sqlite3
import subprocess

import pytest

from attic.logfile import LogFile
from tests.support import AtticProcess, all_rows, committed_count, publish, wait_for, write_config


def config_for(tmp_path, port, ns, stream_extra="", broker_extra=""):
    return write_config(tmp_path, f"""
        broker: {{host: 127.0.0.1, port: {port}, client_id: "{ns}-{{stream}}" {broker_extra}}}
        storage: {{root: logs}}
        streams:
          - name: s
            topic: {ns}/#
            {stream_extra}
    """)


def numbers(root):
    return sorted(int(p) for (p,) in all_rows(root, "s", "SELECT payload FROM messages"))


@pytest.mark.parametrize("qos", [0, 2])
def test_qos_0_and_2(tmp_path, broker, ns, qos):
    root = tmp_path / "logs"
    attic = AtticProcess(config_for(tmp_path, broker.port, ns, f"qos: {qos}")).start()
    try:
        broker.wait_subscribed(f"{ns}-s", f"{ns}/#")
        publish(broker.port, [(f"{ns}/x", str(i).encode()) for i in range(500)], qos=qos)
        wait_for(lambda: committed_count(root, "s") == 500, 10, message="500 rows")
    finally:
        assert attic.stop() == 0
    assert numbers(root) == list(range(500))
    assert {q for (q,) in all_rows(root, "s", "SELECT qos FROM messages")} == {qos}


def test_mqtt_311_persistent_session_keeps_messages_while_down(tmp_path, broker, ns):
    root = tmp_path / "logs"
    config = config_for(tmp_path, broker.port, ns, "qos: 1\n            protocol: 3.1.1")
    attic = AtticProcess(config).start()
    broker.wait_subscribed(f"{ns}-s", f"{ns}/#")
    publish(broker.port, [(f"{ns}/x", str(i).encode()) for i in range(100)], qos=1)
    wait_for(lambda: committed_count(root, "s") == 100, 10, message="first 100")
    assert attic.stop() == 0
    publish(broker.port, [(f"{ns}/x", str(i).encode()) for i in range(100, 200)], qos=1)  # Attic is down
    attic = AtticProcess(config, log=tmp_path / "second.log").start()
    try:
        wait_for(lambda: committed_count(root, "s") >= 200, 15, message="messages queued while down")
    finally:
        assert attic.stop() == 0
    assert numbers(root) == list(range(200))
    assert "session resumed" in attic.log_text()


def test_retained_message_is_not_logged_again_on_resume(tmp_path, broker, ns):
    root = tmp_path / "logs"
    publish(broker.port, [(f"{ns}/state", b"on")], qos=1, retain=True)
    config = config_for(tmp_path, broker.port, ns, "qos: 1")
    for run in range(2):
        attic = AtticProcess(config, log=tmp_path / f"run{run}.log").start()
        attic.wait_log("subscribed to", 10)
        publish(broker.port, [(f"{ns}/x", str(run).encode())], qos=1)
        wait_for(lambda n=run: committed_count(root, "s") >= n + 2, 10, message="rows")
        assert attic.stop() == 0
    retained = all_rows(root, "s", "SELECT payload, retain FROM messages WHERE topic LIKE '%/state'")
    assert retained == [(b"on", 1)]  # MQTT 5 retain handling: only for a new subscription
    publish(broker.port, [(f"{ns}/state", b"")], qos=1, retain=True)  # clear it for other tests


def test_username_and_password(tmp_path, fresh_broker, ns):
    passwords = tmp_path / "passwords"
    subprocess.run(["mosquitto_passwd", "-c", "-b", str(passwords), "logger", "s3cret"], check=True,
                   capture_output=True)
    mosquitto = fresh_broker(f"allow_anonymous false\npassword_file {passwords}\n")
    # `allow_anonymous true` from the defaults is overridden by the later line
    root = tmp_path / "logs"
    (tmp_path / "pw").write_text("s3cret\n")
    attic = AtticProcess(config_for(tmp_path, mosquitto.port, ns,
                                    broker_extra=", username: logger, password_file: pw")).start()
    try:
        mosquitto.wait_subscribed(f"{ns}-s", f"{ns}/#")
        import paho.mqtt.client as mqtt
        from paho.mqtt.enums import CallbackAPIVersion
        client = mqtt.Client(CallbackAPIVersion.VERSION2)
        client.username_pw_set("logger", "s3cret")
        client.connect("127.0.0.1", mosquitto.port)
        client.loop_start()
        client.publish(f"{ns}/x", b"7", qos=1).wait_for_publish(10)
        client.disconnect()
        client.loop_stop()
        wait_for(lambda: committed_count(root, "s") == 1, 10, message="one row")
    finally:
        assert attic.stop() == 0
    assert numbers(root) == [7]


def test_wrong_password_is_logged_once_and_retried(tmp_path, fresh_broker, ns):
    passwords = tmp_path / "passwords"
    subprocess.run(["mosquitto_passwd", "-c", "-b", str(passwords), "logger", "s3cret"], check=True,
                   capture_output=True)
    mosquitto = fresh_broker(f"allow_anonymous false\npassword_file {passwords}\n")
    attic = AtticProcess(config_for(tmp_path, mosquitto.port, ns,
                                    broker_extra=", username: logger, password: wrong")).start()
    try:
        attic.wait_log("refused the connection", 10)
        # the stream and the drop watch try once each, then retry with backoff
        wait_for(lambda: mosquitto.log_text().count("not authorised") >= 4, 10, message="a retry")
    finally:
        assert attic.stop() == 0
    assert attic.log_text().count("refused the connection") == 1


@pytest.mark.skipif(not shutil.which("openssl"), reason="openssl is needed to make test certificates")
def test_tls(tmp_path, fresh_broker, ns):
    def ssl(*args):
        subprocess.run(["openssl", *args], check=True, capture_output=True, cwd=tmp_path)
    ssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", "ca.key", "-out", "ca.pem", "-days", "2",
        "-subj", "/CN=attic-test-ca")
    ssl("req", "-newkey", "rsa:2048", "-nodes", "-keyout", "server.key", "-out", "server.csr",
        "-subj", "/CN=localhost")
    (tmp_path / "san.cnf").write_text("subjectAltName=IP:127.0.0.1,DNS:localhost\n")
    ssl("x509", "-req", "-in", "server.csr", "-CA", "ca.pem", "-CAkey", "ca.key", "-CAcreateserial",
        "-out", "server.pem", "-days", "2", "-extfile", "san.cnf")
    from tests.support import free_port
    tls_port = free_port()
    mosquitto = fresh_broker(f"listener {tls_port} 127.0.0.1\ncafile {tmp_path}/ca.pem\n"
                             f"certfile {tmp_path}/server.pem\nkeyfile {tmp_path}/server.key\n")
    root = tmp_path / "logs"
    attic = AtticProcess(config_for(tmp_path, tls_port, ns, broker_extra=", tls: {ca_file: ca.pem}")).start()
    try:
        mosquitto.wait_subscribed(f"{ns}-s", f"{ns}/#")
        publish(mosquitto.port, [(f"{ns}/x", b"42")], qos=1)  # plain listener; Attic reads over TLS
        wait_for(lambda: committed_count(root, "s") == 1, 10, message="one row over TLS")
    finally:
        assert attic.stop() == 0
    assert numbers(root) == [42]


@pytest.mark.parametrize("durability, level", [("process", 1), ("power", 2)])
def test_durability_sets_synchronous(tmp_path, durability, level):
    log = LogFile.create(tmp_path / "f.sqlite", 0, 10**6, {"stream": "x"}, durability)
    assert log.conn.execute("PRAGMA synchronous").fetchone()[0] == level  # NORMAL=1, FULL=2
    assert log.conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    log.close(1, "stop")
    with pytest.raises(sqlite3.OperationalError):
        sqlite3.connect(f"file:{tmp_path / 'f.sqlite'}?mode=ro", uri=True).execute("INSERT INTO messages "
                                                                                     "VALUES (1,'a',NULL,0,0)")


def test_a_changed_topic_leaves_the_old_subscription_and_keeps_what_was_queued(tmp_path, broker, ns):
    root = tmp_path / "logs"
    old, new = f"{ns}/old/#", f"{ns}/new/#"
    config = write_config(tmp_path, f"""
        broker: {{host: 127.0.0.1, port: {broker.port}, client_id: "{ns}-{{stream}}"}}
        storage: {{root: logs}}
        streams: [{{name: s, topic: "{old}", qos: 1}}]
    """)
    attic = AtticProcess(config).start()
    broker.wait_subscribed(f"{ns}-s", old)
    assert attic.stop() == 0
    publish(broker.port, [(f"{ns}/old/x", b"queued while down")], qos=1)
    config.write_text(config.read_text().replace(old, new))
    attic = AtticProcess(config, log=tmp_path / "second.log").start()
    try:
        broker.wait_subscribed(f"{ns}-s", new)
        attic.wait_log("unsubscribed its session from the earlier topic")
        publish(broker.port, [(f"{ns}/old/x", b"after the change"), (f"{ns}/new/x", b"new")], qos=1)
        wait_for(lambda: committed_count(root, "s") >= 2, 10, message="the new topic's message")
    finally:
        assert attic.stop() == 0
    # one session, in order: had the old subscription stayed, "after the change" would come before "new"
    assert [p for (p,) in all_rows(root, "s", "SELECT payload FROM messages ORDER BY ts_us")] == [
        b"queued while down", b"new"]
    events = all_rows(root, "s", "SELECT detail FROM attic_events WHERE kind = 'unsubscribed'")
    assert events == [(old,)]
