"""The filter loader: turn a stream's ``filters:`` list into a FilterChain, or say what is wrong.

A filter is a module with ``make(**options)`` returning a function ``record -> record | None |
list[record]``. Built-ins live here, one module per filter (``attic/filters/<name>.py``);
drop-ins are ``<name>.py`` files in ``filters_dir``. Both go through the same steps: find the
module, import it, check the YAML options against ``make``'s signature *before* calling it,
then call ``make`` once. Every problem of a chain is collected and raised together as a
ConfigError, one line each with the place (``config.yaml:12: streams[1].filters[0].range_check:
unknown option 'mni' (options: field, min, max)``), so a typo stops ``attic check`` and
``attic run`` at start-up instead of rejecting records at three in the morning.

Drop-ins are imported by path under a private name (``attic_dropin_<name>``), registered in
``sys.modules`` before they run (dataclasses and pickling look themselves up there); the
filters folder is never put on ``sys.path``, so a drop-in cannot shadow a real module. Each load
runs the file afresh, so a reload picks up an edited filter.
"""

from __future__ import annotations

import difflib
import importlib
import importlib.util
import inspect
import re
import sys
from collections.abc import Callable, Iterable
from pathlib import Path
from types import ModuleType
from typing import Any

from attic.config import ConfigError, FilterSpec
from attic.filters._chain import FilterChain, Rejected, where

BUILTIN_DIR = Path(__file__).parent
NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


class FilterProblem(Exception):
    """One thing wrong with one filter of a config; the loader adds the place."""


def builtin_names() -> list[str]:
    """The names of the built-in filters (every public module in this package)."""
    return sorted(p.stem for p in BUILTIN_DIR.glob("*.py") if not p.stem.startswith("_"))


def _import_dropin(name: str, path: Path) -> ModuleType:
    """Run ``path`` as module ``attic_dropin_<name>`` and return it. Raise FilterProblem."""
    module_name = f"attic_dropin_{name}"
    spec = importlib.util.spec_from_file_location(module_name, path)
    if spec is None or spec.loader is None:
        raise FilterProblem(f"cannot load {path}")
    module = importlib.util.module_from_spec(spec)
    previous = sys.modules.get(module_name)
    sys.modules[module_name] = module  # before exec: a dataclass in the module looks itself up here
    try:
        spec.loader.exec_module(module)
    except SyntaxError as exc:
        _restore(module_name, previous)
        raise FilterProblem(f"cannot load {path}: SyntaxError: {exc.msg} (line {exc.lineno})") from None
    except Exception as exc:  # noqa: BLE001 - whatever the file does wrong is a config problem
        _restore(module_name, previous)
        raise FilterProblem(f"cannot load {path}: {type(exc).__name__}: {exc}{where(exc, str(path))}") from None
    return module


def _restore(module_name: str, previous: ModuleType | None) -> None:
    if previous is None:
        sys.modules.pop(module_name, None)
    else:
        sys.modules[module_name] = previous


def find_module(name: str, filters_dir: Path | None) -> ModuleType:
    """Given a filter name, return its module: a built-in, or a drop-in in ``filters_dir``.

    Raise FilterProblem for a bad name, an unknown filter, a drop-in named like a built-in, or a
    drop-in that fails to import.
    """
    if not NAME.match(name):
        raise FilterProblem(f"filter names are Python module names (letters, digits, _), got {name!r}")
    builtins = builtin_names()
    dropin = Path(filters_dir) / f"{name}.py" if filters_dir is not None else None
    if name in builtins:
        if dropin is not None and dropin.is_file():
            raise FilterProblem(f"{dropin} has the name of a built-in filter; rename the file "
                                "(a drop-in cannot replace a built-in)")
        return importlib.import_module(f"attic.filters.{name}")
    if dropin is not None and dropin.is_file():
        return _import_dropin(name, dropin)
    dropins = sorted(p.stem for p in Path(filters_dir).glob("*.py")) if filters_dir is not None and \
        Path(filters_dir).is_dir() else []
    close = difflib.get_close_matches(name, builtins + dropins, n=1)
    hint = f"; did you mean '{close[0]}'?" if close else ""
    folder = f"no {name}.py in {filters_dir}" if filters_dir is not None else "no filters_dir"
    raise FilterProblem(f"unknown filter {name!r}{hint} (built-ins: {', '.join(builtins)}; {folder})")


def option_problems(make: Callable[..., Any], options: dict[str, Any]) -> list[str]:
    """Given ``make`` and the YAML options, return what does not fit its signature (without calling it)."""
    try:
        params = inspect.signature(make).parameters.values()
    except (TypeError, ValueError):
        return []  # no signature to check against (a builtin or C function): make() will tell
    named = [p for p in params if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)]
    takes_any = any(p.kind is p.VAR_KEYWORD for p in params)
    listing = ", ".join(p.name for p in named) + (", ..." if takes_any else "")
    listing = listing or "none"
    problems = []
    if not takes_any:
        known = {p.name for p in named}
        for key in options:
            if key not in known:
                problems.append(f"unknown option {key!r} (options: {listing})")
    for p in named:
        if p.default is p.empty and p.name not in options:
            problems.append(f"missing option {p.name!r} (options: {listing})")
    return problems


def make_filter(module: ModuleType, options: dict[str, Any]) -> Callable[[Any], Any]:
    """Check ``options`` against the module's ``make``, call it, and return the filter function.

    Raise FilterProblem (possibly several lines joined by newlines) when it does not fit.
    """
    make = getattr(module, "make", None)
    origin = getattr(module, "__file__", module.__name__)
    if not callable(make):
        raise FilterProblem(f"{origin} has no make() function; a filter module defines make(**options) "
                            "that returns a function of a record")
    problems = option_problems(make, options)
    if problems:
        raise FilterProblem("\n".join(problems))
    try:
        fn = make(**options)
    except (ValueError, TypeError) as exc:
        raise FilterProblem(str(exc)) from None
    except Exception as exc:  # noqa: BLE001 - a broken drop-in is a config problem, not a crash
        raise FilterProblem(f"make() failed: {type(exc).__name__}: {exc}{where(exc, getattr(module, '__file__', None))}") \
            from None
    if not callable(fn):
        raise FilterProblem(f"make() returned {fn!r}, not a function of a record")
    return fn


def load_chain(specs: Iterable[FilterSpec], filters_dir: Path | None, filename: str = "config.yaml") -> FilterChain:
    """Given a stream's filter specs, return its FilterChain.

    Raise ConfigError listing every problem of the chain, one line each:
    ``<file>:<line>: <place>: <message>``.
    """
    problems: list[str] = []
    steps: list[tuple[str, str, Callable[[Any], Any]]] = []
    modules: dict[str, ModuleType] = {}  # one import per name and load
    for spec in specs:
        prefix = f"{filename}:{spec.line}: {spec.place}" if spec.line else f"{filename}: {spec.place}"
        try:
            module = modules.get(spec.name) or find_module(spec.name, filters_dir)
            modules[spec.name] = module
            steps.append((spec.name, spec.place, make_filter(module, dict(spec.options))))
        except FilterProblem as exc:
            problems.extend(f"{prefix}: {line}" for line in str(exc).splitlines())
    if problems:
        raise ConfigError(problems)
    return FilterChain(steps)


__all__ = ["load_chain", "FilterChain", "Rejected", "FilterProblem", "builtin_names", "find_module",
           "make_filter", "option_problems", "where"]
