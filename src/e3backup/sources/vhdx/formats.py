"""Every VHDX magic number, GUID and on-disk structure layout (MS-VHDX; never change these).

Integers are little-endian; GUIDs are stored mixed-endian, which is `uuid.UUID.bytes_le`.
The pack/unpack helpers here only convert bytes to values and back; deciding whether the
values make sense is `layout.py`'s job.
"""

from __future__ import annotations

import struct
import uuid
from dataclasses import dataclass

from e3backup.sources.vhdx.crc32c import crc32c

KiB = 1024
MiB = 1024 * KiB
TiB = 1024 * 1024 * MiB

# --- fixed file layout -------------------------------------------------------------------------
FILE_ID_SIGNATURE = b"vhdxfile"
HEADER_OFFSETS = (64 * KiB, 128 * KiB)
HEADER_SIZE = 4 * KiB
HEADER_SIGNATURE = b"head"
REGION_TABLE_OFFSETS = (192 * KiB, 256 * KiB)
REGION_TABLE_SIZE = 64 * KiB
REGION_SIGNATURE = b"regi"
REGION_MAX_ENTRIES = 2047
ALIGNMENT = MiB  # regions, log and payload blocks all start on 1 MiB boundaries
HEADER_AREA = MiB  # the first MiB holds file id, headers and region tables

# --- regions -----------------------------------------------------------------------------------
BAT_GUID = uuid.UUID("2DC27766-F623-4200-9D64-115E9BFD4A08")
METADATA_GUID = uuid.UUID("8B7CA206-4790-4B9A-B8FE-575F050F886E")

# --- metadata ----------------------------------------------------------------------------------
METADATA_SIGNATURE = b"metadata"
METADATA_TABLE_SIZE = 64 * KiB
METADATA_MAX_ENTRIES = 2047
METADATA_MAX_ITEM = MiB
FILE_PARAMETERS_GUID = uuid.UUID("CAA16737-FA36-4D43-B3B6-33F0AA44E76B")
VIRTUAL_DISK_SIZE_GUID = uuid.UUID("2FA54224-CD1B-4876-B211-5DBED83BF4B8")
PAGE83_GUID = uuid.UUID("BECA12AB-B2E6-4523-93EF-C309E000C746")
LOGICAL_SECTOR_GUID = uuid.UUID("8141BF1D-A96F-4709-BA47-F233A8FAAB5F")
PHYSICAL_SECTOR_GUID = uuid.UUID("CDA348C7-445D-4471-9CC9-E9885251C556")
PARENT_LOCATOR_GUID = uuid.UUID("A8D35F2D-B30B-454D-ABF7-D3D84834AB0C")
VHDX_PARENT_LOCATOR_TYPE = uuid.UUID("B04AEFB7-D19E-4A81-B789-25B8E9445913")
META_IS_USER = 1
META_IS_VIRTUAL_DISK = 2
META_IS_REQUIRED = 4
FILE_PARAM_LEAVE_ALLOCATED = 1
FILE_PARAM_HAS_PARENT = 2
MIN_BLOCK_SIZE = MiB
MAX_BLOCK_SIZE = 256 * MiB
SECTOR_SIZES = (512, 4096)
MAX_VIRTUAL_SIZE = 64 * TiB

# --- block allocation table --------------------------------------------------------------------
PAYLOAD_NOT_PRESENT = 0
PAYLOAD_UNDEFINED = 1
PAYLOAD_ZERO = 2
PAYLOAD_UNMAPPED = 3
PAYLOAD_UNMAPPED_V095 = 5  # draft 0.95 value; reads like UNMAPPED
PAYLOAD_FULLY_PRESENT = 6
PAYLOAD_PARTIALLY_PRESENT = 7
SB_NOT_PRESENT = 0
SB_PRESENT = 6
BAT_STATE_MASK = 7
BAT_OFFSET_SHIFT = 20  # bits 20-63 hold the file offset in MiB
SECTOR_BITMAP_SIZE = MiB  # one bitmap block covers 2**23 sectors

