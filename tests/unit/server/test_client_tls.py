"""Client-side TLS without a network: the implicit-TLS session's state and capabilities,
the listener configuration, and the checks on the certificate and key."""

from __future__ import annotations

import base64
import datetime
import subprocess
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from OpenSSL import SSL
from twisted.internet.testing import MemoryReactorClock, StringTransport

from imapproxy.config import Config, ConfigError, Listener
from imapproxy.registry import LoginFailed
from imapproxy.server import tls
from imapproxy.server.connection import ClientConnection
from imapproxy.server.session import ServerContext
from tests.support.tlscert import CertPair, make_self_signed


class RefusingRegistry:
    """Every login reaches the registry and fails: proves it was not refused before."""

    def __init__(self) -> None:
        self.attempts: list[bytes] = []

    async def login(self, username: bytes, password: bytes, **attempt: Any) -> Any:
        self.attempts.append(username)
        raise LoginFailed("no")


def _connect(**context: Any) -> tuple[ClientConnection, StringTransport, MemoryReactorClock]:
    clock = MemoryReactorClock()
    registry = RefusingRegistry()
    connection = ClientConnection(ServerContext(clock, registry, **context))  # type: ignore[arg-type]
    transport = StringTransport()
    connection.makeConnection(transport)
    return connection, transport, clock


def _send(
    connection: ClientConnection, transport: StringTransport, clock: MemoryReactorClock, data: bytes
) -> bytes:
    transport.clear()
    connection.dataReceived(data)
    for _ in range(20):
        clock.advance(0)
    return bytes(transport.value())


# the implicit-TLS session -----------------------------------------------------------


def test_implicit_tls_session_starts_secure_without_starttls() -> None:
    connection, transport, clock = _connect(implicit_tls=True)
    assert connection.session is not None and connection.session.tls_active
    greeting = bytes(transport.value())
    assert b"AUTH=PLAIN" in greeting
    assert b"STARTTLS" not in greeting and b"LOGINDISABLED" not in greeting
    caps = _send(connection, transport, clock, b"a1 CAPABILITY\r\n")
    assert b"AUTH=PLAIN" in caps and b"STARTTLS" not in caps
    assert _send(connection, transport, clock, b"a2 STARTTLS\r\n").startswith(
        b"a2 BAD TLS is already active"
    )


def test_implicit_tls_session_takes_login_and_authenticate_at_once() -> None:
    # Even with require_tls_for_login (a network listener next to it): this one is private.
    connection, transport, clock = _connect(implicit_tls=True, require_tls_for_login=True)
    reply = _send(connection, transport, clock, b"a1 LOGIN alice pw\r\n")
    assert reply.startswith(b"a1 NO [AUTHENTICATIONFAILED]"), reply
    ir = base64.b64encode(b"\0alice\0pw")
    reply = _send(connection, transport, clock, b"a2 AUTHENTICATE PLAIN " + ir + b"\r\n")
    assert reply.startswith(b"a2 NO [AUTHENTICATIONFAILED]"), reply
    registry = connection.context.registry
    assert registry.attempts == [b"alice", b"alice"]  # type: ignore[attr-defined]


def test_plain_session_without_certificate_refuses_starttls() -> None:
    connection, transport, clock = _connect()
    assert b"STARTTLS" not in bytes(transport.value())
    assert _send(connection, transport, clock, b"a1 STARTTLS\r\n").startswith(
        b"a1 BAD STARTTLS not available"
    )


# listeners --------------------------------------------------------------------------


@pytest.fixture
def pair(tmp_path: Path) -> CertPair:
    return make_self_signed(tmp_path)


def _build(tmp_path: Path, pair: CertPair | None, **kwargs: Any) -> Config:
    tls_files = {"tls_cert": pair.cert, "tls_key": pair.key} if pair else {}
    return Config.build(
        "imap+plain://127.0.0.1:1",
        kwargs.pop("listen", None),
        tmp_path / "state",
        **tls_files,
        **kwargs,
    )


def test_default_is_one_plain_loopback_listener(tmp_path: Path) -> None:
    config = _build(tmp_path, None)
    assert config.listeners == (Listener("127.0.0.1", 1143),)
    assert config.server_tls is None


def test_listen_tls_alone_means_only_implicit_tls(tmp_path: Path, pair: CertPair) -> None:
    config = _build(tmp_path, pair, listen_tls="127.0.0.1:1993")
    assert config.listeners == (Listener("127.0.0.1", 1993, implicit_tls=True),)
    assert config.plain_listener is None
    assert config.server_tls is not None


