"""Tables, e3backup/peer ratios and the RESULTS.md writer for the backup benchmark.

A variant is one tool with one configuration (e.g. borg-fixed-4M, e3backup-256K);
a peer is any variant that is not e3backup. Throughput is image size / wall time
in MB/s (10^6 bytes); sizes are MiB.
"""

from __future__ import annotations

import datetime as dt
import os
import platform
import re
from dataclasses import dataclass, field
from pathlib import Path

from tools import Measurement

MIB = 1 << 20
TARGET_FULL_SPEEDUP = 1.5
TARGET_GROWTH_VS_RESTIC = 1 / 3
TARGET_RESTORE_SPEEDUP = 1.5
TARGET_RSS_BYTES = 300 * MIB


@dataclass
class VariantResult:
    name: str
    version: str = ""
    backups: list[Measurement] = field(default_factory=list)
    repo_bytes: list[int] = field(default_factory=list)
    restore: Measurement | None = None
    restore_ok: bool | None = None
    error: str | None = None

    @property
    def is_e3(self) -> bool:
        return self.name.startswith("e3backup")

    @property
    def complete(self) -> bool:
        return self.error is None and len(self.backups) == 3 and self.restore is not None

    def growth_bytes(self, day: int) -> int:
        return self.repo_bytes[day - 1] - (self.repo_bytes[day - 2] if day > 1 else 0)

    @property
    def peak_rss_bytes(self) -> int:
        runs = [*self.backups, *([self.restore] if self.restore else [])]
        return max((m.max_rss_bytes for m in runs), default=0)


def mb_per_s(size_bytes: int, m: Measurement) -> float:
    return size_bytes / 1e6 / m.wall_s if m.wall_s > 0 else float("inf")


def markdown_table(header: list[str], rows: list[list[str]]) -> str:
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]

    def line(cells: list[str]) -> str:
        return "| " + " | ".join(c.rjust(w) for c, w in zip(cells, widths, strict=True)) + " |"

    sep = "|" + "|".join("-" * (w + 1) + ":" for w in widths) + "|"
    return "\n".join([line(header), sep, *(line(r) for r in rows)])


def results_table(results: list[VariantResult], size_bytes: int) -> str:
    header = [
        "variant",
        "full s",
        "full MB/s",
        "day2 s",
        "day2 MB/s",
        "day3 s",
        "day3 MB/s",
        "restore s",
        "restore MB/s",
        "repo d1 MiB",
        "+d2 MiB",
        "+d3 MiB",
        "peak RSS MiB",
        "CPU s (all)",
        "sha256",
    ]
    rows = []
    for r in results:
        if not r.complete:
            rows.append([r.name, *["-"] * 13, f"ERROR: {(r.error or '?').splitlines()[0][:60]}"])
            continue
        assert r.restore is not None
        cells = [r.name]
        for m in r.backups:
            cells += [f"{m.wall_s:.1f}", f"{mb_per_s(size_bytes, m):.0f}"]
        cells += [f"{r.restore.wall_s:.1f}", f"{mb_per_s(size_bytes, r.restore):.0f}"]
        cells += [f"{r.growth_bytes(d) / MIB:.1f}" for d in (1, 2, 3)]
        cpu_s = sum(m.cpu_s for m in r.backups) + r.restore.cpu_s
        cells += [
            f"{r.peak_rss_bytes / MIB:.0f}",
            f"{cpu_s:.0f}",
            "ok" if r.restore_ok else "**MISMATCH**",
        ]
        rows.append(cells)
    return markdown_table(header, rows)


def ratio_table(results: list[VariantResult], size_bytes: int) -> str:
    """e3backup/peer: speed-ups (>1 = e3backup faster) and size ratios (<1 = e3 smaller)."""
    e3 = [r for r in results if r.is_e3 and r.complete]
    peers = [r for r in results if not r.is_e3 and r.complete]
    header = [
        "e3backup",
        "peer",
        "full x",
        "day2 x",
        "day3 x",
        "restore x",
        "growth d2 ratio",
        "growth d3 ratio",
        "peak RSS ratio",
    ]
    rows = []
    for a in e3:
        for b in peers:
            assert a.restore is not None and b.restore is not None
            speed = [b.backups[i].wall_s / a.backups[i].wall_s for i in range(3)]
            rows.append(
                [
                    a.name,
                    b.name,
                    *(f"{x:.2f}" for x in speed),
                    f"{b.restore.wall_s / a.restore.wall_s:.2f}",
                    f"{a.growth_bytes(2) / max(1, b.growth_bytes(2)):.3f}",
                    f"{a.growth_bytes(3) / max(1, b.growth_bytes(3)):.3f}",
                    f"{a.peak_rss_bytes / max(1, b.peak_rss_bytes):.2f}",
                ]
            )
    return markdown_table(header, rows) if rows else "(no complete e3backup and peer pair)"


