"""What users can type is documented: every command and option in README.md, every config key in the
README's config reference and in config.example.yaml, and the README's test command is the CI's.

Built-in filters and their options are kept in step with the README by
tests/test_filters.py::test_readme_lists_every_builtin_with_its_options_and_its_example_filter_works,
and their docstrings by test_every_filter_documents_itself_with_an_example_that_loads.
"""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path

import click
import pytest

from attic import config as config_module
from attic.cli import main

REPO = Path(__file__).parent.parent
README = (REPO / "README.md").read_text()
EXAMPLE = (REPO / "config.example.yaml").read_text()


def sections(markdown: str) -> list[str]:
    """The text under each heading (any level), headings included; '#' lines in code blocks are not headings."""
    out, current, fenced = [], [], False
    for line in markdown.splitlines():
        if line.startswith("```"):
            fenced = not fenced
        if not fenced and re.match(r"#{1,6} ", line) and current:
            out.append("\n".join(current))
            current = []
        current.append(line)
    out.append("\n".join(current))
    return out


def section(markdown: str, heading: str) -> str:
    """A '## heading' section with its subsections."""
    match = re.search(rf"^## {re.escape(heading)}\n(.*?)(?=^## |\Z)", markdown, re.M | re.S)
    assert match, f"README.md has no '## {heading}' section"
    return match.group(1)


def mentions(text: str, spelling: str) -> bool:
    """``spelling`` (an option like -c or --since) as a whole token in ``text``."""
    return re.search(rf"(?<![\w-]){re.escape(spelling)}(?![\w-])", text) is not None


# ------------------------------------------------------------------------------------ the CLI

def commands() -> list[tuple[str, click.Command]]:
    ctx = click.Context(main)
    found = [(name, main.get_command(ctx, name)) for name in main.list_commands(ctx)]
    return [(name, command) for name, command in found if not command.hidden]


def options(command: click.Command) -> list[click.Option]:
    """The options a user types (help is click's own and never documented separately)."""
    return [p for p in command.params if isinstance(p, click.Option) and not p.hidden]


def test_the_cli_walk_finds_the_commands():
    names = [name for name, _ in commands()]
    assert {"run", "check", "try", "files", "query", "demo", "simulate"} <= set(names)


@pytest.mark.parametrize("name", [name for name, _ in commands()])
def test_every_command_and_its_options_are_in_the_readme(name):
    """Each option shows in a README section that shows the command (its own spelling, e.g. -c or --config)."""
    command = main.get_command(click.Context(main), name)
    assert f"attic {name}" in README, f"README.md: command 'attic {name}' is not documented"
    where = "\n".join(text for text in sections(README) if f"attic {name}" in text)
    missing = [max(option.opts, key=len) for option in options(command)
               if not any(mentions(where, spelling) for spelling in option.opts + option.secondary_opts)]
    assert not missing, (f"README.md: option(s) {', '.join(missing)} of 'attic {name}' are not documented "
                         f"in a section that shows 'attic {name}'")


def test_the_groups_own_options_are_in_the_readme():
    missing = [max(option.opts, key=len) for option in options(main) if not any(mentions(README, s) for s in option.opts)]
    assert not missing, f"README.md: option(s) {', '.join(missing)} of 'attic' are not documented"


# ------------------------------------------------------------------------------- config keys

def table_rows(text: str) -> dict[str, str]:
    """Markdown table rows by their first cell."""
    return {line.split("|")[1].strip(): line for line in text.splitlines() if line.startswith("| ")}


def yaml_block(text: str, key: str) -> str:
    """The lines of a top-level ``key:`` block of config.example.yaml, comments included."""
    match = re.search(rf"^{key}:.*?(?=^\S|\Z)", text, re.M | re.S)
    assert match, f"config.example.yaml has no top-level '{key}:'"
    return match.group(0)


def as_yaml_key(text: str, key: str) -> bool:
    """``key:`` written as a YAML key (also in a comment, for keys shown commented out)."""
    return re.search(rf"(?<![\w.$]){re.escape(key)}:(\s|$)", text, re.M) is not None


