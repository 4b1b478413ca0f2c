"""Issue 8: the chunk index at repository scale (10 million chunks ≈ 1.2 TiB of 128 KiB chunks).

    .venv/bin/python bench/scale_bench.py [--sizes 10M] [--old-src DIR] [--write-results]

The repository (tests/fixtures/scale_repo.py says exactly what is real and what is synthetic):
a real encrypted local repository whose index objects (4096 entries each, as write sessions
write them and never compacted by a prune, so the open reads thousands of objects), packs
(128 entries, real trailers) and 10 snapshots with real disk index pages are all real; only the
data blobs are 16 bytes of filler instead of 128 KiB chunks, so it takes ~1.3 GiB, not 1.2 TiB.
Nothing measured here reads data blobs.
Measured, each in its own child process (bench/scale_child.py; VmHWM is that process's peak):
open = load the index (Repository.index), then 200k lookups of indexed ids one by one (`get`)
and in pages of 1024 (`locate_many`); check = `check_repository` (structure: every index
object, every pack's presence and size, every page and chunk reference of every snapshot);
prune = `prune --dry-run` (lists and loads everything, reads every page of every snapshot,
classifies every pack). `--real-prune` also measures a real prune on a copy of the repository
(prune-real: forget 3 of the 10 snapshots, prune past their grace to unindex, prune past the
packs' grace to delete; repack threshold 0, since the filler blobs cannot be repacked: packs
holding any live chunk stay and only whole garbage packs are dropped). `--old-src` runs the
same children on another checkout's src (the code before the rework). The build is cached per
size in the work dir.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np

from bench_common import BENCH_WORK, RESULTS_MD, machine_lines, verdict, write_section

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from fixtures.scale_repo import (
    FILLER,
    GARBAGE,
    PER_INDEX,
    PER_PACK,
    SNAPSHOTS,
    build_scale_repo,
)

HERE = Path(__file__).resolve().parent
PASSWORD = "bench-password-not-secret"
SAMPLE = 200_000
BUILD_VERSION = 1
MIB = 1024 * 1024
TARGETS = {"open_s": 10.0, "batched": 500_000, "bytes_per_chunk": 64, "rss": 2048 * MIB}


def parse_count(text: str) -> int:
    units = {"k": 1000, "M": 1000**2}
    return int(float(text[:-1]) * units[text[-1]]) if text[-1] in units else int(text)


def build(root: Path, chunks: int) -> Path:
    """The repository for `chunks` chunks (cached); returns the file of sample ids."""
    stamp = {"chunks": chunks, "version": BUILD_VERSION, "per_pack": PER_PACK}
    stamp_file, sample_file = root / "bench-stamp.json", root.parent / f"{root.name}.sample"
    if stamp_file.exists() and json.loads(stamp_file.read_text()) == stamp:
        return sample_file
    if root.exists():
        subprocess.run(["rm", "-rf", str(root)], check=True)
    root.mkdir(parents=True)
    built = build_scale_repo(root, chunks, PASSWORD, seed=chunks)
    live = built.live_ids
    pick = np.random.default_rng(1).choice(len(live), min(SAMPLE, len(live)))
    sample_file.write_bytes(live[pick].tobytes())
    stamp_file.write_text(json.dumps(stamp))
    return sample_file


def measure(
    operation: str, root: Path, sample: Path, src: Path, check_code: bool = True
) -> dict[str, Any]:
    env = {**os.environ, "PYTHONPATH": str(src)}
    child = subprocess.run(
        [sys.executable, str(HERE / "scale_child.py"), operation, str(root), str(sample)],
        capture_output=True, text=True, env=env, check=False,
    )  # fmt: skip
    if child.returncode != 0:
        raise RuntimeError(f"{operation} failed:\n{child.stderr[-3000:]}")
    doc: dict[str, Any] = json.loads(child.stdout)
    if check_code and Path(doc["code"]).resolve() != src.resolve():
        raise RuntimeError(f"child ran {doc['code']}, not {src}")
    return doc


def _row(chunks: int, label: str, m: dict[str, dict[str, Any]]) -> str:
    opened, check, prune = m["open"], m["check"], m["prune"]
    batched = f"{opened['batched_per_s']:,.0f}" if "batched_per_s" in opened else "-"
    cells = [
        f"{chunks:,}", label, f"{opened['seconds']:.1f}", f"{opened['peak_rss'] / MIB:.0f}",
        f"{opened['index_bytes'] / chunks:.0f}", f"{opened['single_per_s']:,.0f}", batched,
        f"{check['seconds']:.1f}", f"{check['peak_rss'] / MIB:.0f}",
        f"{prune['seconds']:.1f}", f"{prune['peak_rss'] / MIB:.0f}",
    ]  # fmt: skip
    return "| " + " | ".join(cells) + " |"


def _targets(chunks: int, m: dict[str, dict[str, Any]]) -> list[str]:
    opened = m["open"]
    checks = [
        (f"open ≤ {TARGETS['open_s']:.0f} s", opened["seconds"] <= TARGETS["open_s"]),
        ("≥ 500,000 lookups/s batched", opened.get("batched_per_s", 0) >= TARGETS["batched"]),
        ("≤ 64 B of RAM per chunk", opened["index_bytes"] / chunks <= TARGETS["bytes_per_chunk"]),
        ("check ≤ 2 GiB peak RSS", m["check"]["peak_rss"] <= TARGETS["rss"]),
        ("prune ≤ 2 GiB peak RSS", m["prune"]["peak_rss"] <= TARGETS["rss"]),
        ("check finds no damage", bool(m["check"]["ok"])),
    ]
    return [f"- {chunks:,} chunks, {name}: {verdict(ok)}" for name, ok in checks]


def real_prune(root: Path, sample: Path, src: Path) -> dict[str, Any]:
    """prune-real on a copy of `root` (it deletes data), removed afterwards."""
    scratch = root.parent / f"{root.name}-prune"
    subprocess.run(["rm", "-rf", str(scratch)], check=True)
    subprocess.run(["cp", "-a", str(root), str(scratch)], check=True)
    try:
        return measure("prune-real", scratch, sample, src)
    finally:
        subprocess.run(["rm", "-rf", str(scratch)], check=True)


def _real_row(chunks: int, label: str, doc: dict[str, Any]) -> str:
    cells = [
        f"{chunks:,}", label, f"{doc['seconds']:.1f}", f"{doc['peak_rss'] / MIB:.0f}",
        f"{doc['unindex_s']:.1f}", f"{doc['unindex_rss'] / MIB:.0f}",
        f"{doc['unindex']['unindexed']:,}", f"{doc['unindex']['rewritten']:,}",
        f"{doc['delete_s']:.1f}", f"{doc['delete']['deleted']:,}",
    ]  # fmt: skip
    return "| " + " | ".join(cells) + " |"


REAL_HEADER = (
    "| chunks | code | prune (real: forget + unindex + delete) s | peak RSS MiB | unindex s "
    "| unindex peak RSS MiB | packs unindexed | index objects rewritten | delete s "
    "| packs deleted |\n|" + "---:|" * 10
)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sizes", default="10M", help="comma-separated chunk counts (100k,10M)")
    parser.add_argument("--old-src", type=Path, help="src dir of a checkout to compare with")
    parser.add_argument("--old-max", type=parse_count, default=parse_count("500k"))
    parser.add_argument("--workdir", type=Path, default=BENCH_WORK / "scale")
    parser.add_argument("--real-prune", action="store_true", help="also prune-real (a copy)")
    parser.add_argument("--only-real-prune", action="store_true", help="skip open/check/plan")
    parser.add_argument("--write-results", action="store_true")
    parser.add_argument("--results-file", type=Path, default=RESULTS_MD)
    args = parser.parse_args()
    codes = [("after", HERE.parent / "src")]
    if args.old_src:
        codes.insert(0, ("before", args.old_src))
    touch = measure("touch", args.workdir, Path(), HERE.parent / "src", check_code=False)
    lines, targets, real_lines = [], [], []
    for chunks in map(parse_count, args.sizes.split(",")):
        root = args.workdir / f"repo-{chunks}"
        print(f"building {chunks:,} chunks in {root}", flush=True)
        sample = build(root, chunks)
        for label, src in codes:
            if label == "before" and chunks > args.old_max:
                continue
            if args.real_prune or args.only_real_prune:
                doc = real_prune(root, sample, src)
                real_lines.append(_real_row(chunks, label, doc))
                print(real_lines[-1], json.dumps(doc), flush=True)
                targets.append(
                    f"- {chunks:,} chunks ({label}), real prune ≤ 2 GiB peak RSS: "
                    f"{verdict(doc['peak_rss'] <= TARGETS['rss'])}"
                )
            if args.only_real_prune:
                continue
            results = {op: measure(op, root, sample, src) for op in ("open", "check", "prune")}
            assert results["open"]["chunks"] >= chunks, results["open"]
            assert results["open"]["single_found"] and results["open"].get("batched_found", 1)
            lines.append(_row(chunks, label, results))
            print(lines[-1], json.dumps(results), flush=True)
            if label == "after":
                targets += _targets(chunks, results)
    header = (
        "| chunks | code | open s | open peak RSS MiB | index B/chunk | lookups/s single "
        "| lookups/s batched (1024) | check s | check peak RSS MiB | prune plan s "
        "| prune peak RSS MiB |\n|" + "---:|" * 11
    )
    table = "\n".join([header, *lines])
    print(table)
    if real_lines:
        print("\n".join([REAL_HEADER, *real_lines]))
    print(f"fresh memory: {touch['ms_per_mib']:.1f} ms/MiB")
    print("\n".join(targets))
    if args.write_results:
        title = "## Chunk index at scale (issue 8; bench/scale_bench.py)"
        setup = [
            *machine_lines(),
            f"- repository: real encrypted local repository; index objects of {PER_INDEX} "
            f"entries, packs of {PER_PACK} entries, {SNAPSHOTS} snapshots naming "
            f"{1 - GARBAGE:.0%} of the chunks; data blobs are {FILLER}-byte filler "
            "(tests/fixtures/scale_repo.py says what is synthetic)",
            "- each operation in its own child process; peak RSS = VmHWM; B/chunk = RSS growth "
            "while loading the index / chunks; before = the code before the rework",
            f"- first writes to fresh memory cost {touch['ms_per_mib']:.1f} ms/MiB on this VM "
            "at the time of the run (host-side page faults; it varied from 1.5 to 23 ms/MiB "
            "during the day); opening 10M chunks writes ~0.8 GiB",
        ]
        write_section(args.results_file, "scale", [title, table, "\n".join(targets)], setup)


if __name__ == "__main__":
    main()
