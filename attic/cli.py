"""The ``attic`` command: parse arguments, call the library, turn user mistakes into one line.

Commands stay thin: each one calls a library function and translates its typed errors
(ConfigError → every problem, exit 2; OSError on a user path → one line, exit 1). Anything
else is a bug and keeps its traceback.
"""

from __future__ import annotations

import logging
import sys
from pathlib import Path

import click

from attic import __version__
from attic.config import Config, ConfigError, load_config
from attic.durations import format_duration

LOG_FORMAT = "%(asctime)s %(levelname)s %(message)s"


def setup_logging(level: str) -> None:
    """Plain, greppable lines on stderr (journald adds its own metadata).

    One handler on the root logger (``force`` replaces any earlier one, so no line shows twice);
    Python warnings become log lines too instead of multi-line blocks.
    """
    logging.basicConfig(level=getattr(logging, level.upper()), format=LOG_FORMAT, stream=sys.stderr, force=True)
    logging.captureWarnings(True)


def fail(message: str, status: int = 1) -> None:
    click.echo(f"Error: {message}", err=True)
    sys.exit(status)


def load_checked(path: str) -> Config:
    """Load and preflight a config, or print every problem and exit 2."""
    from attic.preflight import preflight
    try:
        config = load_config(path)
        preflight(config)
    except ConfigError as exc:
        for problem in exc.problems:
            click.echo(problem, err=True)
        sys.exit(2)
    return config


config_option = click.option("-c", "--config", "config_path", required=True, type=click.Path(dir_okay=False),
                             help="The YAML config file.")
log_level_option = click.option("--log-level", type=click.Choice(["debug", "info", "warning", "error"]),
                                default="info", show_default=True, help="How much to log on stderr.")


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="attic")
def main() -> None:
    """Attic logs everything on an MQTT broker (and Modbus meters) into time-rotated SQLite files."""


@main.command()
@config_option
@log_level_option
@click.option("--worker", hidden=True, help="Internal: one worker of a stream with workers > 1 (job on stdin).")
def run(config_path: str, log_level: str, worker: str | None) -> None:
    """Run every stream of the config until SIGTERM or Ctrl-C (a second one exits at once)."""
    if worker is not None:  # started by the parent `attic run` (attic/workers.py), which checked the config
        from attic.workers import worker_main
        sys.exit(worker_main(worker, log_level))
    setup_logging(log_level)
    config = load_checked(config_path)
    from attic.service import Service
    from attic.store import StoreLocked
    service = Service(config)
    try:
        status = service.run()
    except StoreLocked as exc:
        fail(str(exc))
    sys.exit(status)


@main.command()
@config_option
def check(config_path: str) -> None:
    """Validate the config, load its filters and device maps, check the storage root; list the streams."""
    config = load_checked(config_path)
    storage = config.storage
    click.echo(f"{config.path}: OK, {len(config.streams)} stream(s); files under {storage.root} "
               f"rotated every {format_duration(storage.rotate_s)} ({storage.timezone} days)")
    for stream in config.streams:
        filters = ", ".join(spec.name for spec in stream.filters) or "no filters"
        if stream.source == "mqtt":
            broker = stream.broker
            what = f"mqtt {broker.host}:{broker.port} topic {stream.topic!r} qos {stream.qos}"
            if stream.workers > 1:
                what += f", {stream.workers} workers"
        else:
            schedule = f"every {format_duration(stream.every_s)}" if stream.every_s else f"cron {stream.cron!r}"
            bus = stream.modbus
            where = f"{bus.serial.port} {bus.serial.baudrate} baud" if bus.serial else f"{bus.host}:{bus.port}"
            units = ",".join(map(str, bus.units))
            regs = f"device {bus.device}" if bus.device else f"{len(bus.registers)} registers"
            what = f"modbus {where} unit{'s' if len(bus.units) > 1 else ''} {units}, {regs}, {schedule}"
        click.echo(f"  {stream.name}: {what}; {filters}")
    report = config.report
    extras = [f"JSON on {report.topic!r}"] if report.topic else []
    extras += [f"/metrics on {report.prometheus}"] if report.prometheus else []
    keep = f"; day folders kept {format_duration(storage.keep_s)}" if storage.keep_s else ""
    click.echo(f"report every {format_duration(report.every_s)}{''.join(', ' + e for e in extras)}{keep}")


