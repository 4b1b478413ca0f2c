"""Read plans: which fixed-size chunks of a disk must be read (pure functions)."""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator
from pathlib import Path

from e3backup.core.errors import UsageError


def chunks_touching(
    extents: Iterable[tuple[int, int]], chunk_size: int, size_bytes: int
) -> Iterator[int]:
    """Chunk numbers overlapping any extent, ascending and unique. Extents may be unsorted."""
    last = -1
    for offset, length in sorted(extents):
        if length <= 0:
            continue
        end = min(offset + length, size_bytes)
        if offset >= end:
            continue
        first_chunk = max(offset // chunk_size, last + 1)
        last_chunk = (end - 1) // chunk_size
        yield from range(first_chunk, last_chunk + 1)
        last = max(last, last_chunk)


def load_changed_extents(path: Path) -> list[tuple[int, int]]:
    """Read a JSON list of [offset, length] pairs, as change trackers report them."""
    try:
        doc = json.loads(Path(path).read_text())
    except OSError as exc:
        raise UsageError(f"cannot read changed-extents file {path}: {exc.strerror}") from exc
    except ValueError as exc:
        raise UsageError(f"changed-extents file {path} is not valid JSON: {exc}") from exc
    if not isinstance(doc, list):
        raise UsageError(f"{path}: expected a JSON list of [offset, length] pairs")
    extents = []
    for item in doc:
        ok = (
            isinstance(item, list)
            and len(item) == 2
            and all(isinstance(v, int) and not isinstance(v, bool) and v >= 0 for v in item)
        )
        if not ok:
            raise UsageError(
                f"{path}: bad extent {item!r}; expected [offset, length] (integers ≥ 0)"
            )
        extents.append((item[0], item[1]))
    return extents