REFERENCE = section(README, "Configuration")
ROWS = table_rows(REFERENCE)
TLS_KEYS = [f.name for f in dataclasses.fields(config_module.Tls)]
# (keys the loader accepts, README config reference row, config.example.yaml block)
CORE = {
    "broker": (config_module.BROKER_KEYS, "`broker`", "broker"),
    "broker.tls": (TLS_KEYS, "`broker`", "broker"),
    "storage": (config_module.STORAGE_KEYS, "`storage`", "storage"),
    "report": (config_module.REPORT_KEYS, "`report`", "report"),
    "top level": (config_module.TOP_KEYS, "top level", None),
    "streams[]": (config_module.STREAM_COMMON + config_module.STREAM_MQTT, "a stream", "streams"),
}


def missing_in_readme_row(keys: list[str], row_name: str) -> list[str]:
    """Keys not in the row; a top-level key may also be a row of its own (`broker`, `storage`, ...)."""
    row = ROWS.get(row_name)
    assert row, f"README.md config reference has no row '{row_name}'"
    return [key for key in keys if f"`{key}`" not in row and not (row_name == "top level" and f"`{key}`" in ROWS)]


def missing_in_example(keys: list[str], block: str | None) -> list[str]:
    text = yaml_block(EXAMPLE, block) if block else EXAMPLE
    pattern = (lambda key: re.search(rf"^{key}:", text, re.M)) if block is None else (lambda key: as_yaml_key(text, key))
    return [key for key in keys if not pattern(key)]


@pytest.mark.parametrize("place", list(CORE))
def test_every_config_key_is_in_the_readme_reference_and_the_example(place):
    keys, row, block = CORE[place]
    gaps = []
    if missing := missing_in_readme_row(keys, row):
        gaps.append(f"README.md config reference, row {row}: {place} key(s) missing: {', '.join(missing)}")
    if missing := missing_in_example(keys, block):
        gaps.append(f"config.example.yaml: {place} key(s) missing: {', '.join(missing)}")
    assert not gaps, "\n".join(gaps)


def modbus_key_lists() -> dict[str, list[str]]:
    modbusconfig = pytest.importorskip("attic.modbusconfig")
    return {"streams[] (Modbus)": config_module.STREAM_MODBUS, "modbus": modbusconfig.MODBUS_KEYS,
            "modbus.serial": modbusconfig.SERIAL_KEYS, "modbus.registers[]": modbusconfig.REGISTER_KEYS,
            "device map": modbusconfig.DEVICE_KEYS}


@pytest.mark.parametrize("place", ["streams[] (Modbus)", "modbus", "modbus.serial", "modbus.registers[]",
                                   "device map"])
def test_every_modbus_key_is_documented(place):
    """Modbus keys: in the README's Configuration section, and (but for device map files, which have their
    own YAML) in a Modbus stream of config.example.yaml."""
    keys = modbus_key_lists()[place]
    gaps = []
    if missing := [key for key in keys if f"`{key}`" not in REFERENCE]:
        gaps.append(f"README.md config reference (## Configuration): {place} key(s) missing: {', '.join(missing)}")
    if place != "device map":
        streams = yaml_block(EXAMPLE, "streams")
        modbus = streams[streams.index("modbus:"):] if "modbus:" in streams else ""
        region = streams if place == "streams[] (Modbus)" else modbus
        if missing := [key for key in keys if not as_yaml_key(region, key)]:
            gaps.append(f"config.example.yaml: {place} key(s) missing (in a Modbus stream): {', '.join(missing)}")
    assert not gaps, "\n".join(gaps)


# ------------------------------------------------------------------------------- the README's order

def code_blocks(markdown: str, language: str = "sh") -> list[str]:
    return re.findall(rf"^```{language}\n(.*?)^```", markdown, re.M | re.S)


def test_install_and_the_demo_come_first():
    headings = re.findall(r"^## (.+)$", README, re.M)
    assert headings[0] == "Install", headings
    first = code_blocks(README)[0]
    commands_ = [line.split("#")[0].strip() for line in first.splitlines() if line.split("#")[0].strip()]
    assert any(c.startswith("pip install") and "[demo]" in c for c in commands_), first
    assert any(c.startswith("attic demo") for c in commands_), "README.md: the first commands must run the demo"


def test_the_readme_test_command_is_what_ci_runs():
    ci = (REPO / ".ci" / "run").read_text()
    runs = [line.strip() for line in ci.splitlines() if "pytest" in line and not line.lstrip().startswith("#")]
    assert runs == ["python -m pytest -q tests"], runs
    shown = [line.strip() for block in code_blocks(README) for line in block.splitlines() if "pytest" in line]
    assert shown == runs, f"README.md shows {shown}, .ci/run runs {runs}"
