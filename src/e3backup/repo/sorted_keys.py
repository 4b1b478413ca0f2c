"""The sorted key arrays of the chunk index: 8.5 bytes per chunk, found in a few cached steps.

Keys are the first 8 bytes of chunk ids read as a little-endian uint64, uniformly spread because
ids are hashes. A directory on the top `bits` bits of the key (about 16 keys per bucket) gives
each key's bucket, and inside a bucket positions are sorted by the next 32 bits (`sub`, a
uint32), so a lookup touches the directory and one or two cache lines instead of the ~24 levels
of a binary search over the whole array; and the array costs 4 bytes a key instead of 8. Keys
whose bucket and sub-key agree form a run that callers scan with a full-id comparison.
`rows[p]` is the row (in the index's row storage) of position p.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

U32 = npt.NDArray[np.uint32]
U64 = npt.NDArray[np.uint64]
I64 = npt.NDArray[np.int64]

_KEYS_PER_BUCKET = 16
_LOW32 = np.uint64(0xFFFFFFFF)
_SLICE = 1 << 20


def _bits_for(count: int) -> int:
    return min(32, (count // _KEYS_PER_BUCKET).bit_length())


class SortedKeys:
    """Replaced wholesale on every change (never written in place), so a reader holding the
    arrays of one version may keep using them."""

    def __init__(self) -> None:
        self.bits = 0
        self.directory: U32 = np.zeros(2, dtype=np.uint32)  # first position of each bucket
        self.sub: U32 = np.empty(0, dtype=np.uint32)
        self.rows: U32 = np.empty(0, dtype=np.uint32)

    def __len__(self) -> int:
        return len(self.rows)

    def split(self, keys: U64) -> tuple[I64, U32]:
        """(bucket, sub-key) of each key."""
        if self.bits == 0:
            buckets = np.zeros(len(keys), dtype=np.int64)
        else:
            buckets = (keys >> np.uint64(64 - self.bits)).astype(np.int64)
        return buckets, ((keys >> np.uint64(32 - self.bits)) & _LOW32).astype(np.uint32)

    def rebuild(self, keys: U64, rows: U32) -> None:
        """From keys sorted in full and the row of each."""
        self.bits = bits = _bits_for(len(keys))
        bounds = np.arange(2**bits, dtype=np.uint64) << np.uint64(64 - bits) if bits else [0]
        directory = np.empty(2**bits + 1, dtype=np.uint32)
        directory[:-1] = np.searchsorted(keys, np.asarray(bounds, dtype=np.uint64))
        directory[-1] = len(keys)
        self.directory, self.rows = directory, rows
        self.sub = np.empty(len(keys), dtype=np.uint32)
        for start in range(0, len(keys), _SLICE):  # in slices: no key-sized temporaries
            part = keys[start : start + _SLICE]
            self.sub[start : start + _SLICE] = (part >> np.uint64(32 - bits)) & _LOW32

    def needs_rebuild(self, count: int) -> bool:
        return _bits_for(count) >= self.bits + 2  # buckets four times their planned size

    def insert(self, keys: U64, rows: U32) -> None:
        """Merge sorted new keys in without re-sorting the old ones."""
        buckets, subs = self.split(keys)
        at, _ = self.lower_bound(buckets, subs)
        self.sub = np.insert(self.sub, at, subs)
        self.rows = np.insert(self.rows, at, rows)
        shift = np.searchsorted(buckets, np.arange(len(self.directory)), side="left")
        self.directory = (self.directory + shift).astype(np.uint32)

    def lower_bound(self, buckets: I64, subs: U32) -> tuple[I64, I64]:
        """For each (bucket, sub): the first position not below it, and its bucket's end. A
        vectorized binary search bounded by the bucket: a handful of steps."""
        lo = self.directory[buckets].astype(np.int64)
        end = self.directory[buckets + 1].astype(np.int64)
        hi = end.copy()
        last = max(len(self.sub) - 1, 0)
        sub = self.sub if len(self.sub) else np.zeros(1, dtype=np.uint32)
        while True:
            active = lo < hi
            if not active.any():
                return lo, end
            mid = (lo + hi) >> 1
            less = active & (sub[np.minimum(mid, last)] < subs)
            lo = np.where(less, mid + 1, lo)
            hi = np.where(active & ~less, mid, hi)

    def run_of(self, key: int) -> tuple[int, int, int]:
        """(first position, bucket end, sub-key) for one key, without numpy arrays per call."""
        bits = self.bits
        bucket = key >> (64 - bits) if bits else 0
        sub_key = (key >> (32 - bits)) & 0xFFFFFFFF
        lo, end = int(self.directory[bucket]), int(self.directory[bucket + 1])
        return lo + int(self.sub[lo:end].searchsorted(np.uint32(sub_key))), end, sub_key
