"""A VM-like sample disk for the demo: sparse zero runs, random data and compressible text."""

from __future__ import annotations

import random
from pathlib import Path

from e3backup.core import platform_io

_WORDS = (
    b"kernel: eth0 link up systemd[1]: Started session of user root. sshd: Accepted publickey "
    b"for admin from 10.0.0.7 port 51122 INFO WARN ERROR /var/log/syslog dhcp lease renewed "
).split()
_RUN_BYTES = 1024 * 1024
BLOCK_BYTES = 64 * 1024


def make_sample_image(path: Path, size_bytes: int, seed: int = 1) -> None:
    """About 40 % holes, 30 % random, 30 % log-like text, in 1-4 MiB runs."""
    rng = random.Random(seed)
    with open(path, "wb") as f:
        f.truncate(size_bytes)
        offset = 0
        while offset < size_bytes:
            run = min(rng.randint(1, 4) * _RUN_BYTES, size_bytes - offset)
            kind = rng.random()
            if kind >= 0.4:
                data = rng.randbytes(run) if kind < 0.7 else _text(rng, run)
                platform_io.pwrite(f.fileno(), data, offset)
            offset += run


def change_blocks(path: Path, fraction: float, seed: int = 2) -> list[tuple[int, int]]:
    """Overwrite `fraction` of the image in scattered 64 KiB blocks; returns the changed extents."""
    size = path.stat().st_size
    rng = random.Random(seed)
    blocks = max(1, int(size * fraction) // BLOCK_BYTES)
    starts = sorted(rng.sample(range(size // BLOCK_BYTES), blocks))
    with open(path, "r+b") as f:
        for block in starts:
            platform_io.pwrite(f.fileno(), rng.randbytes(BLOCK_BYTES), block * BLOCK_BYTES)
    return [(block * BLOCK_BYTES, BLOCK_BYTES) for block in starts]


def _text(rng: random.Random, length: int) -> bytes:
    line = b" ".join(rng.choice(_WORDS) for _ in range(4096))
    parts = []
    total = 0
    while total < length:
        piece = line[rng.randrange(len(line) // 2) :] + b"%d\n" % rng.getrandbits(32)
        parts.append(piece)
        total += len(piece)
    return b"".join(parts)[:length]
