"""systemd integration: the unit files pass ``systemd-analyze verify``, the proxy speaks
sd_notify (READY, STATUS, WATCHDOG, STOPPING) and adopts a socket systemd opened."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

from tests.integration.clients import imap
from tests.support.configured_proxy import ConfiguredProxy
from tests.support.corpus import Account
from tests.support.dovecot import Dovecot
from tests.support.net import LOOPBACK, free_port
from tests.support.proxy import ProxyProcess

UNITS = Path(__file__).resolve().parents[2] / "systemd"
INSTALLED = ("/usr/local/bin/imapproxy", "%h/.local/bin/imapproxy")


def _analyze() -> str:
    found = shutil.which("systemd-analyze")
    if found is None:
        raise RuntimeError(
            "systemd-analyze is not installed: run ./scripts/test (it installs the Debian "
            "package systemd) or `apt-get install systemd`"
        )
    return found


def _units(tmp_path: Path, program: str | None = None) -> Path:
    """The unit files with ExecStart pointing at this checkout's installed program
    (verify checks that it exists and is executable)."""
    program = program or str(Path(sys.executable).parent / "imapproxy")
    directory = tmp_path / "units"
    directory.mkdir()
    for unit in UNITS.iterdir():
        text = unit.read_text()
        for path in INSTALLED:
            text = text.replace(path, program)
        (directory / unit.name).write_text(text)
    return directory


def _verify(directory: Path, *names: str, user: bool = False) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ)
    args = [_analyze(), "verify"]
    with tempfile.TemporaryDirectory(prefix="ipx-rt-", dir="/tmp") as runtime:
        if user:
            # Short on purpose: sockets of other user units (gpg-agent's) are placed
            # here, and a socket path may not exceed 108 bytes.
            os.chmod(runtime, 0o700)
            env["XDG_RUNTIME_DIR"] = runtime
            args.append("--user")
        return subprocess.run(
            [*args, *(str(directory / n) for n in names)],
            capture_output=True,
            text=True,
            timeout=50,
            env=env,
            check=False,
        )


def test_every_unit_file_is_tested() -> None:
    assert sorted(p.name for p in UNITS.iterdir()) == [
        "imapproxy-user.service",
        "imapproxy.service",
        "imapproxy.socket",
    ]


def test_system_units_verify_cleanly(tmp_path: Path) -> None:
    result = _verify(_units(tmp_path), "imapproxy.service", "imapproxy.socket")
    assert (result.returncode, result.stdout + result.stderr) == (0, "")


def test_user_unit_verifies_cleanly(tmp_path: Path) -> None:
    result = _verify(_units(tmp_path), "imapproxy-user.service", user=True)
    assert (result.returncode, result.stdout + result.stderr) == (0, "")


def test_verify_would_catch_a_broken_unit(tmp_path: Path) -> None:
    """The two checks above can fail: a missing program and a typo are reported."""
    missing = _verify(_units(tmp_path, "/nonexistent/imapproxy"), "imapproxy.service")
    assert missing.returncode != 0 and "/nonexistent/imapproxy" in missing.stderr
    directory = tmp_path / "units"
    socket_unit = directory / "imapproxy.socket"
    socket_unit.write_text(socket_unit.read_text().replace("ListenStream=", "ListenStrem="))
    typo = _verify(directory, "imapproxy.socket")
    assert "ListenStrem" in typo.stdout + typo.stderr


# sd_notify ------------------------------------------------------------------------------


def _datagrams(sock: socket.socket, until: str, seconds: float = 10) -> list[str]:
    """Everything received until a message containing ``until`` (or the time is up)."""
    got: list[str] = []
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        sock.settimeout(max(0.01, deadline - time.monotonic()))
        try:
            got.append(sock.recv(4096).decode())
        except TimeoutError:
            break
        if until in got[-1]:
            break
    return got


def test_ready_status_watchdog_and_stopping(
    tmp_path: Path, dovecot: Dovecot, alice: Account, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = str(tmp_path / "notify")
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.bind(path)
        monkeypatch.setenv("NOTIFY_SOCKET", path)
        monkeypatch.setenv("WATCHDOG_USEC", "600000")  # a ping every 0.3 s
        proxy = ProxyProcess(f"imap+plain://{dovecot.host}:{dovecot.port}", tmp_path / "state")
        with proxy:
            ready = _datagrams(sock, "READY=1")
            assert ready[-1].startswith("READY=1\nSTATUS=0 sessions, 0 accounts open; ")
            assert f"{LOOPBACK}:{proxy.port}" in ready[-1]
            with imap(proxy.host, proxy.port, alice):
                pings = _datagrams(sock, "STATUS=1 sessions, 1 accounts open")
                assert pings and pings[-1].endswith("WATCHDOG=1")
            proxy.stop()
            assert _datagrams(sock, "STOPPING=1")[-1] == "STOPPING=1\nSTATUS=stopping"
        assert proxy.returncode == 0


# socket activation ----------------------------------------------------------------------

# What systemd does before it starts the service: bind, listen, put the socket at fd 3,
# say so in LISTEN_FDS/LISTEN_PID/LISTEN_FDNAMES, exec. The pid stays the same. (When
# the socket is fd 3 to begin with, dup2 leaves it close-on-exec: hence set_inheritable.)
# The script must not contain the proxy's ready marker: the harness looks for it in
# the log, whose first lines show the command.
SOCKET_ACTIVATE = """
import os, socket, sys
host, port = sys.argv[1], int(sys.argv[2])
sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
sock.bind((host, port))
sock.listen(16)
os.dup2(sock.fileno(), 3)
os.set_inheritable(3, True)
os.environ.update(LISTEN_FDS="1", LISTEN_PID=str(os.getpid()), LISTEN_FDNAMES="imap")
os.execv(sys.executable, [sys.executable, "-m", "imapproxy", *sys.argv[3:]])
"""


def _activated(tmp_path: Path, dovecot: Dovecot, host: str, port: int) -> ConfiguredProxy:
    state = tmp_path / "state"
    config = tmp_path / "imapproxy.toml"
    config.write_text(
        f'[server]\nstate_dir = "{state}"\nlisten = "systemd:domain=INET:name=imap"\n'
        f'[[upstream]]\nurl = "imap+plain://{dovecot.host}:{dovecot.port}"\n'
    )
    proxy = ConfiguredProxy(config, state, [port])
    proxy.command = (sys.executable, "-c", SOCKET_ACTIVATE, host, str(port))
    return proxy


def test_socket_activation(tmp_path: Path, dovecot: Dovecot, alice: Account) -> None:
    port = free_port()
    with _activated(tmp_path, dovecot, LOOPBACK, port) as proxy:
        assert f"listening on {LOOPBACK}:{port} (plain)" in proxy.log_text()
        with imap(LOOPBACK, port, alice) as client:
            assert client.select_folder("INBOX")[b"EXISTS"] == len(alice.mailboxes["INBOX"])


def test_socket_beyond_loopback_without_tls_is_refused(tmp_path: Path, dovecot: Dovecot) -> None:
    proxy = _activated(tmp_path, dovecot, "0.0.0.0", free_port())
    with pytest.raises(RuntimeError, match="exited with 1 during startup"):
        proxy.start()
    assert "imapproxy: error: refusing to listen on 0.0.0.0 without TLS" in proxy.log_text()
