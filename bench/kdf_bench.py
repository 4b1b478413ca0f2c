"""Issue 8 item 5: the password KDF of new key files, as calibrated on this machine.

    .venv/bin/python bench/kdf_bench.py [--rounds 3]

Calibrates argon2id the way `repo init` does (one pass over 64 MiB, scaled to ~0.75 s of CPU,
memory capped at 256 MiB), then times unwrapping a key file with those parameters (CPU time of
the thread and wall time, median of --rounds) beside the scrypt N=2^15 of the first key files.
"""

from __future__ import annotations

import argparse
import hashlib
import statistics
import time
from collections.abc import Callable

from e3backup.repo import formats, keys

REPO_ID = "b" * 64


def _timed(action: Callable[[], object], rounds: int) -> tuple[float, float]:
    cpu, wall = [], []
    for _ in range(rounds):
        start_cpu, start_wall = time.thread_time(), time.perf_counter()
        action()
        cpu.append(time.thread_time() - start_cpu)
        wall.append(time.perf_counter() - start_wall)
    return statistics.median(cpu), statistics.median(wall)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    master = keys.MasterKeys.generate(encrypted=True)
    start = time.perf_counter()
    params = keys.default_kdf()
    calibration_s = time.perf_counter() - start
    argon2_file = keys.wrap(master, "pw", REPO_ID, params)
    argon2_cpu, argon2_wall = _timed(lambda: keys.unwrap(argon2_file, "pw", REPO_ID), args.rounds)
    salt = bytes(16)
    scrypt_cpu, scrypt_wall = _timed(
        lambda: hashlib.scrypt(
            b"pw", salt=salt, n=formats.SCRYPT_N, r=8, p=1, maxmem=2**26, dklen=32
        ),
        args.rounds,
    )
    print("| KDF | parameters | CPU s / guess | wall s / guess |")
    print("|---|---|---|---|")
    print(
        f"| argon2id (new key files) | t={params.time_cost}, m={params.memory_kib // 1024} MiB, "
        f"p={params.parallelism} | {argon2_cpu:.3f} | {argon2_wall:.3f} |"
    )
    print(f"| scrypt (first key files) | N=2^15, r=8, p=1 | {scrypt_cpu:.3f} | {scrypt_wall:.3f} |")
    print(f"calibration took {calibration_s:.3f} s")


if __name__ == "__main__":
    main()
