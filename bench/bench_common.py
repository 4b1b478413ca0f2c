"""Shared plumbing for the single-image benchmarks (formats_bench.py, s3_bench.py).

They use only the day-1 image, taken from the image cache that run_bench.py fills
(`<workdir>/images/<size in bytes>/day{1,2,3}.img` plus a stamp.json): any valid cache
under bench/work is reused, otherwise run_bench.prepare_images generates one in
bench/work/images/<size> (run_bench's default cache), so later runs share it.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import statistics
from dataclasses import dataclass
from pathlib import Path

import make_image
import report
from run_bench import prepare_images, sha256_file
from tools import REPO_ROOT, Measurement

logger = logging.getLogger("bench")

BENCH_DIR = Path(__file__).resolve().parent
BENCH_WORK = BENCH_DIR / "work"
RESULTS_MD = BENCH_DIR / "RESULTS.md"


@dataclass(frozen=True)
class SourceImage:
    path: Path
    sha256: str
    size: int


def common_args(parser: argparse.ArgumentParser, workdir_name: str) -> None:
    parser.add_argument("--size", type=make_image.parse_size, default=make_image.parse_size("4G"))
    parser.add_argument("--seed", type=int, default=make_image.DEFAULT_SEED)
    parser.add_argument(
        "--workdir",
        type=Path,
        default=BENCH_WORK / workdir_name,
        help="repositories, restores and logs (default: %(default)s)",
    )
    parser.add_argument(
        "--image-dir",
        type=Path,
        help="image cache dir (default: any valid bench/work/*/images/SIZE, "
        "else bench/work/images/SIZE)",
    )
    parser.add_argument("--e3backup", default=str(REPO_ROOT / ".venv" / "bin" / "e3backup"))
    parser.add_argument("--chunk-size", default="256K", help="e3backup repo init --chunk-size")
    parser.add_argument(
        "--write-results",
        action="store_true",
        help="replace this benchmark's section of --results-file",
    )
    parser.add_argument(
        "--results-file",
        type=Path,
        default=RESULTS_MD,
        help="markdown file for --write-results (default: bench/RESULTS.md)",
    )


def _valid_cache(image_dir: Path, size: int, seed: int) -> bool:
    stamp = image_dir / "stamp.json"
    wanted = {"size": size, "seed": seed, "generator": make_image.GENERATOR_VERSION}
    try:
        return json.loads(stamp.read_text()) == wanted and (image_dir / "day1.img").exists()
    except (OSError, ValueError):
        return False


def day1_image(size: int, seed: int, image_dir: Path | None) -> SourceImage:
    """The cached day-1 image (generated if needed), read once to warm the page cache."""
    candidates = (
        [image_dir]
        if image_dir
        else [BENCH_WORK / "images" / str(size), *sorted(BENCH_WORK.glob(f"*/images/{size}"))]
    )
    found = next((d for d in candidates if _valid_cache(d, size, seed)), None)
    if found is None:
        target = image_dir or BENCH_WORK / "images" / str(size)
        logger.info("no cached %d-byte images; generating in %s", size, target)
        images, digests = prepare_images(target, size, seed)
        return SourceImage(images[0], digests[0], size)
    path = found / "day1.img"
    logger.info("using cached image %s", path)
    return SourceImage(path, sha256_file(path), size)


def allocated_bytes(path: Path) -> int:
    return os.stat(path).st_blocks * 512


def mib(n: int) -> str:
    return f"{n / report.MIB:.1f}"


def secs(m: Measurement | None) -> str:
    return f"{m.wall_s:.2f}" if m else "-"


def rate(size: int, m: Measurement | None) -> str:
    return f"{report.mb_per_s(size, m):.0f}" if m else "-"


def rss(m: Measurement | None) -> str:
    return f"{m.max_rss_bytes / report.MIB:.0f}" if m else "-"


def verdict(ok: bool) -> str:
    return "PASS" if ok else "FAIL"


def machine_lines() -> list[str]:
    info = report.machine_info()
    load = os.getloadavg()[0]
    return [
        f"- machine: {info['host']}, {info['nproc']} CPUs ({info['cpu']}), {info['ram']} RAM, "
        f"kernel {info['kernel']}; run {info['date']}, 1-min load at the end {load:.2f}"
    ]


def median_run(runs: list[Measurement]) -> Measurement | None:
    """Median wall and CPU time over rounds, with the highest peak RSS of any round."""
    if not runs:
        return None
    return Measurement(
        statistics.median(m.wall_s for m in runs),
        statistics.median(m.cpu_s for m in runs),
        max(m.max_rss_bytes for m in runs),
    )


def per_round(label: str, runs: list[Measurement]) -> str:
    return f"{label} " + "/".join(f"{m.wall_s:.2f}" for m in runs)


def write_section(results_file: Path, section: str, parts: list[str], setup: list[str]) -> None:
    """Replace this benchmark's marked section of RESULTS.md: title, setup lines, tables."""
    body = "\n".join([parts[0], "", *setup, "", "\n\n".join(parts[1:])])
    report.update_section(results_file, section, body)
    print(f"updated section '{section}' of {results_file}")
