"""A drop-in that cannot be imported (for the config error golden case)."""

import surely_not_an_installed_module  # noqa: F401


def make():
    return lambda record: record
