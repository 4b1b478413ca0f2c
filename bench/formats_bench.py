"""Issue 3: e3backup backup and restore of a dynamic VHDX versus the same disk as raw.

    .venv/bin/python bench/formats_bench.py [--size 4G] [--workdir DIR] [--write-results]

The day-1 bench image (cached, see bench_common.py) is converted once with
`qemu-img convert -O vhdx -o subformat=dynamic` (32 MiB blocks; kept in the work dir
while the image's sha256 matches) and checked equal to the raw image. Then, in one
run, each into its own fresh repository: back up the raw image, back up the VHDX,
restore the raw backup as raw (`restore latest --to X`) and the VHDX backup as VHDX
(`--format vhdx`). That round is repeated --rounds times (default 3; fresh
repositories, raw/VHDX order alternating) and the median times count; peak RSS is
the highest of any round. Both sources are read in full first (warm page cache);
every timed command ends with sync() (tools.run_measured). Checks, every round:
sha256 of the raw restore equals the image; `qemu-img compare` of the VHDX restore
against the source VHDX, and `qemu-img check` of it. Target: VHDX time <= 1.15 x raw
time for backup and for restore. MB/s is virtual disk bytes (10^6) per second.
"""

from __future__ import annotations

import argparse
import logging
import shutil
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

import report
from bench_common import (
    SourceImage,
    allocated_bytes,
    common_args,
    day1_image,
    machine_lines,
    median_run,
    mib,
    rate,
    rss,
    secs,
    verdict,
    write_section,
)
from run_bench import dir_bytes, sha256_file
from tools import BenchError, E3backup, Measurement, output_of, resolve

logger = logging.getLogger("bench")

SECTION = "formats"
MAX_SLOWDOWN = 1.15


@dataclass
class FormatResult:
    name: str
    source: Path
    source_alloc: int = 0
    backups: list[Measurement] = field(default_factory=list)
    restores: list[Measurement] = field(default_factory=list)
    repo_bytes: int = 0
    restored_alloc: int = 0
    check: str = "not run"

    @property
    def ok(self) -> bool:
        return self.check == "ok"

    @property
    def backup(self) -> Measurement | None:
        return median_run(self.backups)

    @property
    def restore(self) -> Measurement | None:
        return median_run(self.restores)


