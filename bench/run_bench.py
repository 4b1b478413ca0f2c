"""e3backup vs restic vs borg on the same VM-like images, in one run.

    bench/run.sh                                   # 4 GiB, all tools
    bench/run.sh --size 256M --tools restic,borg   # smoke run
    bench/run.sh --write-results                   # also rewrite bench/RESULTS.md

Per variant: init a fresh repository, back up day 1, day 2, day 3 (each copied
over ONE working path, bench/work/src/disk.img, so every tool sees the same path
and treats days 2 and 3 as incrementals of it), restore the latest snapshot and
check its sha256 against day 3.

Fairness rules:
- Images are generated first, then read once in full (sha256, which is the same
  as `cat > /dev/null`): every tool starts with the images in the page cache.
- Before each backup the day's image is copied over the working path and sync()ed,
  so no tool pays for another's writeback.
- Every timed command ends with sync(), so the wall time includes getting the
  repository (or the restored image) to disk whether the tool fsyncs or not.
- Peak RSS and CPU come from os.wait4 on the tool's own process.
- restic and borg keep their caches under the work dir, one per variant, created
  fresh; cache size is not counted in repository size (`du -sb` of the repo).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import logging
import shutil
import sys
import time
from dataclasses import asdict
from pathlib import Path

import make_image
import report
from tools import REPO_ROOT, BenchError, Borg, E3backup, Restic, Tool, copy_image

logger = logging.getLogger("bench")

ALL_TOOLS = ("e3backup", "restic", "borg", "borg-fixed-4M", "borg-fixed-64K")
DEFAULT_TOOLS = ",".join(ALL_TOOLS)
DAYS = (1, 2, 3)


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(8 << 20):
            digest.update(block)
    return digest.hexdigest()


def dir_bytes(path: Path) -> int:
    """Apparent size like `du -sb`."""
    return sum(p.lstat().st_size for p in path.rglob("*")) + path.lstat().st_size


def prepare_images(image_dir: Path, size_bytes: int, seed: int) -> tuple[list[Path], list[str]]:
    image_dir.mkdir(parents=True, exist_ok=True)
    stamp = image_dir / "stamp.json"
    wanted = {"size": size_bytes, "seed": seed, "generator": make_image.GENERATOR_VERSION}
    images = [image_dir / f"day{d}.img" for d in DAYS]
    if not (
        stamp.exists()
        and json.loads(stamp.read_text()) == wanted
        and all(p.exists() for p in images)
    ):
        stamp.unlink(missing_ok=True)
        for day, path in zip(DAYS, images, strict=True):
            started = time.monotonic()
            base = images[day - 2] if day > 1 else None
            make_image.generate(path, size_bytes, day, seed, base)
            logger.info("generated %s in %.1f s", path.name, time.monotonic() - started)
        stamp.write_text(json.dumps(wanted))
    digests = [sha256_file(p) for p in images]  # also warms the page cache for everyone
    return images, digests


def make_tools(
    names: list[str], chunk_sizes: list[str], state_dir: Path, e3_bin: str
) -> list[Tool]:
    tools: list[Tool] = []
    for name in names:
        if name == "e3backup":
            tools += [E3backup(c, e3_bin) for c in chunk_sizes]
        elif name == "restic":
            tools.append(Restic(state_dir / "restic-cache"))
        elif name == "borg":
            tools.append(Borg("borg", state_dir / "borg-home", None))
        elif name == "borg-fixed-4M":
            tools.append(Borg(name, state_dir / f"{name}-home", "fixed,4194304"))
        elif name == "borg-fixed-64K":
            tools.append(Borg(name, state_dir / f"{name}-home", "fixed,65536"))
        else:
            raise BenchError(f"unknown tool {name!r}; choose from {DEFAULT_TOOLS}")
    return tools


def bench_tool(
    tool: Tool, images: list[Path], day3_sha: str, work: Path, keep_repo: bool
) -> report.VariantResult:
    result = report.VariantResult(tool.name, tool.version())
    repo, out_dir, state = work / "repos" / tool.name, work / "restore", work / "state"
    source = work / "src" / "disk.img"
    log = work / "logs" / f"{tool.name}.log"
    for path in (repo, out_dir, state):
        shutil.rmtree(path, ignore_errors=True)
    for path in (repo.parent, out_dir, state, source.parent, log.parent):
        path.mkdir(parents=True, exist_ok=True)
    log.unlink(missing_ok=True)
    try:
        tool.init(repo, log)
        for day, image in zip(DAYS, images, strict=True):
            copy_image(image, source)
            result.backups.append(tool.backup(repo, source, day, log))
            result.repo_bytes.append(dir_bytes(repo))
            logger.info(
                "%s day %d: %.1f s, repo %.1f MiB",
                tool.name,
                day,
                result.backups[-1].wall_s,
                result.repo_bytes[-1] / report.MIB,
            )
        result.restore, restored = tool.restore(repo, out_dir, source, log)
        result.restore_ok = sha256_file(restored) == day3_sha
        logger.info(
            "%s restore: %.1f s, sha256 %s",
            tool.name,
            result.restore.wall_s,
            "ok" if result.restore_ok else "MISMATCH",
        )
        if not result.restore_ok:
            logger.error("!!! %s RESTORED DATA DIFFERS FROM DAY 3 (%s) !!!", tool.name, restored)
    except (BenchError, OSError) as exc:
        result.error = str(exc)
        logger.error("%s failed: %s", tool.name, exc)
    finally:
        shutil.rmtree(out_dir, ignore_errors=True)
        if not keep_repo:
            shutil.rmtree(repo, ignore_errors=True)
    return result


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--size", type=make_image.parse_size, default=make_image.parse_size("4G"))
    parser.add_argument("--tools", default=DEFAULT_TOOLS, help=f"comma list of {DEFAULT_TOOLS}")
    parser.add_argument("--chunk-sizes", default="64K,256K,1M", help="e3backup chunk sizes")
    parser.add_argument("--seed", type=int, default=make_image.DEFAULT_SEED)
    parser.add_argument("--workdir", type=Path, default=Path(__file__).resolve().parent / "work")
    parser.add_argument("--e3backup", default=str(REPO_ROOT / ".venv" / "bin" / "e3backup"))
    parser.add_argument("--keep-repos", action="store_true")
    parser.add_argument(
        "--write-results", action="store_true", help="rewrite bench/RESULTS.md with this run"
    )
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", datefmt="%H:%M:%S")
    work: Path = args.workdir.resolve()
    names = [n.strip() for n in args.tools.split(",") if n.strip()]
    chunk_sizes = [c.strip() for c in args.chunk_sizes.split(",") if c.strip()]
    tools = make_tools(names, chunk_sizes, work / "state", args.e3backup)
    images, digests = prepare_images(work / "images" / f"{args.size}", args.size, args.seed)
    results = [bench_tool(t, images, digests[-1], work, args.keep_repos) for t in tools]

    size_text = f"{args.size / (1 << 30):.2f} GiB ({args.size} bytes)"
    text = "\n\n".join(
        [
            f"## Results ({size_text}; MB/s = 10^6 bytes of image per second)",
            report.results_table(results, args.size),
            "## e3backup / peer (x = speed-up, >1: e3backup faster; ratio < 1: e3backup smaller)",
            report.ratio_table(results, args.size),
            "## Targets against the fastest peer in any configuration",
            report.targets_table(results, args.size),
            "## Targets against restic and borg with default settings",
            report.targets_table(results, args.size, {"restic", "borg"}),
        ]
    )
    print(text)
    raw = [asdict(r) for r in results]
    (work / "results.json").write_text(json.dumps({"size": args.size, "results": raw}, indent=1))
    if args.write_results:
        generator = f"generator v{make_image.GENERATOR_VERSION}"
        config = {
            "image": f"{size_text}, seed {args.seed}, {generator}",
            "tools": args.tools,
            "e3backup chunk sizes": args.chunk_sizes,
            "method": "see docstring of bench/run_bench.py (warm cache, sync included)",
        }
        report.write_results_md(
            Path(__file__).resolve().parent / "RESULTS.md", results, args.size, config, text
        )
    failed = [r.name for r in results if not r.complete or not r.restore_ok]
    if failed:
        print(f"\n!!! FAILED OR MISMATCHED: {', '.join(failed)} !!!", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
