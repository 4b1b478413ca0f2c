"""CRC-32C (Castagnoli), the checksum VHDX puts in its headers, region tables and log entries.

Pure Python and table-driven. The checksummed structures are mostly zero padding (a 64 KiB
region table holds a few dozen bytes of entries), so trailing zeros are skipped in O(log n)
with precomputed "advance over 2**k zero bytes" operators: CRC is linear over GF(2), and a zero
byte maps the register v to table[v & 0xFF] ^ (v >> 8). That makes checking a whole file's
structures cost microseconds instead of tens of milliseconds, without a C extension.
"""

from __future__ import annotations

import functools

_POLY = 0x82F63B78  # reflected Castagnoli polynomial


def _make_table() -> tuple[int, ...]:
    table = []
    for n in range(256):
        crc = n
        for _ in range(8):
            crc = (crc >> 1) ^ _POLY if crc & 1 else crc >> 1
        table.append(crc)
    return tuple(table)


_TABLE = _make_table()
Operator = tuple[int, ...]  # images of the 32 unit vectors


def _apply(op: Operator, value: int) -> int:
    result = 0
    bit = 0
    while value:
        if value & 1:
            result ^= op[bit]
        value >>= 1
        bit += 1
    return result


@functools.cache
def _zero_operator(k: int) -> Operator:
    """The operator that advances the CRC register over 2**k zero bytes (built on first use)."""
    if k == 0:
        return tuple(_TABLE[(1 << i) & 0xFF] ^ ((1 << i) >> 8) for i in range(32))
    prev = _zero_operator(k - 1)
    return tuple(_apply(prev, column) for column in prev)


def crc32c(data: bytes | bytearray | memoryview, crc: int = 0) -> int:
    """CRC-32C of `data`, continuing from `crc` (the result of a previous call, or 0)."""
    raw = bytes(data)
    body = raw.rstrip(b"\0")
    table = _TABLE
    value = crc ^ 0xFFFFFFFF
    for byte in body:
        value = table[(value ^ byte) & 0xFF] ^ (value >> 8)
    zeros = len(raw) - len(body)
    k = 0
    while zeros:
        if zeros & 1:
            value = _apply(_zero_operator(k), value)
        zeros >>= 1
        k += 1
    return value ^ 0xFFFFFFFF
