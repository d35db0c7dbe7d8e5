"""Register plans and decoding: pure functions, known byte patterns, every type and both orders."""

from __future__ import annotations

import struct

import pytest

from attic.sources.registers import (
    RegisterSpec,
    decode_block,
    decode_value,
    encode_value,
    plan_blocks,
    scaled,
)


def spec(type_: str = "uint16", address: int = 0, table: str = "holding", **kw) -> RegisterSpec:
    return RegisterSpec(name=kw.pop("name", f"r{address}"), address=address, type=type_, table=table, **kw)


# Registers as a device sends them, for each (word_order, byte_order); the value is the same.
KNOWN = [
    ("int16", -2, {("big", "big"): [0xFFFE], ("big", "little"): [0xFEFF]}),
    ("uint16", 0x1234, {("big", "big"): [0x1234], ("big", "little"): [0x3412]}),
    ("int32", -2, {("big", "big"): [0xFFFF, 0xFFFE], ("little", "big"): [0xFFFE, 0xFFFF],
                   ("big", "little"): [0xFFFF, 0xFEFF], ("little", "little"): [0xFEFF, 0xFFFF]}),
    ("uint32", 0x01020304, {("big", "big"): [0x0102, 0x0304], ("little", "big"): [0x0304, 0x0102],
                            ("big", "little"): [0x0201, 0x0403], ("little", "little"): [0x0403, 0x0201]}),
    ("int64", -(2 ** 40) - 5, {("big", "big"): [0xFFFF, 0xFEFF, 0xFFFF, 0xFFFB],
                               ("little", "big"): [0xFFFB, 0xFFFF, 0xFEFF, 0xFFFF]}),
    ("uint64", 0x0102030405060708, {("big", "big"): [0x0102, 0x0304, 0x0506, 0x0708],
                                    ("little", "big"): [0x0708, 0x0506, 0x0304, 0x0102],
                                    ("big", "little"): [0x0201, 0x0403, 0x0605, 0x0807],
                                    ("little", "little"): [0x0807, 0x0605, 0x0403, 0x0201]}),
    ("float32", 1.0, {("big", "big"): [0x3F80, 0x0000], ("little", "big"): [0x0000, 0x3F80],
                      ("big", "little"): [0x803F, 0x0000], ("little", "little"): [0x0000, 0x803F]}),
    ("float32", -230.5, {("big", "big"): [0xC366, 0x8000], ("little", "big"): [0x8000, 0xC366]}),
    ("float64", 1.5, {("big", "big"): [0x3FF8, 0, 0, 0], ("little", "big"): [0, 0, 0, 0x3FF8],
                      ("big", "little"): [0xF83F, 0, 0, 0], ("little", "little"): [0, 0, 0, 0xF83F]}),
]


@pytest.mark.parametrize("type_,value,layouts", KNOWN, ids=[f"{t}-{v}" for t, v, _ in KNOWN])
def test_known_layouts_decode_and_encode(type_, value, layouts):
    for (word_order, byte_order), words in layouts.items():
        s = spec(type_, word_order=word_order, byte_order=byte_order)
        assert decode_value(s, words) == value, (word_order, byte_order)
        assert encode_value(s, value) == words, (word_order, byte_order)


def test_every_type_round_trips_in_every_order():
    samples = {"int16": [-32768, -1, 0, 32767], "uint16": [0, 1, 65535], "int32": [-(2 ** 31), -7, 2 ** 31 - 1],
               "uint32": [0, 2 ** 32 - 1, 123456789], "int64": [-(2 ** 63), -1, 2 ** 63 - 1],
               "uint64": [0, 2 ** 63 - 1], "float32": [0.0, -1.25, 3.0e38, 230.1, 0.001],
               "float64": [0.1, -1e300, 2.0 ** -1000]}
    for type_, values in samples.items():
        for word_order in ("big", "little"):
            for byte_order in ("big", "little"):
                s = spec(type_, word_order=word_order, byte_order=byte_order)
                for value in values:
                    decoded = decode_value(s, encode_value(s, value))
                    assert decoded == value and type(decoded) is type(value), (type_, word_order, byte_order, value)


def test_uint64_past_sqlite_integers_comes_back_as_a_float():
    s = spec("uint64")
    assert decode_value(s, [0x7FFF, 0xFFFF, 0xFFFF, 0xFFFF]) == 2 ** 63 - 1
    assert decode_value(s, [0xFFFF, 0xFFFF, 0xFFFF, 0xFFFF]) == 2.0 ** 64
    assert encode_value(s, 2 ** 64 - 1) == [0xFFFF] * 4


