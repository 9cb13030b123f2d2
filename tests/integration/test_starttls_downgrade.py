"""STARTTLS cannot be talked out of: an upstream that skips it, refuses it, or smuggles
bytes behind its OK (CVE-2011-0411 style) never receives the user's credentials.

The upstream here is a scripted server on 127.0.0.1 (one thread, one connection): a real
Dovecot does none of this. When it does get to a TLS handshake, its certificate is valid
and trusted, so the only thing standing between the password and it is the proxy's
refusal to go on.
"""

from __future__ import annotations

import imaplib
import socket
import ssl
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.integration.clients import TIMEOUT
from tests.support.net import LOOPBACK
from tests.support.pki import make_ca, make_server_cert, write_ca
from tests.support.proxy import ProxyProcess

pytestmark = pytest.mark.integration

PASSWORD = "downgrade-secret-7f3a"


class ScriptedUpstream:
    """Greets, answers CAPABILITY, then plays ``mode`` at STARTTLS; records all it read."""

    def __init__(self, mode: str, context: ssl.SSLContext) -> None:
        self.mode = mode
        self.context = context
        self.received = bytearray()
        self.listener = socket.create_server((LOOPBACK, 0))
        self.listener.settimeout(0.5)
        self.port = self.listener.getsockname()[1]
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        while not self._stop.is_set():
            try:
                conn, _ = self.listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            with conn:
                conn.settimeout(5)
                try:
                    self._session(conn)
                except (OSError, ssl.SSLError):
                    pass

    def _session(self, conn: socket.socket) -> None:
        caps = "IMAP4rev1 AUTH=PLAIN" + ("" if self.mode == "no-starttls" else " STARTTLS")
        conn.sendall(b"* OK scripted upstream ready\r\n")
        stream: socket.socket | ssl.SSLSocket = conn
        buffer = b""
        while True:
            data = stream.recv(4096)
            if not data:
                return
            self.received += data
            buffer += data
            while b"\r\n" in buffer:
                line, buffer = buffer.split(b"\r\n", 1)
                tag, _, rest = line.decode(errors="replace").partition(" ")
                command = rest.split(" ", 1)[0].upper()
                if command == "CAPABILITY":
                    stream.sendall(f"* CAPABILITY {caps}\r\n{tag} OK done\r\n".encode())
                elif command == "STARTTLS" and self.mode == "refuse":
                    stream.sendall(f"{tag} NO not today\r\n".encode())
                elif command == "STARTTLS":
                    injected = (
                        b"* CAPABILITY IMAP4rev1 AUTH=PLAIN\r\n" if self.mode == "inject" else b""
                    )
                    stream.sendall(f"{tag} OK begin TLS\r\n".encode() + injected)
                    stream = self.context.wrap_socket(conn, server_side=True)
                    buffer = b""
                elif command == "LOGOUT":
                    stream.sendall(f"* BYE\r\n{tag} OK bye\r\n".encode())
                    return
                else:  # LOGIN, AUTHENTICATE, anything else: accept, it is recorded anyway
                    stream.sendall(f"{tag} OK fine\r\n".encode())

    def close(self) -> None:
        self._stop.set()
        self.listener.close()
        self._thread.join(5)


@pytest.fixture(scope="module")
def trusted(tmp_path_factory: pytest.TempPathFactory) -> tuple[ssl.SSLContext, Path]:
    directory = tmp_path_factory.mktemp("starttls-pki")
    root = make_ca()
    pair = make_server_cert(directory, "upstream", issuer=root)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(pair.cert, pair.key)
    return context, write_ca(directory, "ca", root)


@pytest.fixture(params=["no-starttls", "refuse", "inject"])
def upstream(
    request: pytest.FixtureRequest, trusted: tuple[ssl.SSLContext, Path]
) -> Iterator[ScriptedUpstream]:
    server = ScriptedUpstream(request.param, trusted[0])
    yield server
    server.close()


def test_credentials_never_reach_a_downgrading_upstream(
    upstream: ScriptedUpstream, trusted: tuple[ssl.SSLContext, Path], tmp_path: Path
) -> None:
    url = f"imap://localhost:{upstream.port}"
    with ProxyProcess(url, tmp_path / "state", upstream_ca=trusted[1]) as proxy:
        client = imaplib.IMAP4(proxy.host, proxy.port, timeout=TIMEOUT)
        with pytest.raises(imaplib.IMAP4.error) as refused:
            client.login("someone", PASSWORD)
        client.logout()
        log = proxy.log_text()
    assert "UNAVAILABLE" in str(refused.value)
    assert b"STARTTLS" in upstream.received or upstream.mode == "no-starttls"
    for word in (b"LOGIN", b"AUTHENTICATE", PASSWORD.encode(), b"someone"):
        assert word not in upstream.received.upper(), upstream.received
    assert PASSWORD not in log
    assert "Traceback" not in log, log


def test_scripted_upstream_does_record_a_login(
    trusted: tuple[ssl.SSLContext, Path], tmp_path: Path
) -> None:
    """The control: with an honest STARTTLS, the same server does receive the login, so
    the assertion above would see one."""
    server = ScriptedUpstream("honest", trusted[0])
    try:
        url = f"imap://localhost:{server.port}"
        with ProxyProcess(url, tmp_path / "state", upstream_ca=trusted[1]) as proxy:
            client = imaplib.IMAP4(proxy.host, proxy.port, timeout=TIMEOUT)
            try:
                client.login("someone", PASSWORD)
            except imaplib.IMAP4.error:
                pass  # the scripted server cannot serve a session; the login is what counts
            client.logout()
    finally:
        server.close()
    assert b"someone" in server.received or b"AUTHENTICATE" in server.received.upper()
