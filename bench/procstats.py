"""Resource figures of the proxy process and its state directory, read from /proc and disk.

These are read from outside the proxy on purpose: the benchmark must measure the
shipped ``imapproxy serve`` exactly as a user runs it, with no instrumentation inside.
"""

from __future__ import annotations

import os
from pathlib import Path

_CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def _status_field(pid: int, field: str) -> int:
    """A ``kB`` field of /proc/PID/status (e.g. VmHWM), in KiB."""
    with open(f"/proc/{pid}/status", encoding="ascii") as status:
        for line in status:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise KeyError(f"{field} not in /proc/{pid}/status")


def peak_rss_kib(pid: int) -> int:
    """Peak resident set size since the process started (VmHWM): never decreases."""
    return _status_field(pid, "VmHWM")


def rss_kib(pid: int) -> int:
    """Resident set size now (VmRSS); read right after start it is the idle baseline."""
    return _status_field(pid, "VmRSS")


def cpu_seconds(pid: int) -> float:
    """User plus system CPU time the process has used so far.

    A delta over a session tells whether the proxy was busy computing or waiting
    (on the upstream, or on the client reading its answers).
    """
    with open(f"/proc/{pid}/stat", encoding="ascii") as stat:
        # The command name (field 2) may contain spaces: split after its closing paren.
        fields = stat.read().rsplit(")", 1)[1].split()
    utime, stime = int(fields[11]), int(fields[12])
    return (utime + stime) / _CLOCK_TICKS


def disk_usage_bytes(path: Path) -> int:
    """Bytes allocated on disk below ``path``, like ``du -s --block-size=1``.

    Allocated blocks rather than file sizes, because LMDB's data file may be sparse.
    """
    total = 0
    for directory, _, files in os.walk(path):
        for name in files:
            try:
                total += os.lstat(os.path.join(directory, name)).st_blocks * 512
            except FileNotFoundError:
                continue
    return total
