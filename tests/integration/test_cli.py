"""The command line as a user meets it: one-line errors, clean stops, the ready line."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.integration.clients import imap
from tests.integration.conftest import ProxyFactory
from tests.support.corpus import Account
from tests.support.dovecot import Dovecot
from tests.support.net import LOOPBACK, can_connect, free_port
from tests.support.proxy import ProxyProcess
from tests.support.tlscert import make_self_signed

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


@pytest.mark.parametrize("host", ["0.0.0.0", "[::]", "192.0.2.2", "mail.example.org"])
def test_non_loopback_listen_without_tls_is_refused(tmp_path: Path, host: str) -> None:
    result = _run(*_serve(tmp_path / "state", "--listen", f"{host}:{free_port()}"))
    _assert_one_line_error(result, "TLS", "--allow-plaintext-listen")


def test_listen_tls_without_certificate_is_refused(tmp_path: Path) -> None:
    result = _run(*_serve(tmp_path / "state", "--listen-tls", f"{LOOPBACK}:{free_port()}"))
    _assert_one_line_error(result, "--listen-tls", "--tls-cert")


def _tls_files(tmp_path: Path, case: str) -> tuple[Path, Path]:
    """A certificate and key made wrong on purpose, one way per ``case``."""
    good = make_self_signed(tmp_path, "good")
    if case == "garbage certificate":
        bad = tmp_path / "garbage.pem"
        bad.write_text("not a certificate\n")
        return bad, good.key
    if case == "key as certificate":
        return good.key, good.key
    if case == "key of another certificate":
        return good.cert, make_self_signed(tmp_path, "other").key
    if case == "encrypted key":
        encrypted = tmp_path / "encrypted.key"
        subprocess.run(
            ["openssl", "pkey", "-in", str(good.key), "-aes256", "-passout", "pass:secret"]
            + ["-out", str(encrypted)],
            check=True,
            capture_output=True,
        )
        encrypted.chmod(0o600)
        return good.cert, encrypted
    if case == "world-readable key":
        good.key.chmod(0o644)
        return good.cert, good.key
    if case == "key is a directory":
        return good.cert, tmp_path
    if case == "missing key":
        return good.cert, tmp_path / "no-such.key"
    if case == "certificate without key":
        return good.cert, Path()
    raise AssertionError(case)


@pytest.mark.parametrize(
    ("case", "needles"),
    [
        ("garbage certificate", ("--tls-cert", "not a PEM certificate")),
        ("key as certificate", ("--tls-cert", "not a PEM certificate")),
        ("key of another certificate", ("not the private key",)),
        ("encrypted key", ("--tls-key", "encrypted")),
        ("world-readable key", ("--tls-key", "every user", "0644")),
        ("key is a directory", ("--tls-key",)),
        ("missing key", ("--tls-key", "no such file")),
        ("certificate without key", ("--tls-cert and --tls-key go together",)),
    ],
)
@pytest.mark.parametrize("listen_flag", ["--listen-tls", "--listen"])
def test_unusable_certificate_or_key_is_a_one_line_error(
    tmp_path: Path, case: str, needles: tuple[str, ...], listen_flag: str
) -> None:
    """Whichever listener uses them (implicit TLS, or STARTTLS on --listen), nothing starts:
    no port is opened, and the line says what is wrong."""
    cert, key = _tls_files(tmp_path, case)
    port = free_port()
    tls_args = ["--tls-cert", str(cert)] + (["--tls-key", str(key)] if key != Path() else [])
    started = time.monotonic()
    result = _run(*_serve(tmp_path / "state", listen_flag, f"{LOOPBACK}:{port}", *tls_args))
    _assert_one_line_error(result, *needles)
    assert time.monotonic() - started < RUN_TIMEOUT  # no pass phrase prompt, no hang
    assert not can_connect(LOOPBACK, port)


def test_listen_and_listen_tls_on_the_same_address_is_refused(tmp_path: Path) -> None:
    pair = make_self_signed(tmp_path)
    address = f"{LOOPBACK}:{free_port()}"
    result = _run(
        *_serve(tmp_path / "state", "--listen", address, "--listen-tls", address),
        *("--tls-cert", str(pair.cert), "--tls-key", str(pair.key)),
    )
    _assert_one_line_error(result, address)


def test_tls_port_in_use_is_a_one_line_error(tmp_path: Path) -> None:
    pair = make_self_signed(tmp_path)
    with socket.socket() as busy:
        busy.bind((LOOPBACK, 0))
        busy.listen(1)
        port = busy.getsockname()[1]
        result = _run(
            *_serve(tmp_path / "state", "--listen", f"{LOOPBACK}:{free_port()}"),
            *("--listen-tls", f"{LOOPBACK}:{port}"),
            *("--tls-cert", str(pair.cert), "--tls-key", str(pair.key)),
        )
    _assert_one_line_error(result, str(port))


def test_group_readable_key_starts_with_a_warning(tmp_path: Path, dovecot: Dovecot) -> None:
    """0640 is how Debian shares keys with the ssl-cert group: allowed, but said."""
    pair = make_self_signed(tmp_path)
    pair.key.chmod(0o640)
    proxy = ProxyProcess(
        f"imap+plain://{dovecot.host}:{dovecot.port}",
        tmp_path / "state",
        tls=pair,
        listen_tls=True,
        listen_plain=False,
    )
    with proxy:
        warnings = [line for line in proxy.log_text().splitlines() if "WARNING" in line]
        assert any(str(pair.key) in line and "group" in line for line in warnings), warnings


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


@pytest.fixture
def sigint_not_ignored() -> Iterator[None]:
    """A proxy started as from a terminal, where Ctrl-C sends SIGINT. A shell starts a
    background job of a script (`./scripts/test &`) with SIGINT ignored, every process
    under it inherits that, and Twisted rightly leaves an ignored SIGINT ignored. A
    handler set here is reset to the default in the proxy's process when it starts."""
    previous = signal.getsignal(signal.SIGINT)
    signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_signal_stops_cleanly_with_a_client_connected(
    make_proxy: ProxyFactory, alice: Account, signum: signal.Signals, sigint_not_ignored: None
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
    assert "--listen-tls" in help_text
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
