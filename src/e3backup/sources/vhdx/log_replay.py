"""Replay a VHDX log in memory (MS-VHDX 2.3) so a disk that was not shut down cleanly reads as
Hyper-V would see it, without ever writing the file.

The log is a ring of 4 KiB sectors. An *entry* is a 'loge' header, its 'desc' (4 KiB of data)
and 'zero' descriptors, then one 'data' sector per data descriptor, all carrying the entry's
sequence number and covered by its CRC-32C. Entries count only if they carry the header's
LogGuid (older sessions leave entries behind). The *active sequence* is the run of entries,
adjacent in the ring with consecutive sequence numbers, whose newest entry's Tail points at
an entry of the run; the one with the highest sequence number wins and is replayed from that
tail entry on, in order.

This is stricter than a replaying hypervisor, on purpose: a backup must never silently read
a half-replayed disk. Any entry of the current session that fails validation (signature,
lengths, descriptors, data sectors, checksum) and any valid entry that is newer than, or
missing from, the active sequence refuses the file. The one exception is a *torn write*: an
invalid entry exactly where the active sequence's next entry would go, with nothing newer
anywhere in the log, is the log write the host crashed in. It was never acknowledged to the
guest and never applied to the file, so it is left out (with a warning), as Hyper-V does.
Every 4 KiB sector is read at most a few times and each entry's checksum is computed once: a
valid entry's other sectors start with 'desc', 'zero' or 'data', so entries cannot overlap.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Callable
from dataclasses import dataclass

from e3backup.core.errors import ImageFormatError
from e3backup.sources.vhdx import formats as f
from e3backup.sources.vhdx.crc32c import crc32c
from e3backup.sources.vhdx.log_overlay import LogOverlay

log = logging.getLogger(__name__)
ReadAt = Callable[[int, int], bytes]
SECTOR = f.LOG_SECTOR


class _Invalid(Exception):
    """Why one entry is not valid; `partial`: what an unfinished write of it would look like
    (a sector not written yet), as opposed to a complete entry with wrong contents."""

    def __init__(self, reason: str, partial: bool = False) -> None:
        super().__init__(reason)
        self.partial = partial


@dataclass(frozen=True)
class _Entry:
    position: int  # log offset of its header
    header: f.LogEntryHeader
    descriptors: tuple[f.LogDescriptor, ...]
    payloads: tuple[bytes, ...]  # the 4084 logged bytes of each data descriptor, in order

    @property
    def sequence(self) -> int:
        return self.header.sequence


class _Ring:
    def __init__(self, read_at: ReadAt, offset: int, length: int) -> None:
        self.read_at, self.offset, self.length = read_at, offset, length

    def sector(self, position: int) -> bytes:
        return self.read_at(self.offset + position % self.length, SECTOR)


def replay_log(read_at: ReadAt, file_size: int, header: f.Header, name: str) -> LogOverlay | None:
    """The replayed view of the file, or None when the log holds nothing to replay.

    `header` is the current header, its log already checked to lie inside the file. Raises
    ImageFormatError when the log is damaged or cannot be replayed.
    """

    def refuse(reason: str) -> ImageFormatError:
        return ImageFormatError(
            f"{name}: the VHDX was not shut down cleanly and its log cannot be replayed: "
            f"{reason}. Its contents are unknown; open it in Hyper-V (or repair a copy with "
            "`qemu-img check -r all`) and check the result before backing it up"
        )

    if header.log_guid.int == 0 or header.log_length == 0:
        return None
    ring = _Ring(read_at, header.log_offset, header.log_length)
    entries, damaged = _scan(ring, header.log_guid)
    active = _active_sequence(entries, ring.length)
    torn = _torn_write(damaged, entries, active, ring.length)
    if torn is not None:
        damaged.remove(torn)
        log.warning(
            "%s: the log entry at log offset %#x was torn by a crash (%s); it was never "
            "applied, so it is not replayed",
            name,
            torn[0],
            torn[1],
        )
    if damaged:
        position, reason, _ = damaged[0]
        raise refuse(f"damaged log entry at log offset {position:#x}: {reason}")
    if active is None:
        if entries:
            raise refuse("no complete log sequence (entries are missing between the tail and head)")
        return None  # the LogGuid was set but nothing was logged yet: the file is as it was
    _check_others(entries, active, refuse)
    return _overlay(active, file_size, header, refuse)


# log offset, reason, and when the damage may be an unfinished write: the entry's sequence
# number (or HEADER_TORN when its header sector itself is unreadable), else None
Damaged = tuple[int, str, int | None]
HEADER_TORN = -1


def _scan(ring: _Ring, guid: uuid.UUID) -> tuple[list[_Entry], list[Damaged]]:
    """Valid entries of this session and the damaged ones."""
    entries: list[_Entry] = []
    damaged: list[Damaged] = []
    guid_bytes = guid.bytes_le
    position = 0
    while position < ring.length:
        first = ring.sector(position)
        hdr = f.unpack_log_entry_header(first)
        ours = first[f.LOG_GUID_AT : f.LOG_GUID_AT + 16] == guid_bytes
        if hdr is None or hdr.log_guid != guid:
            if ours:  # this session's LogGuid where an entry header's is: a damaged header
                damaged.append((position, "its signature is not 'loge'", HEADER_TORN))
            position += SECTOR
            continue
        try:
            entries.append(_parse_entry(ring, position, hdr, first))
        except _Invalid as exc:
            partial = hdr.sequence if exc.partial else None
            damaged.append((position, f"sequence {hdr.sequence}: {exc}", partial))
            position += SECTOR
            continue
        position += hdr.entry_length
    return entries, damaged


def _parse_entry(ring: _Ring, position: int, hdr: f.LogEntryHeader, first: bytes) -> _Entry:
    """Validate one entry, reading its sectors once; raises _Invalid."""
    sectors = hdr.entry_length // SECTOR
    if hdr.entry_length % SECTOR or not 0 < hdr.entry_length <= ring.length:
        raise _Invalid(f"entry length {hdr.entry_length} is not a multiple of 4 KiB in the log")
    if hdr.sequence == 0:
        raise _Invalid("sequence number 0")
    if hdr.tail % SECTOR or hdr.tail >= ring.length:
        raise _Invalid(f"tail {hdr.tail:#x} is not a sector of the log")
    desc_sectors = f.log_descriptor_sectors(hdr.descriptor_count)
    if desc_sectors > sectors:
        raise _Invalid(f"{hdr.descriptor_count} descriptors do not fit in the entry")
    crc = crc32c(first[:4] + bytes(4) + first[8:])
    block = first
    descriptors: list[f.LogDescriptor] = []
    for i in range(hdr.descriptor_count):
        at = f.LOG_ENTRY_HEADER_SIZE + f.LOG_DESCRIPTOR_SIZE * i
        if at % SECTOR == 0:  # the next descriptor sector (the header fills the first 64 bytes)
            block = ring.sector(position + at)
            crc = crc32c(block, crc)
        descriptors.append(_checked_descriptor(f.unpack_log_descriptor(block, at % SECTOR), hdr))
    data_count = sum(d.signature == f.LOG_DATA_DESC_SIGNATURE for d in descriptors)
    if desc_sectors + data_count != sectors:
        raise _Invalid(
            f"entry length {hdr.entry_length} does not match its {hdr.descriptor_count} "
            f"descriptors ({data_count} with data)"
        )
    payloads = []
    for j in range(data_count):
        raw = ring.sector(position + (desc_sectors + j) * SECTOR)
        signature, sequence, payload = f.unpack_log_data_sector(raw)
        if signature != f.LOG_DATA_SIGNATURE:
            raise _Invalid(f"data sector {j} has no 'data' signature", partial=True)
        if sequence != hdr.sequence:
            raise _Invalid(f"data sector {j} carries sequence number {sequence}", partial=True)
        crc = crc32c(raw, crc)
        payloads.append(payload)
    if crc != hdr.checksum:
        raise _Invalid("checksum mismatch", partial=True)
    return _Entry(position, hdr, tuple(descriptors), tuple(payloads))


def _checked_descriptor(d: f.LogDescriptor, hdr: f.LogEntryHeader) -> f.LogDescriptor:
    if d.signature not in (f.LOG_ZERO_SIGNATURE, f.LOG_DATA_DESC_SIGNATURE):
        raise _Invalid(f"descriptor signature {d.signature!r} is neither 'desc' nor 'zero'")
    if d.sequence != hdr.sequence:
        raise _Invalid(f"a descriptor carries sequence number {d.sequence}")
    if d.file_offset % SECTOR:
        raise _Invalid(f"descriptor file offset {d.file_offset:#x} is not 4 KiB aligned")
    if d.signature == f.LOG_ZERO_SIGNATURE and (d.zero_length % SECTOR or not d.zero_length):
        raise _Invalid(f"zero descriptor length {d.zero_length} is not a multiple of 4 KiB")
    return d


def _torn_write(
    damaged: list[Damaged], entries: list[_Entry], active: list[_Entry] | None, ring_length: int
) -> Damaged | None:
    """The damaged entry that is the active sequence's interrupted next write, if any."""
    if active is None or not damaged:
        return None
    head = active[-1]
    if any(e.sequence > head.sequence for e in entries):
        return None  # something newer was written after it: real damage, not a torn write
    next_position = (head.position + head.header.entry_length) % ring_length
    for candidate in damaged:
        position, _, sequence = candidate
        if position == next_position and sequence in (HEADER_TORN, head.sequence + 1):
            return candidate
    return None


