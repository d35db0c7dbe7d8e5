"""Checks that need the file system: what ``attic check`` and ``attic run`` verify after parsing.

Parsing (attic.config) reads only the YAML; here we load every filter with its options,
every Modbus device map, and make sure the storage root can be created and written, so a
config that passes ``check`` starts.
"""

from __future__ import annotations

import importlib.util
import os
import tempfile

from attic.config import Config, ConfigError


def storage_problem(config: Config) -> str | None:
    """Return why the storage root cannot be written, or None."""
    root = config.storage.root
    try:
        root.mkdir(parents=True, exist_ok=True)
        fd, probe = tempfile.mkstemp(prefix=".attic-check-", dir=root)
        os.close(fd)
        os.unlink(probe)
    except OSError as exc:
        return (f"{config.path.name}: storage.root: cannot write {root} ({exc.strerror}); "
                "create it or give the service user write access")
    return None


def report_problems(config: Config) -> list[str]:
    """Return what keeps the report section from working: a missing extra, an unpublishable topic."""
    problems = []
    report, name = config.report, config.path.name
    if report.prometheus and importlib.util.find_spec("prometheus_client") is None:
        problems.append(f"{name}: report.prometheus: needs prometheus-client: pip install 'attic[prometheus]'")
    if report.topic is not None and (not report.topic or "+" in report.topic or "#" in report.topic):
        problems.append(f"{name}: report.topic: must be a topic to publish to, without + or #, "
                        f"got {report.topic!r}")
    return problems


def preflight(config: Config) -> None:
    """Raise ConfigError listing every problem that keeps this config from running."""
    problems: list[str] = []
    if problem := storage_problem(config):
        problems.append(problem)
    problems.extend(report_problems(config))
    for stream in config.streams:
        if stream.filters:
            from attic.filters import load_chain
            try:
                load_chain(stream.filters, config.filters_dir, filename=config.path.name)
            except ConfigError as exc:
                problems.extend(exc.problems)
        if stream.source == "modbus":
            from attic.modbusconfig import check_modbus_stream
            problems.extend(check_modbus_stream(stream, config))
    if problems:
        raise ConfigError(problems)
