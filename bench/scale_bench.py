"""Issue 8: the chunk index at repository scale (10 million chunks ≈ 1.2 TiB of 128 KiB chunks).

    .venv/bin/python bench/scale_bench.py [--sizes 10M] [--old-src DIR] [--write-results]

What is real and what is synthetic. The repository is a real encrypted repository on local
storage, opened, checked and pruned by the real code:
- index objects: real, encrypted, 4096 entries each (what a write session writes: 32 packs of
  128 chunks), never compacted by a prune, so the open reads thousands of objects;
- packs: real objects (blobs, an encrypted trailer listing exactly the indexed entries, footer),
  128 entries each; but the *data* blobs are 16 bytes of filler, not encrypted chunks, so the
  repository is ~1 GiB instead of 1.2 TiB. Nothing measured here reads data blobs;
- snapshots: 10 real manifests whose disk index pages (real encrypted page blobs in real packs)
  name 95 % of the chunks; the other 5 % (the last packs) are garbage for prune.
Measured, each in its own child process (bench/scale_child.py; VmHWM is that process's peak):
open = load the index (Repository.index), then lookups of 200k indexed ids one by one (`get`)
and in pages of 1024 (`locate_many`); check = `check_repository` (structure: every index object,
every pack's presence and size, every snapshot page and chunk reference); prune = `prune
--dry-run` (lists and loads everything, reads every page of every snapshot, classifies packs).
`--old-src` runs the same children with another checkout's src (the code before the rework).
The build is cached per size in the work dir. Objects are written straight into the local
layout without LocalBackend's two fsyncs per object (same bytes, no durability needed here).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import blake3
import numpy as np

from bench_common import BENCH_WORK, RESULTS_MD, machine_lines, verdict, write_section
from e3backup.core.ids import new_id
from e3backup.repo import formats
from e3backup.repo.chunk_index import ChunkLocation, IndexEntries
from e3backup.repo.index_file import encode_index_entries
from e3backup.repo.index_rows import ROW_DTYPE
from e3backup.repo.manifest import DiskRecord, Snapshot
from e3backup.repo.pack import PackBuilder
from e3backup.repo.repository import Repository
from e3backup.storage.local import LocalBackend

HERE = Path(__file__).resolve().parent
PASSWORD = "bench-password-not-secret"
CHUNK = 128 * 1024
PER_PACK = 128
PER_INDEX = 4096
SNAPSHOTS = 10
GARBAGE = 0.05
FILLER = 16  # bytes per synthetic data blob
SAMPLE = 200_000
BUILD_VERSION = 1
MIB = 1024 * 1024
TARGETS = {"open_s": 10.0, "batched": 500_000, "bytes_per_chunk": 64, "rss": 2048 * MIB}

_TRAILER_ROW = np.dtype(
    {
        "names": ["type", "id", "offset", "length", "raw"],
        "formats": ["u1", "V32", "<u4", "<u4", "<u4"],
        "offsets": [0, 1, 33, 37, 41],
        "itemsize": formats.PACK_ENTRY.size,
    }
)


def parse_count(text: str) -> int:
    units = {"k": 1000, "M": 1000**2}
    return int(float(text[:-1]) * units[text[-1]]) if text[-1] in units else int(text)


def _put(root: Path, key: str, data: bytes | bytearray) -> None:
    path = root.joinpath(*key.split("/"))
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)


def _data_pack(repo: Repository, rows: Any) -> bytes:
    """A real pack holding `rows` (filler blobs), its trailer listing exactly them."""
    trailer_rows = np.empty(len(rows), dtype=_TRAILER_ROW)
    for name in ("type", "id", "offset", "length", "raw"):
        trailer_rows[name] = rows[name]
    body = formats.TRAILER_COUNT.pack(len(rows)) + trailer_rows.tobytes()
    trailer = repo.codec.encode(body, formats.TRAILER_AD)
    footer = formats.PACK_FOOTER.pack(len(trailer), formats.PACK_MAGIC)
    return bytes(FILLER * len(rows)) + trailer + footer


def _write_index(repo: Repository, root: Path, entries: IndexEntries) -> None:
    for start in range(0, len(entries), PER_INDEX):
        part = IndexEntries(entries.rows[start : start + PER_INDEX], entries.pack_ids)
        payload = encode_index_entries(part)
        key = formats.INDEX_PREFIX + blake3.blake3(payload).hexdigest()
        _put(root, key, repo.codec.encode(payload, key.encode()))


def _data_chunks(repo: Repository, root: Path, ids: Any) -> None:
    rows = np.zeros(len(ids), dtype=ROW_DTYPE)
    rows["id"] = ids.view("V32").ravel()
    rows["type"] = formats.BLOB_DATA
    rows["offset"] = (np.arange(len(ids)) % PER_PACK) * FILLER
    rows["length"] = FILLER
    rows["raw"] = CHUNK
    pack_ids = []
    for number, start in enumerate(range(0, len(ids), PER_PACK)):
        part = rows[start : start + PER_PACK]
        data = _data_pack(repo, part)
        pack_id = blake3.blake3(data).digest()
        _put(root, formats.pack_key(pack_id), data)
        pack_ids.append(pack_id)
        rows["pack"][start : start + PER_PACK] = number
    _write_index(repo, root, IndexEntries(rows, pack_ids))


def _snapshots(repo: Repository, root: Path, referenced: Any) -> None:
    """Manifests whose pages (real page blobs in real packs) name the referenced chunks."""
    builder, entries = PackBuilder(), []

    def seal() -> None:
        nonlocal builder
        pack_id, data, packed = builder.finish(repo.codec)
        _put(root, formats.pack_key(pack_id), data)
        entries.extend(
            (e.chunk_id, ChunkLocation(pack_id, e.blob_type, e.offset, e.length, e.raw_length))
            for e in packed
        )
        builder = PackBuilder()

    for number, disk_ids in enumerate(np.array_split(referenced, SNAPSHOTS)):
        pages = []
        for start in range(0, len(disk_ids), formats.PAGE_ENTRIES):
            page = disk_ids[start : start + formats.PAGE_ENTRIES].tobytes()
            page_id = repo.codec.chunk_id(page)
            builder.add(formats.BLOB_PAGE, page_id, repo.codec.encode(page, page_id), len(page))
            pages.append(page_id.hex())
            if builder.size_bytes >= 16 * MIB:
                seal()
        disk = DiskRecord("disk0", len(disk_ids) * CHUNK, CHUNK, pages)
        snapshot = Snapshot(
            new_id(), datetime.now(UTC).isoformat(), "bench", "image", f"scale-{number}",
            f"disk-{number}.img", "Full", None, [disk],
        )  # fmt: skip
        key = formats.SNAPSHOTS_PREFIX + snapshot.id
        _put(root, key, repo.codec.encode(snapshot.to_json(), key.encode()))
    if len(builder):
        seal()
    _write_index(repo, root, IndexEntries.from_items(entries))


def build(root: Path, chunks: int) -> Path:
    """The repository for `chunks` chunks (cached); returns the file of sample ids."""
    stamp = {"chunks": chunks, "version": BUILD_VERSION, "per_pack": PER_PACK}
    stamp_file, sample_file = root / "bench-stamp.json", root.parent / f"{root.name}.sample"
    if stamp_file.exists() and json.loads(stamp_file.read_text()) == stamp:
        return sample_file
    if root.exists():
        subprocess.run(["rm", "-rf", str(root)], check=True)
    root.mkdir(parents=True)
    repo = Repository.init(LocalBackend(root), PASSWORD, chunk_size=CHUNK)
    rng = np.random.default_rng(chunks)
    ids = rng.integers(0, 256, size=(chunks, formats.ID_BYTES), dtype=np.uint8)
    _data_chunks(repo, root, ids)
    live = ids[: int(chunks * (1 - GARBAGE))]
    _snapshots(repo, root, live)
    sample_file.write_bytes(live[rng.choice(len(live), min(SAMPLE, len(live)))].tobytes())
    stamp_file.write_text(json.dumps(stamp))
    return sample_file


def measure(operation: str, root: Path, sample: Path, src: Path) -> dict[str, Any]:
    env = {**os.environ, "PYTHONPATH": str(src)}
    child = subprocess.run(
        [sys.executable, str(HERE / "scale_child.py"), operation, str(root), str(sample)],
        capture_output=True, text=True, env=env, check=False,
    )  # fmt: skip
    if child.returncode != 0:
        raise RuntimeError(f"{operation} failed:\n{child.stderr[-3000:]}")
    doc: dict[str, Any] = json.loads(child.stdout)
    if Path(doc["code"]).resolve() != src.resolve():
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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sizes", default="10M", help="comma-separated chunk counts (100k,10M)")
    parser.add_argument("--old-src", type=Path, help="src dir of a checkout to compare with")
    parser.add_argument("--old-max", type=parse_count, default=parse_count("500k"))
    parser.add_argument("--workdir", type=Path, default=BENCH_WORK / "scale")
    parser.add_argument("--write-results", action="store_true")
    parser.add_argument("--results-file", type=Path, default=RESULTS_MD)
    args = parser.parse_args()
    codes = [("after", HERE.parent / "src")]
    if args.old_src:
        codes.insert(0, ("before", args.old_src))
    lines, targets = [], []
    for chunks in map(parse_count, args.sizes.split(",")):
        root = args.workdir / f"repo-{chunks}"
        print(f"building {chunks:,} chunks in {root}", flush=True)
        sample = build(root, chunks)
        for label, src in codes:
            if label == "before" and chunks > args.old_max:
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
    print("\n".join(targets))
    if args.write_results:
        title = "## Chunk index at scale (issue 8; bench/scale_bench.py)"
        setup = [
            *machine_lines(),
            f"- repository: real encrypted local repository; index objects of {PER_INDEX} "
            f"entries, packs of {PER_PACK} entries, {SNAPSHOTS} snapshots naming "
            f"{1 - GARBAGE:.0%} of the chunks; data blobs are {FILLER}-byte filler (see the "
            "bench's docstring for what is synthetic)",
            "- each operation in its own child process; peak RSS = VmHWM; B/chunk = RSS growth "
            "while loading the index / chunks; before = the code before the rework",
        ]
        write_section(args.results_file, "scale", [title, table, "\n".join(targets)], setup)


if __name__ == "__main__":
    main()
