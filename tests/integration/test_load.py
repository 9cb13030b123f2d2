"""The load test (``python -m bench.load``) in small, as a smoke test.

20 sessions over 5 accounts for 7 s through one proxy, as a user runs it (a subprocess
from the repository root). It must finish with exit status 0, which it gives only when
Dovecot's final state holds every change the sessions made (flags, moves, copies,
expunges, drafts) exactly once after the outbox drained and no command failed; the JSON
record must show that every kind of command ran and that the check had work to do.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
KINDS = (
    "LOGIN", "LIST", "STATUS", "SELECT", "FETCH flags", "FETCH headers", "FETCH body",
    "STORE +FLAGS", "MOVE", "COPY", "EXPUNGE", "APPEND", "EXAMINE", "IDLE", "NOOP",
)  # fmt: skip


# About 20 s alone (7 s of load, seeding, start and the check); margin for a busy machine.
@pytest.mark.timeout(90)
def test_many_sessions_lose_nothing_through_one_proxy(tmp_path: Path) -> None:
    out = tmp_path / "load.json"
    command = [
        sys.executable, "-m", "bench.load", "--quick", "--sessions", "20", "--accounts", "5",
        "--duration", "7", "--inbox", "40", "--think", "0.02", "--out", str(out),
    ]  # fmt: skip
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    done = subprocess.run(
        command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=80, check=False
    )
    assert done.returncode == 0, f"stdout:\n{done.stdout}\nstderr:\n{done.stderr[-4000:]}"
    assert "OK: nothing lost" in done.stdout
    document = json.loads(out.read_text())
    assert document["correct"] is True and document["problems"] == []
    commands = {row["command"]: row for row in document["commands"]}
    for kind in KINDS:
        assert commands.get(kind, {}).get("count", 0) > 0, f"no {kind} ran: {sorted(commands)}"
    assert all(row["errors"] == 0 for row in commands.values())
    assert commands["LOGIN"]["count"] == 20  # every session logged in once, none reconnected
    checked = document["checked"]
    assert checked["flags in INBOX"] > 0 and checked["appended"] > 0
    assert checked["moved or copied"] > 0 and checked["gone from INBOX"] > 0
    assert document["queued_left"] == 0 and document["refused"] == 0
    proxy = document["proxy"]
    assert proxy["cpu_s"] > 0 and proxy["peak_rss_kib"] >= proxy["idle_rss_kib"] > 0
