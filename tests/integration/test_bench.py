"""The benchmark's smallest configuration, end to end, as a smoke test.

``python -m bench.run`` is how the project measures itself; a benchmark that rots
silently produces no figures when they are needed. This runs every scenario at N=200
across a 0 ms and a 20 ms link, as a user would (a subprocess from the repository root),
and checks that it completed, that the proxy's answers equalled Dovecot's, and that
each scenario recorded its figures for both links.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


# About 35 s alone; the margin is for a machine busy with other test runs.
@pytest.mark.timeout(150)
def test_the_smallest_benchmark_runs_and_the_proxy_answers_like_dovecot(tmp_path: Path) -> None:
    out = tmp_path / "bench.json"
    command = [
        sys.executable, "-m", "bench.run", "--sizes", "200", "--rtt", "0,20", "--bodies", "2",
        "--no-restart", "--push-timeout", "2", "--replay-changes", "20", "--out", str(out),
    ]  # fmt: skip
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    done = subprocess.run(
        command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=140, check=False
    )
    assert done.returncode == 0, f"stdout:\n{done.stdout}\nstderr:\n{done.stderr[-4000:]}"
    assert "OK: proxy answers equal direct answers" in done.stdout
    document = json.loads(out.read_text())
    assert document["correct"] is True
    links = {
        round(link["rtt_ms"]): link["measured_round_trip_ms"]
        for link in document["records"]["link"]
    }
    assert set(links) == {0, 20}
    assert 19 <= links[20] <= 60  # the 20 ms link really costs 20 ms a round trip
    sessions = {(row["size"], row["rtt_ms"], row["session"]) for row in document["rows"]}
    assert sessions == {(200, rtt, s) for rtt in (0.0, 20.0) for s in ("1 cold", "2 warm")}
    for scenario in ("resync", "push", "replay"):
        assert {r["rtt_ms"] for r in document["records"][scenario]} == {0.0, 20.0}
    for record in document["records"]["resync"]:
        assert record["upstream_down"] < record["first_upstream_down"]  # only what changed
    for record in document["records"]["replay"]:
        assert record["queued"] == record["changes"] == 20  # each offline change queued once
        # Counted from the relayed bytes: consecutive flag changes go up batched (16 flag
        # STOREs of the mix as one or two UID STOREs), so fewer commands than changes.
        assert 5 <= record["commands"] < record["changes"]
        assert record["by_command"].get("UID STORE", 0) <= 4
        assert record["by_command"].get("APPEND") == 1  # the one draft sent once
    for record in document["records"]["push"]:
        assert record["direct_s"] is not None  # Dovecot itself pushes within the 2 s cap
