"""``./scripts/demo``: what a new user sees works end to end — connect with the printed
details, read, cut the link, read the same message and flag it offline, restore, and the
flag reaches the server; Ctrl-C leaves no process and no file behind."""

from __future__ import annotations

import imaplib
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.support.demo import send_command
from tests.support.net import can_connect, free_port

REPO = Path(__file__).resolve().parents[2]
START_TIMEOUT = 40.0


def _wait_for(path: Path, text: str, process: subprocess.Popen[bytes], seconds: float) -> str:
    deadline = time.monotonic() + seconds
    while True:
        output = path.read_text(encoding="utf-8", errors="replace")
        if text in output:
            return output
        assert process.poll() is None, f"demo exited early:\n{output}"
        assert time.monotonic() < deadline, f"no {text!r} from the demo:\n{output}"
        time.sleep(0.1)


def _field(output: str, name: str) -> str:
    match = re.search(rf"^\s*{name}:\s+(\S+)", output, re.M)
    assert match, f"no {name} in the demo's output:\n{output}"
    return match.group(1)


def _flags(client: imaplib.IMAP4, uid: bytes) -> bytes:
    typ, data = client.uid("FETCH", uid, "(FLAGS)")
    assert typ == "OK", data
    return b" ".join(x if isinstance(x, bytes) else x[0] for x in data if x)


def _processes_mentioning(text: str) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ")
        except OSError:
            continue
        if text.encode() in cmdline:
            found.append(int(entry.name))
    return found


@pytest.mark.timeout(120)
def test_demo_shows_offline_mode_and_cleans_up(tmp_path: Path) -> None:
    control = tmp_path / "control.sock"
    out = tmp_path / "demo.out"
    port = free_port()
    with out.open("wb") as sink:
        demo = subprocess.Popen(
            [sys.executable, "-m", "tests.support.demo", "--control", str(control)]
            + ["--port", str(port)],
            cwd=REPO,
            stdin=subprocess.DEVNULL,
            stdout=sink,
            stderr=subprocess.STDOUT,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )
    try:
        output = _wait_for(out, "demo: ready", demo, START_TIMEOUT)
        host, user, password = (
            _field(output, "host"),
            _field(output, "user"),
            _field(output, "password"),
        )
        assert int(_field(output, "port")) == port
        assert f"--control {control} cut" in output and f"--control {control} restore" in output
        server_host, server_port = _field(output, "The server itself, bypassing the proxy").rsplit(
            ":", 1
        )
        workdir = Path(_field(output, "The proxy's log")).parent

        client = imaplib.IMAP4(host, port, timeout=30)
        client.login(user, password)
        typ, listing = client.list()
        assert typ == "OK" and any(b"Archive" in line for line in listing if line)
        client.select("INBOX")
        typ, data = client.uid("SEARCH", "ALL")
        uid = data[0].split()[-1]
        typ, online = client.uid("FETCH", uid, "(BODY.PEEK[])")
        assert typ == "OK"
        body = online[0][1]
        assert b"Message-ID" in body or b"Message-Id" in body

        assert send_command(control, "cut").startswith("link cut")
        typ, offline = client.uid("FETCH", uid, "(BODY.PEEK[])")
        assert typ == "OK" and offline[0][1] == body
        typ, _ = client.uid("STORE", uid, "+FLAGS", r"(\Flagged)")
        assert typ == "OK"
        assert rb"\Flagged" in _flags(client, uid)
        assert send_command(control, "restore").startswith("link restored")

        deadline = time.monotonic() + 40
        with imaplib.IMAP4(server_host, int(server_port), timeout=30) as direct:
            direct.login(user, password)
            direct.select("INBOX", readonly=True)
            while rb"\Flagged" not in _flags(direct, uid):
                assert time.monotonic() < deadline, "the offline flag never reached Dovecot"
                client.noop()  # nudges the proxy: a NOOP resyncs, which replays first
                time.sleep(0.3)
                direct.noop()
        client.logout()

        demo.send_signal(signal.SIGINT)
        assert demo.wait(30) == 0
        final = out.read_text(encoding="utf-8")
        assert "nothing left behind" in final
        assert not can_connect(host, port) and not can_connect(server_host, int(server_port))
        assert not workdir.exists() and not control.exists()
        assert _processes_mentioning(str(workdir)) == []
    finally:
        if demo.poll() is None:
            demo.send_signal(signal.SIGTERM)
            demo.wait(30)


def test_demo_commands_without_a_running_demo_say_so(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "tests.support.demo", "--control", str(tmp_path / "no.sock")]
        + ["cut"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert result.returncode == 1 and "no demo is running" in result.stderr


def test_demo_script_is_valid_bash() -> None:
    assert (
        subprocess.run(["bash", "-n", str(REPO / "scripts" / "demo")], check=False).returncode == 0
    )
    assert os.access(REPO / "scripts" / "demo", os.X_OK)
