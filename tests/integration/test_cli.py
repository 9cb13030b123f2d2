"""The command line as a user meets it: one-line errors, clean stops, the ready line."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.integration.clients import imap
from tests.integration.conftest import ProxyFactory
from tests.support.corpus import Account
from tests.support.dovecot import Dovecot
from tests.support.net import LOOPBACK, can_connect, free_port
from tests.support.proxy import ProxyProcess

RUN_TIMEOUT = 20


def _run(*args: str, timeout: float = RUN_TIMEOUT) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "imapproxy", *args],
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def _assert_one_line_error(result: subprocess.CompletedProcess[str], *needles: str) -> str:
    assert result.returncode != 0, result
    assert "Traceback" not in result.stderr, result.stderr
    lines = result.stderr.strip().splitlines()
    errors = [line for line in lines if line.startswith("imapproxy: error:")]
    assert len(errors) == 1, result.stderr
    assert lines == errors, f"stderr has more than the error line: {result.stderr!r}"
    for needle in needles:
        assert needle in errors[0], errors[0]
    return errors[0]


def _serve(state_dir: Path, *extra: str, upstream: str = "imap+plain://127.0.0.1:1") -> list[str]:
    return ["serve", "--upstream", upstream, "--state-dir", str(state_dir), *extra]


@pytest.mark.parametrize(
    "url",
    [
        "ftp://mail.example.org",
        "imaps://",
        "imaps://user:pw@mail.example.org",
        "imap+plain://host:notaport",
        "mail.example.org",
    ],
)
def test_bad_upstream_url_is_a_one_line_error(tmp_path: Path, url: str) -> None:
    result = _run(
        *_serve(tmp_path / "state", "--listen", f"{LOOPBACK}:{free_port()}", upstream=url)
    )
    _assert_one_line_error(result)


def test_port_in_use_is_a_one_line_error(tmp_path: Path) -> None:
    with socket.socket() as busy:
        busy.bind((LOOPBACK, 0))
        busy.listen(1)
        port = busy.getsockname()[1]
        result = _run(*_serve(tmp_path / "state", "--listen", f"{LOOPBACK}:{port}"))
    _assert_one_line_error(result, str(port))


def test_unusable_state_directory_is_a_one_line_error(tmp_path: Path) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("not a directory")
    result = _run(*_serve(blocker / "state", "--listen", f"{LOOPBACK}:{free_port()}"))
    _assert_one_line_error(result, "state")
    assert blocker.read_text() == "not a directory"


def test_non_loopback_listen_without_tls_is_refused(tmp_path: Path) -> None:
    result = _run(*_serve(tmp_path / "state", "--listen", f"0.0.0.0:{free_port()}"))
    _assert_one_line_error(result, "TLS")


def test_bad_listen_address_is_a_one_line_error(tmp_path: Path) -> None:
    result = _run(*_serve(tmp_path / "state", "--listen", "127.0.0.1:http"))
    _assert_one_line_error(result)


def test_state_directory_is_created_0700(make_proxy: ProxyFactory, tmp_path: Path) -> None:
    state = tmp_path / "deep" / "state"
    proxy = make_proxy(state_dir=state)
    assert proxy.running
    assert state.stat().st_mode & 0o777 == 0o700


def test_ready_line_names_the_listening_address(proxy: ProxyProcess) -> None:
    ready = [
        line
        for line in proxy.log_text().splitlines()
        if "ready" in line and not line.startswith("===")
    ]
    assert len(ready) == 1, proxy.log_text()
    assert f"{proxy.host}:{proxy.port}" in ready[0]


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_signal_stops_cleanly_with_a_client_connected(
    make_proxy: ProxyFactory, alice: Account, signum: signal.Signals
) -> None:
    proxy = make_proxy()
    pid = proxy.pid
    assert pid is not None
    with imap(proxy.host, proxy.port, alice) as client:
        client.select_folder("INBOX", readonly=True)
        os.kill(pid, signum)
        deadline = time.monotonic() + 10
        while proxy.running and time.monotonic() < deadline:
            time.sleep(0.05)
        assert not proxy.running, f"proxy still running 10 s after {signum.name}"
    assert proxy.stop() == 0
    log = proxy.log_text()
    assert "Traceback" not in log, log
    assert "stopped" in log.splitlines()[-1], log
    assert not can_connect(proxy.host, proxy.port)


def test_default_listen_is_loopback_1143(tmp_path: Path, dovecot: Dovecot) -> None:
    help_text = _run("serve", "--help").stdout
    assert "127.0.0.1:1143" in help_text
    if can_connect(LOOPBACK, 1143):
        return  # something else holds the port; the help text is all we can check
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "imapproxy",
            *_serve(tmp_path / "state", upstream=f"imap+plain://{dovecot.host}:{dovecot.port}"),
        ],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.monotonic() + 15
        while (
            not can_connect(LOOPBACK, 1143) and proc.poll() is None and time.monotonic() < deadline
        ):
            time.sleep(0.05)
        assert can_connect(LOOPBACK, 1143), "nothing listens on 127.0.0.1:1143"
    finally:
        proc.send_signal(signal.SIGTERM)
        _, stderr = proc.communicate(timeout=10)
    assert proc.returncode == 0, stderr
    assert "listening on 127.0.0.1:1143" in stderr, stderr