@main.command("try")
@config_option
@click.option("--stream", "stream_name", required=True, help="The stream whose filters to run.")
@click.option("--topic", required=True, help="The message's topic.")
@click.option("--payload", default=None, help="The payload as text (UTF-8).")
@click.option("--payload-file", type=click.File("rb"), default=None, help="Read the payload from a file ('-': stdin).")
@click.option("--retain", is_flag=True, help="Mark the message as retained.")
def try_command(config_path: str, stream_name: str, topic: str, payload: str | None, payload_file, retain: bool) -> None:
    """Run one message through a stream's filters; print the row(s) it would store, or the rejection.

    Needs no broker and writes no files. Exit 0 when stored or dropped by a filter, 1 when
    rejected, 2 for a config problem.
    """
    from attic.trying import format_outcome, try_message
    if (payload is None) == (payload_file is None):
        raise click.UsageError("give --payload or --payload-file (one of them)")
    data = payload.encode() if payload is not None else payload_file.read()
    try:
        outcome = try_message(load_config(config_path), stream_name, topic, data, retain)
    except ConfigError as exc:
        for problem in exc.problems:
            click.echo(problem, err=True)
        sys.exit(2)
    for line in format_outcome(outcome):
        click.echo(line)
    sys.exit(1 if outcome.rejected else 0)


@main.command()
@click.option("--host", default="127.0.0.1", show_default=True, help="The broker to publish to.")
@click.option("--port", type=int, default=None, help="The broker's port (1883), or the meter's with --modbus (5020).")
@click.option("--devices", type=click.IntRange(1), default=100, show_default=True, help="Simulated devices.")
@click.option("--rate", default="10/s", show_default=True, help="Messages per device: 10/s, 30/m, 0.5 ...")
@click.option("--seconds", type=click.FloatRange(0), default=None, help="Stop after this long (default: Ctrl-C).")
@click.option("--qos", type=click.IntRange(0, 2), default=1, show_default=True, help="QoS of every message.")
@click.option("--topic", default="sensors/{site}/{device}/{kind}", show_default=True,
              help="Topic template: {site}, {device} and {kind} (telemetry, heartbeat, event).")
@click.option("--seed", type=int, default=None, help="Same seed, same devices and values.")
@click.option("--modbus", is_flag=True, help="Serve a simulated Modbus energy meter on --port instead.")
def simulate(host: str, port: int | None, devices: int, rate: str, seconds: float | None, qos: int, topic: str,
             seed: int | None, modbus: bool) -> None:
    """Simulated devices publishing telemetry, heartbeats and startup events (with a few bad payloads).

    Prints what it will send, a live progress line on stderr and a summary; "sent" counts only
    what the broker acknowledged. With --modbus, serves a meter with changing values instead.
    """
    import signal

    from attic.simulate import Simulation, parse_rate, progress_line, summary
    if modbus:  # an eastron_sdm630 on unit 1, until SIGTERM or Ctrl-C
        from attic.simulate_modbus import main as serve_meter
        serve_meter(["--host", host, "--port", str(port or 5020)])
        return
    try:
        per_second = parse_rate(rate)
    except ValueError as exc:
        fail(str(exc), 2)
    sim = Simulation(host, port or 1883, devices, per_second, seconds, qos, topic, seed)
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda signum, frame: sim.stop())
    until = f"{sim.announced} messages" if sim.announced is not None else "until Ctrl-C"
    click.echo(f"simulating {devices} devices at {per_second:g}/s each to {sim.address}, QoS {qos}: {until}")
    tty = sys.stderr.isatty()

    def show(progress) -> None:
        click.echo(f"\r{progress_line(progress)}\x1b[K" if tty else progress_line(progress), err=True,
                   nl=not tty)
    try:
        result = sim.run(show, every_s=1.0 if tty else 5.0)
    except ConnectionError as exc:
        fail(str(exc))
    if tty:
        click.echo("", err=True)
    click.echo(summary(sim, result))
    complete = sim.announced is None or result.sent == sim.announced
    sys.exit(0 if complete and not result.errors else 1)


@main.command()
@click.option("--seconds", type=click.FloatRange(1), default=30, show_default=True, help="How long to run.")
@click.option("--root", type=click.Path(file_okay=False), default="attic-demo", show_default=True,
              help="Where the config, the logs and the broker's files go.")