def _active_sequence(entries: list[_Entry], ring_length: int) -> list[_Entry] | None:
    """The entries to replay, oldest first, or None when no sequence is complete."""
    by_position = {e.position: e for e in entries}
    previous: dict[int, _Entry] = {}
    has_next: set[int] = set()
    for e in entries:
        following = by_position.get((e.position + e.header.entry_length) % ring_length)
        if following is not None and following.sequence == e.sequence + 1:
            previous[following.position] = e
            has_next.add(e.position)
    best: list[_Entry] | None = None
    for head in entries:
        if head.position in has_next:
            continue
        run = [head]  # walk back to the entry at the head's tail (each entry is visited once)
        while run[-1].position != head.header.tail and run[-1].position in previous:
            run.append(previous[run[-1].position])
        if run[-1].position == head.header.tail and (
            best is None or head.sequence > best[-1].sequence
        ):
            best = run[::-1]
    return best


def _check_others(
    entries: list[_Entry], active: list[_Entry], refuse: Callable[[str], ImageFormatError]
) -> None:
    """Entries outside the active sequence must be older than its tail."""
    replayed = {e.position for e in active}
    tail, head = active[0].sequence, active[-1].sequence
    for e in entries:
        if e.position not in replayed and e.sequence >= tail:
            raise refuse(
                f"the log entry at log offset {e.position:#x} (sequence {e.sequence}) is not "
                f"part of the active sequence {tail}..{head}: entries are missing or out of order"
            )


