"""Human-readable tables on stdout and the JSON record of a run, plus the machine facts.

Figures are medians over ``--repeat`` runs; the JSON also keeps every raw sample so a
surprising median can be checked against its spread.
"""

from __future__ import annotations

import json
import os
import platform
import statistics
import subprocess
import sys
from importlib import metadata
from pathlib import Path
from typing import Any

from bench.measure import Row
from bench.workload import PHASES


def human_bytes(count: float | None) -> str:
    """Binary units, three significant figures: enough to compare, short enough to read."""
    if count is None:
        return "-"
    for unit in ("B", "KiB", "MiB", "GiB"):
        if abs(count) < 1024 or unit == "GiB":
            return f"{count:.0f} {unit}" if unit == "B" else f"{count:.1f} {unit}"
        count /= 1024
    raise AssertionError("unreachable")


def _seconds(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}"


def _ratio(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}x"


def _table(header: list[str], rows: list[list[str]]) -> str:
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
    lines = ["  ".join(c.rjust(w) for c, w in zip(r, widths, strict=True)) for r in [header, *rows]]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def summary_table(rows: list[Row]) -> str:
    """One line per (size, session): time, ratio, bytes on the upstream link, resources."""
    header = [
        "N", "rtt ms", "session", "direct s", "proxy s", "ratio", "w/o parse",
        "direct down/up", "proxy upstream down/up", "proxy CPU s", "peak RSS", "state dir",
    ]  # fmt: skip
    body = []
    for row in rows:
        body.append([
            str(row.size),
            f"{row.rtt_ms:g}",
            row.session,
            _seconds(row.median("direct", "wall_s")),
            _seconds(row.median("proxy", "wall_s")),
            _ratio(row.ratio("wall_s")),
            _ratio(row.ratio("server_s")),
            f"{human_bytes(row.median('direct', 'bytes_down'))} / "
            f"{human_bytes(row.median('direct', 'bytes_up'))}",
            f"{human_bytes(row.median('proxy', 'bytes_down'))} / "
            f"{human_bytes(row.median('proxy', 'bytes_up'))}",
            _seconds(row.median("proxy", "proxy_cpu_s")),
            human_bytes((row.median("proxy", "peak_rss_kib") or 0) * 1024),
            human_bytes(row.median("proxy", "state_dir_bytes")),
        ])  # fmt: skip
    return _table(header, body)


def phase_table(rows: list[Row]) -> str:
    """Seconds per phase, direct vs proxy: where a slow ratio comes from."""
    header = ["N", "rtt ms", "session", "path", *PHASES]
    body = []
    for row in rows:
        for path in ("direct", "proxy"):
            phases = [f"{row.median_phase(path, p):.3f}" for p in PHASES]
            body.append([str(row.size), f"{row.rtt_ms:g}", row.session, path, *phases])
    return _table(header, body)


def memory_table(rows: list[Row]) -> str:
    """Peak RSS above the idle baseline of a new proxy: what the first sync costs in memory."""
    header = ["N", "rtt ms", "idle RSS", "peak RSS", "peak above idle"]
    body = []
    for row in rows:
        idle = row.median("proxy", "start_rss_kib")
        peak = row.median("proxy", "peak_rss_kib")
        deltas = [
            s.peak_rss_kib - s.start_rss_kib
            for s in row.proxy
            if s.peak_rss_kib is not None and s.start_rss_kib is not None
        ]
        above = statistics.median(deltas) if deltas else None
        body.append([
            str(row.size),
            f"{row.rtt_ms:g}",
            human_bytes(None if idle is None else idle * 1024),
            human_bytes(None if peak is None else peak * 1024),
            human_bytes(None if above is None else above * 1024),
        ])  # fmt: skip
    return _table(header, body)


def table(header: list[str], rows: list[list[str]]) -> str:
    """A right-aligned text table, for scenario reports."""
    return _table(header, rows)


def seconds(value: float | None) -> str:
    return _seconds(value)


def ratio(value: float | None) -> str:
    return _ratio(value)


def _version(package: str) -> str:
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return "not installed"


def _dovecot_version() -> str:
    try:
        out = subprocess.run(
            ["/usr/sbin/dovecot", "--version"], capture_output=True, text=True, timeout=10
        )
        return out.stdout.strip()
    except OSError:
        return "unknown"


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as info:
            for line in info:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def _memory_total() -> str:
    try:
        with open("/proc/meminfo", encoding="ascii") as info:
            return human_bytes(int(info.readline().split()[1]) * 1024)
    except (OSError, ValueError, IndexError):
        return "unknown"


def machine_facts() -> dict[str, Any]:
    """What a reader needs to judge whether figures from two runs are comparable."""
    return {
        "cpu": _cpu_model(),
        "cores": os.cpu_count(),
        "memory": _memory_total(),
        "kernel": platform.release(),
        "python": sys.version.split()[0],
        "dovecot": _dovecot_version(),
        "twisted": _version("twisted"),
        "lmdb": _version("lmdb"),
        "imapclient": _version("imapclient"),
    }


def write_json(path: Path, document: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(document, indent=2, default=str) + "\n", encoding="utf-8")
