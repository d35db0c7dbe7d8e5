"""Register maps as data: which values live where, how to read them in few requests, how to decode them.

Pure logic, no pymodbus and no clock: a plan is a tuple of ``Block``s (one request each),
decoding takes the words or bits a request returned. Decoding is done here with ``struct``
rather than with pymodbus's ``convert_from_registers`` because that helper knows word order
only, not byte order, and its API has changed between minor releases.

Conventions (the ones meter datasheets use):
- ``address`` is the 0-based protocol address (Eastron's "30001" is input register 0).
- Multi-register values are big-endian by default: first register = most significant word
  (``word_order: big``), high byte first in each register (``byte_order: big``). Meters that
  send the low word first say ``word_order: little``.
- A uint64 above 2**63 - 1 (SQLite's largest integer) comes back as a float.
- ``string`` takes ``count`` registers, two characters each; trailing NULs and spaces go.
- ``scale`` and ``offset`` give engineering units: ``value = raw * scale + offset``. A scale
  like 0.1 or 0.01 divides by 10 or 100 instead, so 2305 becomes 230.5, not 230.50000000000003.
"""

from __future__ import annotations

import math
import struct
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

# type → (struct code, registers); string has no fixed size, bool is one bit
NUMERIC = {"int16": ("h", 1), "uint16": ("H", 1), "int32": ("i", 2), "uint32": ("I", 2),
           "int64": ("q", 4), "uint64": ("Q", 4), "float32": ("f", 2), "float64": ("d", 4)}
TYPES = list(NUMERIC) + ["bool", "string"]
TABLES = ["holding", "input", "coil", "discrete"]
BIT_TABLES = ("coil", "discrete")
ORDERS = ["big", "little"]
MAX_REGISTERS = 125   # per read request (Modbus spec, function codes 3 and 4)
MAX_BITS = 2000       # per read request (function codes 1 and 2)
SQLITE_MAX = 2 ** 63 - 1


@dataclass(frozen=True)
class RegisterSpec:
    """One value of a device: where it is and how to turn its registers into a column."""

    name: str
    address: int
    type: str = "uint16"
    table: str = "holding"
    scale: float = 1
    offset: float = 0
    word_order: str = "big"
    byte_order: str = "big"
    count: int = 1          # registers, for strings
    unit: str | None = None  # a label like "V", for people; not used in decoding

    @property
    def size(self) -> int:
        """Registers (or bits) the value occupies."""
        if self.type == "string":
            return self.count
        if self.type == "bool":
            return 1
        return NUMERIC[self.type][1]

    @property
    def end(self) -> int:
        return self.address + self.size

    @property
    def sql_type(self) -> str:
        """INTEGER for whole numbers and bools, REAL for floats or scaled values, TEXT for strings."""
        if self.type == "string":
            return "TEXT"
        if self.type == "bool":
            return "INTEGER"
        whole = type(self.scale) is int and type(self.offset) is int
        return "INTEGER" if whole and not self.type.startswith("float") else "REAL"


@dataclass(frozen=True)
class Block:
    """One read request: ``count`` registers (or bits) of ``table`` from ``address``."""

    table: str
    address: int
    count: int
    registers: tuple[RegisterSpec, ...]


def plan_blocks(specs: Iterable[RegisterSpec], max_block: int = MAX_REGISTERS, max_gap: int = 0) -> tuple[Block, ...]:
    """Given register specs, return the fewest read requests that cover them.

    Values of one table are merged into one block while the block stays within
    ``max_block`` registers (2000 bits for coils and discrete inputs) and the hole between
    two values is at most ``max_gap`` registers. A value is never split across requests,
    so ``max_block: 1`` means one request per value.
    """
    blocks: list[Block] = []
    for table in TABLES:
        limit = MAX_BITS if table in BIT_TABLES else max_block
        members: list[RegisterSpec] = []
        start = end = 0
        for spec in sorted((s for s in specs if s.table == table), key=lambda s: (s.address, s.name)):
            if members and spec.address - end <= max_gap and max(end, spec.end) - start <= limit:
                members.append(spec)
                end = max(end, spec.end)
                continue
            if members:
                blocks.append(Block(table, start, end - start, tuple(members)))
            members, start, end = [spec], spec.address, spec.end
        if members:
            blocks.append(Block(table, start, end - start, tuple(members)))
    return tuple(blocks)


