"""A drop-in named like a built-in (for the config error golden case)."""


def make(topic=None):
    return lambda record: record
