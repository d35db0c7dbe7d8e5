"""A drop-in without make() (for the config error golden case)."""


def filter(record):
    return record
