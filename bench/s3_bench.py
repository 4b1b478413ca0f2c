"""Issue 4: e3backup vs restic, backup and restore over S3 to SeaweedFS on this machine.

    .venv/bin/python bench/s3_bench.py [--size 4G] [--workdir DIR] [--write-results]

Starts a fresh SeaweedFS (`weed mini`, 127.0.0.1, telemetry off; seaweed_server.py)
and, in one run against that server, for each tool: init a repository in bucket
`bench` (e3backup: `--repo s3://bench/e3-rN` with AWS_* credentials and
AWS_ENDPOINT_URL; restic: `-r s3:http://127.0.0.1:PORT/bench/restic-rN`, repository
version 2, `--compression auto`, a fresh --cache-dir), back up the day-1 bench image
and restore the latest snapshot to a local file. The image is read in full first
(warm page cache); each timed command ends with sync() (tools.run_measured), peak RSS
and CPU are the client's own (the server's peak RSS is reported separately). Both
restores are checked by sha256. --rounds N repeats everything on the same server
(new prefixes, alternating which tool goes first) and reports medians. Target:
e3backup restore at least 2x as fast as restic's. MB/s is image bytes (10^6) per second.
"""

from __future__ import annotations

import argparse
import logging
import shutil
import sys
from dataclasses import dataclass, field
from pathlib import Path

import report
from bench_common import (
    SourceImage,
    common_args,
    day1_image,
    machine_lines,
    median_run,
    mib,
    per_round,
    rate,
    rss,
    secs,
    verdict,
    write_section,
)
from run_bench import sha256_file
from seaweed_server import SeaweedServer, find_weed, running_seaweed
from tools import BenchError, E3backup, Measurement, Restic, output_of

logger = logging.getLogger("bench")

SECTION = "s3"
BUCKET = "bench"
TARGET_RESTORE_SPEEDUP = 2.0


@dataclass
class S3Result:
    name: str
    version: str = ""
    backups: list[Measurement] = field(default_factory=list)
    restores: list[Measurement] = field(default_factory=list)
    stored_bytes: int = 0
    check: str = "not run"

    @property
    def backup(self) -> Measurement | None:
        return median_run(self.backups)

    @property
    def restore(self) -> Measurement | None:
        return median_run(self.restores)


def one_round(
    server: SeaweedServer,
    round_no: int,
    image: SourceImage,
    args: argparse.Namespace,
    results: dict[str, S3Result],
) -> None:
    work: Path = args.workdir.resolve()
    env = server.env()
    e3 = E3backup(args.chunk_size, args.e3backup, env=env)
    cache = work / "state" / "restic-cache"
    shutil.rmtree(cache, ignore_errors=True)
    restic = Restic(cache, env=env)
    repos: dict[str, tuple[E3backup | Restic, str, str]] = {
        "e3backup": (e3, f"s3://{BUCKET}/e3-r{round_no}", f"e3-r{round_no}/"),
        "restic": (
            restic,
            f"s3:{server.endpoint}/{BUCKET}/restic-r{round_no}",
            f"restic-r{round_no}/",
        ),
    }
    order = list(repos) if round_no % 2 else list(repos)[::-1]
    for name in order:
        tool, repo, prefix = repos[name]
        r = results[name]
        r.version = tool.version()
        out_dir = work / "restore" / name
        shutil.rmtree(out_dir, ignore_errors=True)
        out_dir.mkdir(parents=True)
        log = work / "logs" / f"{name}.log"
        tool.init(repo, log)
        r.backups.append(tool.backup(repo, image.path, 1, log))
        r.stored_bytes = server.stored_bytes(BUCKET, prefix)
        logger.info(
            "round %d %s backup: %.2f s, %s MiB stored",
            round_no,
            name,
            r.backups[-1].wall_s,
            mib(r.stored_bytes),
        )
        m, restored = tool.restore(repo, out_dir, image.path, log)
        r.restores.append(m)
        r.check = "ok" if sha256_file(restored) == image.sha256 else "**MISMATCH**"
        logger.info("round %d %s restore: %.2f s, sha256 %s", round_no, name, m.wall_s, r.check)
        shutil.rmtree(out_dir, ignore_errors=True)
        if r.check != "ok":
            raise BenchError(f"{name} restore differs from the image (round {round_no})")


def run(args: argparse.Namespace) -> tuple[dict[str, S3Result], SourceImage, str, int]:
    work: Path = args.workdir.resolve()
    image = day1_image(args.size, args.seed, args.image_dir)
    (work / "logs").mkdir(parents=True, exist_ok=True)
    for name in ("e3backup", "restic"):
        (work / "logs" / f"{name}.log").unlink(missing_ok=True)
    results = {name: S3Result(name) for name in ("e3backup", "restic")}
    weed_version = output_of([find_weed(), "version"])
    with running_seaweed(work / "seaweed") as server:
        logger.info("SeaweedFS %s at %s (pid %d)", weed_version, server.endpoint, server.pid)
        try:
            for round_no in range(1, args.rounds + 1):
                one_round(server, round_no, image, args, results)
        finally:
            server_rss = server.peak_rss_bytes()
    if not args.keep_server_data:
        shutil.rmtree(work / "seaweed" / "data", ignore_errors=True)
    return results, image, weed_version, server_rss


