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
    """Plain, greppable lines on stderr (journald adds its own metadata)."""
    logging.basicConfig(level=getattr(logging, level.upper()), format=LOG_FORMAT, stream=sys.stderr, force=True)


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
def run(config_path: str, log_level: str) -> None:
    """Run every stream of the config until SIGTERM or Ctrl-C (a second one exits at once)."""
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
            what = f"modbus {schedule}"
        click.echo(f"  {stream.name}: {what}; {filters}")


if __name__ == "__main__":  # pragma: no cover
    main()


__all__ = ["main", "load_checked", "fail", "setup_logging", "Path"]
