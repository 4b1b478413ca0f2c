"""CRC-32C (Castagnoli), the checksum VHDX puts in its headers, region tables and log entries.

Pure Python and table-driven: VHDX only checksums a few small structures (4 KiB headers, 64 KiB
region tables) once per open, so a C extension would be a dependency without a payoff.
"""

from __future__ import annotations

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


def crc32c(data: bytes | bytearray | memoryview, crc: int = 0) -> int:
    """CRC-32C of `data`, continuing from `crc` (the result of a previous call, or 0)."""
    table = _TABLE
    value = crc ^ 0xFFFFFFFF
    for byte in bytes(data):
        value = table[(value ^ byte) & 0xFF] ^ (value >> 8)
    return value ^ 0xFFFFFFFF