def test_both_listeners(tmp_path: Path, pair: CertPair) -> None:
    config = _build(tmp_path, pair, listen="127.0.0.1:1143", listen_tls="[::1]:1993")
    assert config.listeners == (
        Listener("127.0.0.1", 1143),
        Listener("::1", 1993, implicit_tls=True),
    )
    assert config.tls_listener is not None and config.tls_listener.describe() == "[::1]:1993"


def test_network_tls_listener_needs_no_override_nor_starttls(
    tmp_path: Path, pair: CertPair
) -> None:
    config = _build(tmp_path, pair, listen_tls="192.0.2.2:993")
    assert not config.allow_plaintext_listen
    assert config.require_tls_for_login is False  # nothing is in clear there


def test_network_plain_listener_next_to_tls_still_needs_starttls(
    tmp_path: Path, pair: CertPair
) -> None:
    config = _build(tmp_path, pair, listen="192.0.2.2:143", listen_tls="192.0.2.2:993")
    assert config.require_tls_for_login is True


@pytest.mark.parametrize(
    ("kwargs", "needle"),
    [
        ({"listen_tls": "127.0.0.1:1993"}, "--listen-tls needs a certificate"),
        ({"listen_tls": "127.0.0.1"}, "--listen-tls '127.0.0.1': expected HOST:PORT"),
        ({"listen_tls": "127.0.0.1:99999"}, "--listen-tls '127.0.0.1:99999': port out of range"),
        ({"listen": "192.0.2.2:143"}, "refusing to listen on 192.0.2.2 without TLS"),
    ],
)
def test_listener_mistakes(tmp_path: Path, kwargs: dict[str, str], needle: str) -> None:
    with pytest.raises(ConfigError, match=needle):
        _build(tmp_path, None, **kwargs)


# the certificate and key ------------------------------------------------------------


def test_server_tls_refuses_anything_below_tls_1_2(pair: CertPair) -> None:
    context = tls.load_server_tls(pair.cert, pair.key).options.getContext()
    options = context.set_options(0)  # adds nothing, returns what is set
    assert options & SSL.OP_NO_TLSv1
    assert options & SSL.OP_NO_TLSv1_1
    assert options & SSL.OP_NO_SSLv3


def test_an_unexpected_error_while_loading_refuses(
    pair: CertPair, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Fail closed: not only the errors we foresaw."""

    def broken(*args: object, **kwargs: object) -> None:
        raise RuntimeError("surprise")

    monkeypatch.setattr(tls.ssl, "CertificateOptions", broken)
    with pytest.raises(tls.ServerTLSError, match="unusable \\(surprise\\)"):
        tls.load_server_tls(pair.cert, pair.key)


@pytest.mark.parametrize(("mode", "refused"), [(0o600, False), (0o640, False), (0o604, True)])
def test_key_readable_by_others_is_refused(
    pair: CertPair, mode: int, refused: bool, caplog: pytest.LogCaptureFixture
) -> None:
    pair.key.chmod(mode)
    if refused:
        with pytest.raises(tls.ServerTLSError, match="every user"):
            tls.load_server_tls(pair.cert, pair.key)
    else:
        tls.load_server_tls(pair.cert, pair.key)
        assert ("group" in caplog.text) == bool(mode & 0o070)


def test_weak_key_is_refused_at_load_not_at_first_handshake(tmp_path: Path) -> None:
    """RSA 1024 is below OpenSSL's default security level: caught while loading."""
    cert, key = tmp_path / "weak.pem", tmp_path / "weak.key"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:1024", "-nodes", "-keyout", str(key)]
        + ["-out", str(cert), "-days", "1", "-subj", "/CN=localhost"],
        check=True,
        capture_output=True,
    )
    key.chmod(0o600)
    with pytest.raises(tls.ServerTLSError, match="unusable \\(ee key too small\\)"):
        tls.load_server_tls(cert, key)


@pytest.mark.parametrize(("offset_days", "word"), [(-2, "expired"), (2, "not valid before")])
def test_certificate_not_valid_now_starts_with_a_warning(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, offset_days: int, word: str
) -> None:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")])
    start = datetime.datetime.now(datetime.UTC) + datetime.timedelta(days=offset_days)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(start - datetime.timedelta(days=1))
        .not_valid_after(start + datetime.timedelta(days=1))
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = tmp_path / "c.pem", tmp_path / "k.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    key_path.chmod(0o600)
    tls.load_server_tls(cert_path, key_path)
    assert word in caplog.text