def targets_table(
    results: list[VariantResult], size_bytes: int, peer_names: set[str] | None = None
) -> str:
    """Verdicts against the fastest peer; peer_names limits which peers count."""
    e3 = [r for r in results if r.is_e3 and r.complete]
    peers = [
        r
        for r in results
        if not r.is_e3 and r.complete and (peer_names is None or r.name in peer_names)
    ]
    restic = next((r for r in peers if r.name == "restic"), None)
    if not e3 or not peers:
        return "(targets need e3backup and at least one peer)"
    best_full = max(peers, key=lambda r: mb_per_s(size_bytes, r.backups[0]))
    best_restore = max(peers, key=lambda r: mb_per_s(size_bytes, r.restore))  # type: ignore[arg-type]
    header = [
        "e3backup",
        f"full vs {best_full.name} (>= 1.5x)",
        "day2 growth vs restic (<= 0.333)",
        f"restore vs {best_restore.name} (>= 1.5x)",
        "peak RSS (< 300 MiB)",
    ]
    rows = []
    for r in e3:
        assert r.restore is not None and best_restore.restore is not None
        full = best_full.backups[0].wall_s / r.backups[0].wall_s
        restore = best_restore.restore.wall_s / r.restore.wall_s
        growth = r.growth_bytes(2) / max(1, restic.growth_bytes(2)) if restic else float("nan")
        rss = r.peak_rss_bytes
        rows.append(
            [
                r.name,
                _verdict(full, full >= TARGET_FULL_SPEEDUP, "x"),
                _verdict(growth, growth <= TARGET_GROWTH_VS_RESTIC, ""),
                _verdict(restore, restore >= TARGET_RESTORE_SPEEDUP, "x"),
                f"{rss / MIB:.0f} MiB {'PASS' if rss < TARGET_RSS_BYTES else 'FAIL'}",
            ]
        )
    return markdown_table(header, rows)


def _verdict(value: float, ok: bool, unit: str) -> str:
    return f"{value:.2f}{unit} {'PASS' if ok else 'FAIL'}"


def machine_info() -> dict[str, str]:
    cpu = "unknown"
    with open("/proc/cpuinfo") as f:
        for line in f:
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    ram_bytes = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    return {
        "date": dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "host": platform.node(),
        "nproc": str(os.cpu_count()),
        "cpu": cpu,
        "ram": f"{ram_bytes / (1 << 30):.1f} GiB",
        "kernel": platform.release(),
        "python": platform.python_version(),
    }


def write_results_md(
    path: Path,
    results: list[VariantResult],
    size_bytes: int,
    config: dict[str, str],
    console_text: str,
) -> None:
    info = machine_info()
    lines = [
        "# Benchmark results: e3backup vs restic vs borg",
        "",
        "Generated by `bench/run.sh --write-results` (see bench/README section in",
        "`bench/run_bench.py`). Re-running overwrites this file except the sections",
        "between `<!-- NAME:begin -->` / `<!-- NAME:end -->` markers (other benchmarks).",
        "",
        "## Machine",
        "",
    ]
    lines += [f"- {k}: {v}" for k, v in info.items()]
    lines += ["", "## Tools", ""]
    lines += [f"- {r.name}: {r.version}" for r in results]
    lines += ["", "## Setup", ""]
    lines += [f"- {k}: {v}" for k, v in config.items()]
    lines += ["", console_text, ""]
    kept = marked_sections(path.read_text()) if path.exists() else []
    path.write_text("\n".join(lines) + "".join(f"\n{section}" for section in kept))


_SECTION_RE = re.compile(r"<!-- ([\w-]+):begin -->\n.*?<!-- \1:end -->\n", re.S)


def marked_sections(text: str) -> list[str]:
    """The `<!-- NAME:begin -->` ... `<!-- NAME:end -->` blocks of text, markers included."""
    return [m.group(0) for m in _SECTION_RE.finditer(text)]


def update_section(path: Path, name: str, body: str) -> None:
    """Replace section `name` of path (markdown) with body, or append it; the rest stays."""
    section = f"<!-- {name}:begin -->\n{body.rstrip()}\n<!-- {name}:end -->\n"
    text = path.read_text() if path.exists() else ""
    pattern = re.compile(
        rf"<!-- {re.escape(name)}:begin -->\n.*?<!-- {re.escape(name)}:end -->\n", re.S
    )
    if pattern.search(text):
        text = pattern.sub(lambda _: section, text, count=1)
    else:
        text = (text.rstrip("\n") + "\n\n" if text.strip() else "") + section
    path.write_text(text)