_HEADER = struct.Struct("<4sIQ16s16s16sHHIQ")
_REGION_HEAD = struct.Struct("<4sIII")
_REGION_ENTRY = struct.Struct("<16sQII")
_META_HEAD = struct.Struct("<8sHH")
_META_ENTRY = struct.Struct("<16sIII4x")
_LOCATOR_HEAD = struct.Struct("<16sHH")
_LOCATOR_ENTRY = struct.Struct("<IIHH")


def chunk_ratio(block_size: int, logical_sector: int) -> int:
    """Payload blocks per sector bitmap block: a bitmap holds 2**23 sector bits."""
    return (1 << 23) * logical_sector // block_size


def payload_bat_index(block: int, ratio: int) -> int:
    """BAT index of payload block `block`: one bitmap entry follows every `ratio` payloads."""
    return block + block // ratio


def bitmap_bat_index(chunk: int, ratio: int) -> int:
    """BAT index of the sector bitmap entry of chunk `chunk`."""
    return chunk * (ratio + 1) + ratio


def bat_entry_count(virtual_size: int, block_size: int, ratio: int, differencing: bool) -> int:
    """Number of BAT entries the spec requires (the region may be larger)."""
    data_blocks = -(-virtual_size // block_size)
    if differencing:
        return -(-data_blocks // ratio) * (ratio + 1)
    return data_blocks + (data_blocks - 1) // ratio


@dataclass(frozen=True)
class Header:
    sequence: int
    file_write_guid: uuid.UUID
    data_write_guid: uuid.UUID
    log_guid: uuid.UUID
    log_version: int
    version: int
    log_length: int
    log_offset: int


def unpack_header(buf: bytes) -> Header | None:
    """The header in a 4 KiB buffer, or None when its signature or CRC-32C is wrong."""
    if len(buf) != HEADER_SIZE or buf[:4] != HEADER_SIGNATURE:
        return None
    (_, crc, seq, fwg, dwg, lg, log_ver, ver, log_len, log_off) = _HEADER.unpack_from(buf)
    if crc32c(buf[:4] + bytes(4) + buf[8:]) != crc:
        return None
    return Header(
        seq,
        uuid.UUID(bytes_le=fwg),
        uuid.UUID(bytes_le=dwg),
        uuid.UUID(bytes_le=lg),
        log_ver,
        ver,
        log_len,
        log_off,
    )


def pack_header(h: Header) -> bytes:
    body = _HEADER.pack(
        HEADER_SIGNATURE,
        0,
        h.sequence,
        h.file_write_guid.bytes_le,
        h.data_write_guid.bytes_le,
        h.log_guid.bytes_le,
        h.log_version,
        h.version,
        h.log_length,
        h.log_offset,
    )
    buf = bytearray(body + bytes(HEADER_SIZE - len(body)))
    struct.pack_into("<I", buf, 4, crc32c(buf))
    return bytes(buf)


@dataclass(frozen=True)
class RegionEntry:
    guid: uuid.UUID
    offset: int
    length: int
    required: bool


def unpack_region_table(buf: bytes) -> list[RegionEntry] | None:
    """The entries of a 64 KiB region table, or None when signature, CRC or count is bad."""
    if len(buf) != REGION_TABLE_SIZE or buf[:4] != REGION_SIGNATURE:
        return None
    _, crc, count, _ = _REGION_HEAD.unpack_from(buf)
    if count > REGION_MAX_ENTRIES or crc32c(buf[:4] + bytes(4) + buf[8:]) != crc:
        return None
    entries = []
    for i in range(count):
        guid, offset, length, flags = _REGION_ENTRY.unpack_from(buf, 16 + 32 * i)
        entries.append(RegionEntry(uuid.UUID(bytes_le=guid), offset, length, bool(flags & 1)))
    return entries


def pack_region_table(entries: list[RegionEntry]) -> bytes:
    buf = bytearray(REGION_TABLE_SIZE)
    _REGION_HEAD.pack_into(buf, 0, REGION_SIGNATURE, 0, len(entries), 0)
    for i, e in enumerate(entries):
        _REGION_ENTRY.pack_into(buf, 16 + 32 * i, e.guid.bytes_le, e.offset, e.length, e.required)
    struct.pack_into("<I", buf, 4, crc32c(buf))
    return bytes(buf)


@dataclass(frozen=True)
class MetadataEntry:
    item: uuid.UUID
    offset: int  # from the start of the metadata region
    length: int
    flags: int


def unpack_metadata_table(buf: bytes) -> list[MetadataEntry] | None:
    """Entries of the 64 KiB metadata table, or None when its signature or count is bad."""
    if len(buf) != METADATA_TABLE_SIZE or buf[:8] != METADATA_SIGNATURE:
        return None
    _, _, count = _META_HEAD.unpack_from(buf)
    if count > METADATA_MAX_ENTRIES:
        return None
    entries = []
    for i in range(count):
        guid, offset, length, flags = _META_ENTRY.unpack_from(buf, 32 + 32 * i)
        entries.append(MetadataEntry(uuid.UUID(bytes_le=guid), offset, length, flags))
    return entries


def pack_metadata(items: list[tuple[uuid.UUID, int, bytes]]) -> bytes:
    """A metadata region body (table + items, unpadded) from `(guid, flags, value)` items."""
    table = bytearray(METADATA_TABLE_SIZE)
    _META_HEAD.pack_into(table, 0, METADATA_SIGNATURE, 0, len(items))
    values = bytearray()
    for i, (guid, flags, value) in enumerate(items):
        offset = METADATA_TABLE_SIZE + len(values)
        _META_ENTRY.pack_into(table, 32 + 32 * i, guid.bytes_le, offset, len(value), flags)
        values += value
        values += bytes(-len(values) % 8)
    return bytes(table + values)


def unpack_parent_locator(buf: bytes) -> tuple[uuid.UUID, dict[str, str]] | None:
    """(locator type, key/value pairs) of a parent locator item, or None if malformed."""
    if len(buf) < _LOCATOR_HEAD.size:
        return None
    type_guid, _, count = _LOCATOR_HEAD.unpack_from(buf)
    if _LOCATOR_HEAD.size + count * _LOCATOR_ENTRY.size > len(buf):
        return None
    pairs: dict[str, str] = {}
    for i in range(count):
        k_off, v_off, k_len, v_len = _LOCATOR_ENTRY.unpack_from(buf, 20 + 12 * i)
        if k_off + k_len > len(buf) or v_off + v_len > len(buf) or k_len % 2 or v_len % 2:
            return None
        try:
            key = buf[k_off : k_off + k_len].decode("utf-16-le")
            value = buf[v_off : v_off + v_len].decode("utf-16-le")
        except UnicodeDecodeError:
            return None
        if not key or key in pairs:
            return None
        pairs[key] = value
    return uuid.UUID(bytes_le=type_guid), pairs


def pack_parent_locator(pairs: dict[str, str]) -> bytes:
    head = bytearray(_LOCATOR_HEAD.pack(VHDX_PARENT_LOCATOR_TYPE.bytes_le, 0, len(pairs)))
    entries = bytearray()
    strings = bytearray()
    base = len(head) + _LOCATOR_ENTRY.size * len(pairs)
    for key, value in pairs.items():
        k, v = key.encode("utf-16-le"), value.encode("utf-16-le")
        k_off = base + len(strings)
        strings += k
        v_off = base + len(strings)
        strings += v
        entries += _LOCATOR_ENTRY.pack(k_off, v_off, len(k), len(v))
    return bytes(head + entries + strings)


# --- log (MS-VHDX 2.3): a ring of 4 KiB sectors holding entries of metadata updates ------------
LOG_SECTOR = 4 * KiB
LOG_ENTRY_SIGNATURE = b"loge"
LOG_ZERO_SIGNATURE = b"zero"
LOG_DATA_DESC_SIGNATURE = b"desc"
LOG_DATA_SIGNATURE = b"data"
LOG_ENTRY_HEADER_SIZE = 64
LOG_DESCRIPTOR_SIZE = 32
LOG_DATA_PAYLOAD = LOG_SECTOR - 12  # a data sector keeps bytes 8..4092 of the logged sector
LOG_LEADING = 8  # the logged sector's first 8 and last 4 bytes live in its descriptor
LOG_TRAILING = 4
LOG_GUID_AT = 32  # where an entry header holds its LogGuid
LOG_UNLOGGABLE = 192 * KiB  # file id and both headers are never updated through the log

_LOG_HEADER = struct.Struct("<4sIIIQII16sQQ")
_LOG_DESCRIPTOR = struct.Struct("<4s4s8sQQ")
_LOG_DATA = struct.Struct("<4sI4084sI")


@dataclass(frozen=True, slots=True)
class LogEntryHeader:
    checksum: int
    entry_length: int
    tail: int  # log offset of the oldest entry still needed
    sequence: int
    descriptor_count: int
    log_guid: uuid.UUID
    flushed_file_offset: int  # the file was at least this long when the entry was written
    last_file_offset: int  # every structure the entry refers to lies below this


@dataclass(frozen=True, slots=True)
class LogDescriptor:
    signature: bytes  # LOG_ZERO_SIGNATURE or LOG_DATA_DESC_SIGNATURE (anything else: invalid)
    file_offset: int
    sequence: int
    zero_length: int = 0  # zero descriptors
    leading: bytes = bytes(LOG_LEADING)  # data descriptors
    trailing: bytes = bytes(LOG_TRAILING)


def log_descriptor_sectors(count: int) -> int:
    """4 KiB sectors holding an entry's header and `count` descriptors (at least one)."""
    used = LOG_ENTRY_HEADER_SIZE + LOG_DESCRIPTOR_SIZE * count
    return max(1, -(-used // LOG_SECTOR))


def unpack_log_entry_header(buf: bytes) -> LogEntryHeader | None:
    """The entry header at the start of a log sector, or None without the 'loge' signature."""
    if len(buf) < LOG_ENTRY_HEADER_SIZE or buf[:4] != LOG_ENTRY_SIGNATURE:
        return None
    _, crc, length, tail, seq, count, _, guid, flushed, last = _LOG_HEADER.unpack_from(buf)
    return LogEntryHeader(crc, length, tail, seq, count, uuid.UUID(bytes_le=guid), flushed, last)


def pack_log_entry_header(h: LogEntryHeader) -> bytes:
    return _LOG_HEADER.pack(
        LOG_ENTRY_SIGNATURE,
        h.checksum,
        h.entry_length,
        h.tail,
        h.sequence,
        h.descriptor_count,
        0,
        h.log_guid.bytes_le,
        h.flushed_file_offset,
        h.last_file_offset,
    )


def unpack_log_descriptor(buf: bytes, offset: int) -> LogDescriptor:
    signature, word, eight, file_offset, seq = _LOG_DESCRIPTOR.unpack_from(buf, offset)
    if signature == LOG_ZERO_SIGNATURE:
        return LogDescriptor(
            signature, file_offset, seq, zero_length=int.from_bytes(eight, "little")
        )
    return LogDescriptor(signature, file_offset, seq, leading=eight, trailing=word)


def pack_log_descriptor(d: LogDescriptor) -> bytes:
    if d.signature == LOG_ZERO_SIGNATURE:
        return _LOG_DESCRIPTOR.pack(
            d.signature, bytes(4), d.zero_length.to_bytes(8, "little"), d.file_offset, d.sequence
        )
    return _LOG_DESCRIPTOR.pack(d.signature, d.trailing, d.leading, d.file_offset, d.sequence)


def unpack_log_data_sector(buf: bytes) -> tuple[bytes, int, bytes]:
    """(signature, sequence number, the 4084 logged bytes) of a 4 KiB data sector."""
    signature, high, payload, low = _LOG_DATA.unpack_from(buf)
    return signature, high << 32 | low, payload


def pack_log_data_sector(sequence: int, payload: bytes) -> bytes:
    return _LOG_DATA.pack(LOG_DATA_SIGNATURE, sequence >> 32, payload, sequence & 0xFFFFFFFF)