def test_float32_comes_back_as_the_short_decimal():
    s = spec("float32")
    (bits,) = struct.unpack(">I", struct.pack(">f", 230.1))
    assert decode_value(s, [bits >> 16, bits & 0xFFFF]) == 230.1  # not 230.10000610351562
    assert decode_value(s, encode_value(s, 49.99)) == 49.99


def test_strings_bools_and_nan():
    s = spec("string", count=3)
    assert encode_value(s, "AB") == [0x4142, 0, 0]
    assert decode_value(s, [0x4142, 0x4300, 0]) == "ABC"
    assert decode_value(spec("string", count=2, byte_order="little"), [0x4241, 0x2044]) == "ABD"
    assert decode_value(spec("string", count=2), [0x4142, 0x2020]) == "AB"  # space padding goes
    with pytest.raises(ValueError):
        encode_value(s, "too long!")
    assert decode_value(spec("bool", table="coil"), [True]) == 1
    assert decode_value(spec("bool", table="discrete"), [False]) == 0
    nan = decode_value(spec("float32"), [0x7FC0, 0])
    assert nan != nan


def test_scale_and_offset_give_exact_engineering_units():
    assert scaled(2305, 0.1, 0) == 230.5          # divides by 10: not 230.50000000000003
    assert scaled(12345, 0.01, 0) == 123.45
    assert scaled(7, 10, -40) == 30
    assert scaled(3, 0.3, 0) == pytest.approx(0.9)
    s = spec("int16", scale=0.1, offset=-40.0)
    assert decode_value(s, [2305]) == 190.5
    assert decode_value(s, encode_value(s, -12.5)) == -12.5
    assert spec("int16").sql_type == "INTEGER"
    assert spec("int16", scale=10, offset=-5).sql_type == "INTEGER"
    assert s.sql_type == "REAL" and spec("uint32", scale=1.0).sql_type == "REAL"
    assert spec("float32").sql_type == "REAL" and spec("string", count=1).sql_type == "TEXT"
    assert spec("bool", table="coil").sql_type == "INTEGER"


def test_contiguous_values_of_a_table_are_one_request():
    specs = [spec("float32", a, "input") for a in range(0, 20, 2)] + [spec("uint16", 3, "holding")]
    blocks = plan_blocks(specs)
    assert [(b.table, b.address, b.count, len(b.registers)) for b in blocks] == [
        ("holding", 3, 1, 1), ("input", 0, 20, 10)]


def test_gaps_are_bridged_only_up_to_max_gap():
    specs = [spec("uint16", 0), spec("uint16", 5), spec("uint16", 7)]
    assert [(b.address, b.count) for b in plan_blocks(specs, max_gap=0)] == [(0, 1), (5, 1), (7, 1)]
    assert [(b.address, b.count) for b in plan_blocks(specs, max_gap=1)] == [(0, 1), (5, 3)]
    assert [(b.address, b.count) for b in plan_blocks(specs, max_gap=4)] == [(0, 8)]


def test_blocks_stay_within_max_block_and_never_split_a_value():
    specs = [spec("float32", a, "input") for a in range(0, 300, 2)]
    blocks = plan_blocks(specs)
    assert [(b.address, b.count) for b in blocks] == [(0, 124), (124, 124), (248, 52)]
    assert sum(len(b.registers) for b in blocks) == 150
    blocks = plan_blocks(specs[:10], max_block=7)
    assert all(b.count <= 7 and b.count % 2 == 0 for b in blocks)
    one_each = plan_blocks(specs[:10] + [spec("uint64", 500)], max_block=1)  # one request per value
    assert [b.count for b in one_each] == [4] + [2] * 10


def test_coils_and_discrete_inputs_read_up_to_2000_bits():
    specs = [spec("bool", a, "coil") for a in range(0, 2500, 10)] + [spec("bool", 0, "discrete")]
    blocks = plan_blocks(specs, max_gap=50)
    assert [(b.table, b.address, b.count) for b in blocks] == [("coil", 0, 1991), ("coil", 2000, 491),
                                                               ("discrete", 0, 1)]


def test_decode_block_slices_each_value():
    specs = [spec("int16", 10, name="a"), spec("uint32", 12, name="b", word_order="little"),
             spec("string", 14, name="c", count=1)]
    (block,) = plan_blocks(specs, max_gap=1)
    assert (block.address, block.count) == (10, 5)
    assert decode_block(block, [0xFFFF, 0xDEAD, 0x0002, 0x0001, 0x4F4B]) == {"a": -1, "b": 0x00010002, "c": "OK"}
    with pytest.raises(ValueError):
        decode_block(block, [0, 0])