def _reorder(words: Sequence[int], word_order: str, byte_order: str) -> bytes:
    """Registers as sent → big-endian bytes (the same swap turns big-endian bytes back into registers)."""
    if word_order == "little":
        words = list(reversed(words))
    if byte_order == "little":
        words = [((w & 0xFF) << 8) | (w >> 8) for w in words]
    return b"".join(w.to_bytes(2, "big") for w in words)


def _words(data: bytes, word_order: str, byte_order: str) -> list[int]:
    words = [int.from_bytes(data[i:i + 2], "big") for i in range(0, len(data), 2)]
    if byte_order == "little":
        words = [((w & 0xFF) << 8) | (w >> 8) for w in words]
    return list(reversed(words)) if word_order == "little" else words


def _shortest_float32(value: float, raw: bytes) -> float:
    """The shortest decimal that is the same float32 (230.1, not 230.10000610351562)."""
    if not math.isfinite(value):
        return value
    for digits in range(6, 10):
        candidate = float(f"{value:.{digits}g}")
        if struct.pack(">f", candidate) == raw:
            return candidate
    return value


def scaled(raw: float, scale: float, offset: float) -> float:
    """``raw * scale + offset``, dividing by 10**n for scales like 0.1 so decimals come out exact."""
    if scale == 1 and offset == 0:
        return raw
    value = raw * scale
    if isinstance(scale, float) and 0 < abs(scale) < 1:
        inverse = 1 / scale
        whole = round(inverse)
        if abs(inverse - whole) < 1e-9 * abs(whole):
            value = raw / whole
    return value + offset


def decode_value(spec: RegisterSpec, data: Sequence[int] | Sequence[bool]) -> int | float | str:
    """Given a spec and exactly its registers (or its one bit), return the value in engineering units."""
    if spec.type == "bool":
        return int(bool(data[0]))
    raw_bytes = _reorder(data, spec.word_order, spec.byte_order)
    if spec.type == "string":
        return raw_bytes.decode("utf-8", errors="replace").rstrip("\x00 ")
    code = NUMERIC[spec.type][0]
    (raw,) = struct.unpack(">" + code, raw_bytes)
    if code == "f":
        raw = _shortest_float32(raw, raw_bytes)
    elif code == "Q" and raw > SQLITE_MAX:
        raw = float(raw)  # past SQLite's largest integer: stored as REAL (the lowest digits are lost)
    return scaled(raw, spec.scale, spec.offset)


def decode_block(block: Block, data: Sequence[int] | Sequence[bool]) -> dict[str, int | float | str]:
    """Given a block and what its request returned, return {register name: value}."""
    if len(data) < block.count:
        raise ValueError(f"{block.table} {block.address}: asked for {block.count}, got {len(data)}")
    return {spec.name: decode_value(spec, data[spec.address - block.address:spec.end - block.address])
            for spec in block.registers}


def encode_value(spec: RegisterSpec, value: int | float | str | bool) -> list[int] | list[bool]:
    """The inverse of ``decode_value``: the registers (or bit) a device holds for ``value``.

    Used by the simulator and the tests. Raise ValueError if the value does not fit.
    """
    if spec.type == "bool":
        return [bool(value)]
    if spec.type == "string":
        data = str(value).encode("utf-8")
        if len(data) > 2 * spec.count:
            raise ValueError(f"{spec.name}: {value!r} is longer than {spec.count} registers")
        return _words(data.ljust(2 * spec.count, b"\x00"), spec.word_order, spec.byte_order)
    code = NUMERIC[spec.type][0]
    raw = (value - spec.offset) / spec.scale if (spec.scale != 1 or spec.offset != 0) else value
    if code not in "fd":
        raw = int(round(raw))
    try:
        data = struct.pack(">" + code, raw)
    except (struct.error, OverflowError) as exc:
        raise ValueError(f"{spec.name}: {value!r} does not fit {spec.type}: {exc}") from None
    return _words(data, spec.word_order, spec.byte_order)