def demo(seconds: float, root: str) -> None:
    """See everything work: a private broker, simulated devices and meter, Attic, and a summary.

    Uses mosquitto when installed, else the pure-Python amqtt broker (pip install 'attic[demo]');
    ATTIC_DEMO_BROKER=mosquitto|amqtt forces one. Writes the config it used to ROOT/attic-demo.yaml.
    """
    from attic.demo import Demo
    try:
        status = Demo(seconds, root).run()
    except ConfigError as exc:  # a bug in the demo's own config, or a missing feature
        for problem in exc.problems:
            click.echo(problem, err=True)
        sys.exit(2)
    except (RuntimeError, OSError) as exc:
        fail(str(exc))
    sys.exit(status)


@main.command("files")
@click.argument("root", type=click.Path(file_okay=False))
@click.option("--stream", help="Only this stream.")
def files_command(root: str, stream: str | None) -> None:
    """List the files under ROOT (stream, day, start, end, rows, size, open or closed), then totals."""
    from attic.catalog import ReadError, files
    from attic.output import files_table
    try:
        click.echo(files_table(files(root, stream)), nl=False)
    except ReadError as exc:
        fail(f"--{exc.option}: {exc}" if exc.option == "stream" else str(exc))


@main.command()
@click.argument("root", type=click.Path(file_okay=False))
@click.option("--stream", required=True, help="The stream (a folder under ROOT).")
@click.option("--since", help="Start, inclusive: 2026-11-23, 2026-11-23T10:00, with Z or +01:00 (else UTC), "
                              "-1h, now, or µs since the epoch.")
@click.option("--until", help="End, exclusive; same spellings as --since.")
@click.option("--topic", help="MQTT topic filter; + is one level, # any levels (sensors/# includes sensors).")
@click.option("--columns", help="Comma-separated columns to print (ts_us always comes first).")
@click.option("--table", default="messages", show_default=True,
              help="messages, attic_rejects, attic_events, attic_stats, or a table a filter writes.")
@click.option("--limit", type=click.IntRange(1), help="Stop after N rows.")
@click.option("--format", "fmt", type=click.Choice(["table", "csv", "json", "parquet"]), default="table",
              show_default=True, help="json is one object per line; parquet needs --output.")
@click.option("--output", "-o", type=click.Path(dir_okay=False), help="Write to FILE instead of stdout.")
@click.option("--follow", "-f", is_flag=True, help="Keep printing new rows as they are committed, across "
                                                   "rotations (Ctrl-C stops); with --since, the window so far first.")
@click.option("--follow-for", type=click.FloatRange(0), hidden=True, help="Stop following after SECONDS.")
@click.option("--poll", type=click.FloatRange(0.01), default=0.5, hidden=True, help="Seconds between --follow polls.")
def query(root: str, stream: str, since: str | None, until: str | None, topic: str | None, columns: str | None,
          table: str, limit: int | None, fmt: str, output: str | None, follow: bool, follow_for: float | None,
          poll: float) -> None:
    """Print the rows of one stream in a time window, in time order, from every writer's files."""
    import os
    import time

    from attic.catalog import ReadError
    from attic.output import print_query
    from attic.window import check_filter, parse_time
    now = time.time_ns() // 1000  # one "now" for relative times in both options
    window = {}
    for name, value in (("since", since), ("until", until)):
        try:
            window[name] = None if value is None else parse_time(value, now)
        except ValueError as exc:
            fail(f"--{name}: {exc}", 2)
    try:
        if topic is not None:
            check_filter(topic)
    except ValueError as exc:
        fail(f"--topic: {exc}", 2)
    try:
        print_query(root, stream=stream, since=window["since"], until=window["until"], topic=topic, columns=columns, table=table,
                    limit=limit, fmt=fmt, output=output, out=sys.stdout, follow=follow, follow_for=follow_for,
                    poll_s=poll)
    except ValueError as exc:
        fail(str(exc), 2)
    except ReadError as exc:
        fail(f"--{exc.option}: {exc}" if exc.option in ("stream", "table", "columns", "topic") else str(exc))
    except (ImportError, OSError) as exc:
        fail(str(exc))
    except KeyboardInterrupt:
        sys.exit(130)
    except BrokenPipeError:  # `| head`: the reader has seen enough
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        sys.exit(0)


if __name__ == "__main__":  # pragma: no cover
    main()


__all__ = ["main", "load_checked", "fail", "setup_logging", "Path"]
