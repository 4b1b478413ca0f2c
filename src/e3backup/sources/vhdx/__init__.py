"""VHDX, the Hyper-V disk format, read and written natively (MS-VHDX).

A VHDX *block* is a fixed-size run of the virtual disk (1-256 MiB) that the *BAT* (block
allocation table) maps to a 1 MiB-aligned offset in the file, or marks absent/zero. A
*differencing* disk (AVHDX) holds only some sectors and names its *parent* disk, recorded in
per-chunk *sector bitmaps*, for the rest.
"""

from e3backup.sources.vhdx.formats import FILE_ID_SIGNATURE
from e3backup.sources.vhdx.reader import VhdxReader
from e3backup.sources.vhdx.writer import ParentLink, VhdxWriter, write_vhdx


def looks_like_vhdx(prefix: bytes) -> bool:
    """True when the first bytes of a file carry the VHDX file identifier."""
    return prefix.startswith(FILE_ID_SIGNATURE)


__all__ = [
    "FILE_ID_SIGNATURE",
    "ParentLink",
    "VhdxReader",
    "VhdxWriter",
    "looks_like_vhdx",
    "write_vhdx",
]
