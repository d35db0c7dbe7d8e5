"""A drop-in whose make() refuses an option value (for the config error golden case)."""


def make(factor: float = 1.0):
    if factor <= 0:
        raise ValueError(f"factor must be positive, got {factor}")
    return lambda record: record