def qemu_img(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([resolve("qemu-img"), *args], capture_output=True, text=True, check=False)


def make_vhdx(image: SourceImage, out: Path) -> Path:
    """Dynamic VHDX with the image's content; reused while the image's sha256 matches."""
    stamp = out.with_suffix(".vhdx.source-sha256")
    if out.exists() and stamp.exists() and stamp.read_text() == image.sha256:
        logger.info("using cached %s", out)
        return out
    stamp.unlink(missing_ok=True)
    out.unlink(missing_ok=True)
    out.parent.mkdir(parents=True, exist_ok=True)
    result = qemu_img(
        "convert", "-f", "raw", "-O", "vhdx", "-o", "subformat=dynamic", str(image.path), str(out)
    )
    if result.returncode != 0:
        raise BenchError(f"qemu-img convert failed: {result.stderr}")
    same = qemu_img("compare", "-f", "raw", "-F", "vhdx", str(image.path), str(out))
    if same.returncode != 0:
        raise BenchError(f"converted VHDX differs from the raw image: {same.stdout}{same.stderr}")
    stamp.write_text(image.sha256)
    logger.info(
        "converted %s -> %s (%s MiB allocated)", image.path.name, out, mib(allocated_bytes(out))
    )
    return out


def check_vhdx(restored: Path, source: Path) -> str:
    same = qemu_img("compare", "-f", "vhdx", "-F", "vhdx", str(restored), str(source))
    if same.returncode != 0:
        return f"**MISMATCH** ({(same.stdout + same.stderr).strip()[:80]})"
    consistent = qemu_img("check", "-f", "vhdx", str(restored))
    if consistent.returncode != 0:
        return f"**qemu-img check failed** ({(consistent.stdout + consistent.stderr)[:80]})"
    return "ok"


def run(args: argparse.Namespace) -> tuple[list[FormatResult], SourceImage, str]:
    work: Path = args.workdir.resolve()
    image = day1_image(args.size, args.seed, args.image_dir)
    vhdx = make_vhdx(image, work / "sources" / f"day1-{args.size}.vhdx")
    sha256_file(vhdx)  # warm the page cache like the raw image (day1_image read it)
    tool = E3backup(args.chunk_size, args.e3backup)
    repos, out_dir, logs = work / "repos", work / "restore", work / "logs"
    for path in (repos, out_dir):
        shutil.rmtree(path, ignore_errors=True)
    for path in (repos, out_dir, logs):
        path.mkdir(parents=True, exist_ok=True)
    log = logs / "formats.log"
    log.unlink(missing_ok=True)
    results = [FormatResult("raw", image.path), FormatResult("vhdx", vhdx)]
    for r in results:
        r.source_alloc = allocated_bytes(r.source)
    try:
        for round_no in range(1, args.rounds + 1):
            order = results if round_no % 2 else results[::-1]  # alternate who goes first
            for path in (repos, out_dir):
                shutil.rmtree(path, ignore_errors=True)
                path.mkdir()
            for r in order:
                tool.init(repos / r.name, log)
            for r in order:
                r.backups.append(tool.backup(repos / r.name, r.source, 1, log))
                r.repo_bytes = dir_bytes(repos / r.name)
                logger.info("round %d backup %s: %.2f s", round_no, r.name, r.backups[-1].wall_s)
            for r in order:
                m, restored = tool.restore(
                    repos / r.name, out_dir, r.source, log, fmt=None if r.name == "raw" else r.name
                )
                r.restores.append(m)
                r.restored_alloc = allocated_bytes(restored)
                logger.info("round %d restore %s: %.2f s", round_no, r.name, m.wall_s)
                if r.name == "raw":
                    same = sha256_file(restored) == image.sha256
                    r.check = "ok" if same else "**MISMATCH**"
                else:
                    r.check = check_vhdx(restored, r.source)
                restored.unlink()
                if not r.ok:
                    raise BenchError(f"{r.name} restore: {r.check} (round {round_no})")
    finally:
        shutil.rmtree(out_dir, ignore_errors=True)
        shutil.rmtree(repos, ignore_errors=True)
    return results, image, tool.version()


def results_table(results: list[FormatResult], size: int) -> str:
    header = [
        "source",
        "file MiB (alloc)",
        "backup s",
        "backup MB/s",
        "backup RSS MiB",
        "backup CPU s",
        "repo MiB",
        "restore s",
        "restore MB/s",
        "restore RSS MiB",
        "restore CPU s",
        "restored MiB (alloc)",
        "verify",
    ]
    rows = [
        [
            r.name,
            mib(r.source_alloc),
            secs(r.backup),
            rate(size, r.backup),
            rss(r.backup),
            f"{r.backup.cpu_s:.1f}" if r.backup else "-",
            mib(r.repo_bytes),
            secs(r.restore),
            rate(size, r.restore),
            rss(r.restore),
            f"{r.restore.cpu_s:.1f}" if r.restore else "-",
            mib(r.restored_alloc),
            r.check,
        ]
        for r in results
    ]
    return report.markdown_table(header, rows)


def ratio_table(raw: FormatResult, vhdx: FormatResult) -> tuple[str, bool]:
    rows, passed = [], True
    for what, a, b in (("backup", raw.backup, vhdx.backup), ("restore", raw.restore, vhdx.restore)):
        assert a is not None and b is not None
        ratio = b.wall_s / a.wall_s
        passed &= ratio <= MAX_SLOWDOWN
        rows.append(
            [
                what,
                f"{a.wall_s:.2f}",
                f"{b.wall_s:.2f}",
                f"{ratio:.2f}x",
                verdict(ratio <= MAX_SLOWDOWN),
                f"{b.max_rss_bytes / max(1, a.max_rss_bytes):.2f}",
            ]
        )
    header = [
        "step",
        "raw s",
        "vhdx s",
        f"vhdx/raw time (<= {MAX_SLOWDOWN}x)",
        "verdict",
        "vhdx/raw peak RSS",
    ]
    return report.markdown_table(header, rows), passed


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    common_args(parser, "formats")
    parser.add_argument(
        "--rounds",
        type=int,
        default=3,
        help="repeat init/backups/restores, alternating the order; "
        "times are medians (default: %(default)s)",
    )
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", datefmt="%H:%M:%S")
    try:
        results, image, version = run(args)
    except (BenchError, OSError) as exc:
        print(f"\n!!! formats benchmark failed: {exc}", file=sys.stderr)
        return 1
    raw, vhdx = results
    size_text = f"{args.size / (1 << 30):.2f} GiB ({args.size} bytes)"
    parts = [
        f"## VHDX vs raw, e3backup (issue 3; {size_text} virtual disk, "
        f"median of {args.rounds} round(s); MB/s = 10^6 bytes of disk per second)",
        results_table(results, args.size),
    ]
    passed = False
    if all(r.backup and r.restore for r in results):
        table, passed = ratio_table(raw, vhdx)
        parts.append(table)
    passed &= all(r.ok for r in results)
    parts.append(
        "Per round (s): "
        + "; ".join(
            f"{r.name} {step} " + "/".join(f"{m.wall_s:.2f}" for m in runs)
            for step in ("backup", "restore")
            for r in results
            for runs in [r.backups if step == "backup" else r.restores]
        )
    )
    text = "\n\n".join(parts)
    print(text)
    print(
        f"\nissue 3 target (VHDX <= {MAX_SLOWDOWN}x raw time, restores verified): {verdict(passed)}"
    )
    if args.write_results:
        qemu = output_of([resolve("qemu-img"), "--version"])
        setup = [
            *machine_lines(),
            f"- e3backup: {version}, repo init --chunk-size {args.chunk_size}",
            f"- source: day-1 bench image ({image.path.name}, seed "
            f"{args.seed}) and its `qemu-img convert -O vhdx -o subformat=dynamic` copy "
            f"({qemu})",
            "- method: docstring of `bench/formats_bench.py` (fresh repo per format, "
            "warm cache, sync included)",
            f"- verdict: **{verdict(passed)}**",
        ]
        write_section(args.results_file, SECTION, parts, setup)
    return 0 if passed else 1


if __name__ == "__main__":
    sys.exit(main())