def _overlay(
    active: list[_Entry],
    file_size: int,
    header: f.Header,
    refuse: Callable[[str], ImageFormatError],
) -> LogOverlay:
    flushed = max(e.header.flushed_file_offset for e in active)
    if flushed > file_size:
        raise refuse(
            f"the log says the file was at least {flushed} bytes long, it has {file_size}: "
            "the file was truncated"
        )
    log_start, log_end = header.log_offset, header.log_offset + header.log_length
    overlay = LogOverlay(file_size, max(e.header.last_file_offset for e in active))
    for e in active:
        limit = max(file_size, e.header.last_file_offset)
        payloads = iter(e.payloads)
        for d in e.descriptors:
            is_zero = d.signature == f.LOG_ZERO_SIGNATURE
            start = d.file_offset
            end = start + (d.zero_length if is_zero else SECTOR)
            if start < f.LOG_UNLOGGABLE or end > limit or (start < log_end and log_start < end):
                raise refuse(
                    f"the log entry with sequence {e.sequence} writes [{start:#x}, {end:#x}), "
                    f"outside the file's loggable range (headers, log, end {limit:#x})"
                )
            if is_zero:
                overlay.put(start, end, None)
            else:
                overlay.put(start, end, d.leading + next(payloads) + d.trailing)
    return overlay
