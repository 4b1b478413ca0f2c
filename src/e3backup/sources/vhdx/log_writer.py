"""Leave a pending log in a finished VHDX, as a host that stopped mid-update would (MS-VHDX 2.3).

The entries' updates go to the log only, never to the rest of the file, and both headers get
the entries' LogGuid, so the file reads as intended only once its log is replayed (qemu-img
check -r all, Hyper-V, or `VhdxReader`). Used to build test disks that stand in for ones
copied from a crashed Hyper-V host.

An entry is a list of operations applied in order: `(file_offset, data)` writes whole 4 KiB
sectors (`data` a multiple of 4 KiB), `(file_offset, length)` zeroes a range.
"""

from __future__ import annotations

import dataclasses
import os
import struct
import uuid
from collections.abc import Sequence
from pathlib import Path

from e3backup.core.errors import UsageError
from e3backup.sources.vhdx import formats as f
from e3backup.sources.vhdx.crc32c import crc32c

LogOp = tuple[int, bytes | int]
SECTOR = f.LOG_SECTOR


def pack_log_entry(
    sequence: int,
    log_guid: uuid.UUID,
    tail: int,
    ops: Sequence[LogOp],
    flushed_file_offset: int,
    last_file_offset: int,
) -> bytes:
    """One complete log entry (header, descriptors, data sectors) with its checksum."""
    descriptors: list[f.LogDescriptor] = []
    data_sectors: list[bytes] = []
    for offset, op in ops:
        if isinstance(op, int):
            descriptors.append(f.LogDescriptor(f.LOG_ZERO_SIGNATURE, offset, sequence, op))
            continue
        if len(op) % SECTOR or offset % SECTOR:
            raise UsageError("log writes must cover whole, aligned 4 KiB sectors")
        for at in range(0, len(op), SECTOR):
            sector = op[at : at + SECTOR]
            lead, trail = sector[: f.LOG_LEADING], sector[SECTOR - f.LOG_TRAILING :]
            descriptors.append(
                f.LogDescriptor(
                    f.LOG_DATA_DESC_SIGNATURE, offset + at, sequence, leading=lead, trailing=trail
                )
            )
            data_sectors.append(
                f.pack_log_data_sector(sequence, sector[f.LOG_LEADING : SECTOR - f.LOG_TRAILING])
            )
    desc_sectors = f.log_descriptor_sectors(len(descriptors))
    header = f.LogEntryHeader(
        0,
        (desc_sectors + len(data_sectors)) * SECTOR,
        tail,
        sequence,
        len(descriptors),
        log_guid,
        flushed_file_offset,
        last_file_offset,
    )
    buf = bytearray(desc_sectors * SECTOR)
    buf[: f.LOG_ENTRY_HEADER_SIZE] = f.pack_log_entry_header(header)
    for i, d in enumerate(descriptors):
        at = f.LOG_ENTRY_HEADER_SIZE + f.LOG_DESCRIPTOR_SIZE * i
        buf[at : at + f.LOG_DESCRIPTOR_SIZE] = f.pack_log_descriptor(d)
    buf += b"".join(data_sectors)
    struct.pack_into("<I", buf, 4, crc32c(buf))
    return bytes(buf)


def write_pending_log(
    path: str | os.PathLike[str],
    entries: Sequence[Sequence[LogOp]],
    *,
    first_sequence: int = 1,
    start: int = 0,
    tail: int | None = None,
    log_guid: uuid.UUID | None = None,
    flushed_file_offset: int | None = None,
    last_file_offset: int | None = None,
) -> uuid.UUID:
    """Write `entries` into the log ring from log offset `start`, contiguously (wrapping at
    the end), with consecutive sequence numbers; every entry's Tail is `tail` (default
    `start`). File offsets default to the file's length. Returns the LogGuid now in the headers.
    """
    guid = log_guid or uuid.uuid4()
    with Path(path).open("r+b") as fh:
        size = os.fstat(fh.fileno()).st_size
        headers = []
        for offset in f.HEADER_OFFSETS:
            fh.seek(offset)
            headers.append(f.unpack_header(fh.read(f.HEADER_SIZE)))
        valid = [h for h in headers if h is not None]
        if not valid:
            raise UsageError(f"{path}: not a finished VHDX")
        current = max(valid, key=lambda h: h.sequence)
        ring = b"".join(
            pack_log_entry(
                first_sequence + i,
                guid,
                start if tail is None else tail,
                ops,
                size if flushed_file_offset is None else flushed_file_offset,
                size if last_file_offset is None else last_file_offset,
            )
            for i, ops in enumerate(entries)
        )
        if len(ring) > current.log_length or start % SECTOR or start >= current.log_length:
            raise UsageError(f"{path}: {len(ring)} bytes of log entries do not fit its log")
        first_part = ring[: current.log_length - start]
        for at, piece in ((start, first_part), (0, ring[len(first_part) :])):
            fh.seek(current.log_offset + at)
            fh.write(piece)
        for i, offset in enumerate(f.HEADER_OFFSETS):
            fh.seek(offset)
            header = dataclasses.replace(current, sequence=current.sequence + 1 + i, log_guid=guid)
            fh.write(f.pack_header(header))
    return guid