def results_table(results: dict[str, S3Result], size: int) -> str:
    header = [
        "tool",
        "backup s",
        "backup MB/s",
        "backup RSS MiB",
        "backup CPU s",
        "stored MiB",
        "restore s",
        "restore MB/s",
        "restore RSS MiB",
        "restore CPU s",
        "sha256",
    ]
    rows = [
        [
            r.name,
            secs(r.backup),
            rate(size, r.backup),
            rss(r.backup),
            f"{r.backup.cpu_s:.1f}" if r.backup else "-",
            mib(r.stored_bytes),
            secs(r.restore),
            rate(size, r.restore),
            rss(r.restore),
            f"{r.restore.cpu_s:.1f}" if r.restore else "-",
            r.check,
        ]
        for r in results.values()
    ]
    return report.markdown_table(header, rows)


def ratio_table(e3: S3Result, restic: S3Result) -> tuple[str, bool]:
    assert e3.backup and e3.restore and restic.backup and restic.restore
    backup_x = restic.backup.wall_s / e3.backup.wall_s
    restore_x = restic.restore.wall_s / e3.restore.wall_s
    passed = restore_x >= TARGET_RESTORE_SPEEDUP
    header = [
        "e3backup vs restic",
        "backup x",
        f"restore x (>= {TARGET_RESTORE_SPEEDUP:.0f}x)",
        "stored ratio",
        "backup RSS ratio",
        "restore RSS ratio",
    ]
    row = [
        "speed-up (>1 = e3backup faster); ratios e3backup/restic",
        f"{backup_x:.2f}",
        f"{restore_x:.2f}x {verdict(passed)}",
        f"{e3.stored_bytes / max(1, restic.stored_bytes):.3f}",
        f"{e3.backup.max_rss_bytes / max(1, restic.backup.max_rss_bytes):.2f}",
        f"{e3.restore.max_rss_bytes / max(1, restic.restore.max_rss_bytes):.2f}",
    ]
    return report.markdown_table(header, [row]), passed


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    common_args(parser, "s3")
    parser.add_argument(
        "--rounds",
        type=int,
        default=1,
        help="repeat both tools on the same server; medians (default: 1)",
    )
    parser.add_argument(
        "--keep-server-data",
        action="store_true",
        help="leave SeaweedFS's data dir (the repositories) in the work dir",
    )
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", datefmt="%H:%M:%S")
    try:
        results, image, weed_version, server_rss = run(args)
    except (BenchError, OSError) as exc:
        print(f"\n!!! S3 benchmark failed: {exc}", file=sys.stderr)
        return 1
    e3, restic = results["e3backup"], results["restic"]
    size_text = f"{args.size / (1 << 30):.2f} GiB ({args.size} bytes)"
    rounds = f"median of {args.rounds} rounds; " if args.rounds > 1 else ""
    parts = [
        f"## S3 (SeaweedFS on 127.0.0.1): e3backup vs restic (issue 4; {size_text} image, "
        f"{rounds}MB/s = 10^6 bytes of image per second)",
        results_table(results, args.size),
    ]
    table, passed = ratio_table(e3, restic)
    parts.append(table)
    notes = [f"SeaweedFS peak RSS {server_rss / report.MIB:.0f} MiB (server, whole run)."]
    if args.rounds > 1:
        notes.append(
            "Per round (s): "
            + "; ".join(
                per_round(f"{r.name} {step}", r.backups if step == "backup" else r.restores)
                for step in ("backup", "restore")
                for r in results.values()
            )
        )
    parts.append(" ".join(notes))
    text = "\n\n".join(parts)
    print(text)
    print(
        f"\nissue 4 target (e3backup restore >= {TARGET_RESTORE_SPEEDUP:.0f}x restic's, both "
        f"verified): {verdict(passed)}"
    )
    if args.write_results:
        setup = [
            *machine_lines(),
            f"- e3backup: {e3.version}, repo init --chunk-size {args.chunk_size}",
            f"- restic: {restic.version}, repository version 2, --compression auto",
            f"- SeaweedFS: {weed_version} (`weed mini`)",
            f"- source: day-1 bench image ({image.path.name}, seed {args.seed})",
            "- method: docstring of `bench/s3_bench.py` (same server, warm cache, sync included)",
            f"- verdict: **{verdict(passed)}**",
        ]
        write_section(args.results_file, SECTION, parts, setup)
    return 0 if passed else 1


if __name__ == "__main__":
    sys.exit(main())
