"""Implicit TLS towards clients (``--listen-tls``, the port 993 style), end to end: the
real ``imapproxy serve``, real clients (imaplib over ssl), the real Dovecot behind."""

from __future__ import annotations

import imaplib
import socket
import ssl
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.corpus import Account
from tests.support.dovecot import Dovecot
from tests.support.net import LOOPBACK
from tests.support.proxy import ProxyProcess
from tests.support.tlscert import CertPair, make_self_signed

TIMEOUT = 30


@pytest.fixture
def cert(tmp_path: Path) -> CertPair:
    return make_self_signed(tmp_path, "proxy")


@pytest.fixture
def tls_proxy(dovecot: Dovecot, tmp_path: Path, cert: CertPair) -> Iterator[ProxyProcess]:
    """Only ``--listen-tls`` (no plain listener), the upstream in clear on loopback."""
    proxy = ProxyProcess(
        f"imap+plain://{dovecot.host}:{dovecot.port}",
        tmp_path / "tls-state",
        tls=cert,
        listen_tls=True,
        listen_plain=False,
    )
    with proxy:
        yield proxy
    # Refused handshakes and plaintext on the TLS port are routine, not crashes.
    assert "Traceback" not in proxy.log_text(), proxy.log_text()


def _connect(proxy: ProxyProcess, context: ssl.SSLContext | None = None) -> imaplib.IMAP4_SSL:
    assert proxy.tls_port is not None
    return imaplib.IMAP4_SSL(
        proxy.host,
        proxy.tls_port,
        ssl_context=context or proxy.client_ssl_context(),
        timeout=TIMEOUT,
    )


def _close(client: imaplib.IMAP4) -> None:
    """Log out if still connected (a test may have logged out already)."""
    if client.state != "LOGOUT":
        try:
            client.logout()
        except (OSError, imaplib.IMAP4.error):
            _close(client)


def test_login_select_and_fetch_over_implicit_tls(tls_proxy: ProxyProcess, alice: Account) -> None:
    client = _connect(tls_proxy)
    try:
        assert client.sock.version() in ("TLSv1.2", "TLSv1.3")
        # Secure from the first byte: logins on offer, STARTTLS not.
        assert "AUTH=PLAIN" in client.capabilities
        assert "STARTTLS" not in client.capabilities
        assert "LOGINDISABLED" not in client.capabilities
        assert client.login(alice.user, alice.password)[0] == "OK"
        status, data = client.select("INBOX", readonly=True)
        assert status == "OK" and int(data[0]) == len(alice.mailboxes["INBOX"])
        status, fetched = client.fetch("1", "(BODY.PEEK[])")
        assert status == "OK"
        body = fetched[0][1]
        assert isinstance(body, bytes)
        assert body in {message.raw for message in alice.mailboxes["INBOX"]}
        client.logout()
    finally:
        _close(client)


def test_authenticate_plain_works_at_once(tls_proxy: ProxyProcess, alice: Account) -> None:
    client = _connect(tls_proxy)
    try:
        credentials = f"\0{alice.user}\0{alice.password}".encode()
        assert client.authenticate("PLAIN", lambda _: credentials)[0] == "OK"
        client.logout()
    finally:
        _close(client)


def test_starttls_on_the_tls_listener_is_refused_with_bad(
    tls_proxy: ProxyProcess, alice: Account
) -> None:
    client = _connect(tls_proxy)
    try:
        with pytest.raises(imaplib.IMAP4.error, match="BAD"):
            client.xatom("STARTTLS")
        # Refused, not broken: the session goes on, still over the first TLS layer.
        assert client.login(alice.user, alice.password)[0] == "OK"
        client.logout()
    finally:
        _close(client)


def test_client_that_does_not_trust_the_certificate_fails_the_handshake(
    tls_proxy: ProxyProcess, alice: Account, tmp_path: Path
) -> None:
    other = make_self_signed(tmp_path, "someone-else")
    for context in (
        ssl.create_default_context(),  # the system's CAs only
        ssl.create_default_context(cafile=str(other.cert)),  # a different CA
    ):
        with pytest.raises(ssl.SSLCertVerificationError):
            _connect(tls_proxy, context)
    # The refused handshakes cost nothing: a trusting client still gets in.
    client = _connect(tls_proxy)
    assert client.login(alice.user, alice.password)[0] == "OK"
    client.logout()


def _login_lines(dovecot: Dovecot, user: str) -> int:
    text = dovecot.paths.log.read_text(errors="replace")
    return sum(1 for line in text.splitlines() if "Login:" in line and f"user=<{user}>" in line)


def test_plaintext_client_on_the_tls_port_gets_nothing_usable(
    tls_proxy: ProxyProcess, dovecot: Dovecot, alice: Account, fresh_user: Account
) -> None:
    assert tls_proxy.tls_port is not None
    seeding_logins = _login_lines(dovecot, fresh_user.user)  # seeding opened the mailboxes
    received = b""
    with socket.create_connection((tls_proxy.host, tls_proxy.tls_port), timeout=5) as sock:
        sock.settimeout(1.0)
        with pytest.raises(TimeoutError):
            received += sock.recv(4096)  # no greeting in clear: the server waits for TLS
        sock.sendall(f"a1 LOGIN {fresh_user.user} {fresh_user.password}\r\n".encode())
        sock.settimeout(5.0)
        while chunk := sock.recv(4096):  # at most a TLS alert, then the proxy hangs up
            received += chunk
    assert b"OK" not in received and b"imapproxy" not in received, received
    assert b"a1" not in received, received
    # The credentials reached no IMAP parser: a proper login after it goes upstream
    # (and shows in Dovecot's log), the cleartext attempt never did.
    before = _login_lines(dovecot, alice.user)
    client = _connect(tls_proxy)
    assert client.login(alice.user, alice.password)[0] == "OK"
    client.logout()
    deadline = time.monotonic() + 10
    while _login_lines(dovecot, alice.user) == before and time.monotonic() < deadline:
        time.sleep(0.05)
    assert _login_lines(dovecot, alice.user) > before, "Dovecot logged no login at all"
    assert _login_lines(dovecot, fresh_user.user) == seeding_logins


@pytest.mark.filterwarnings("ignore:ssl.TLSVersion.TLSv1:DeprecationWarning")
def test_tls_1_1_client_is_refused(tls_proxy: ProxyProcess) -> None:
    context = tls_proxy.client_ssl_context()
    context.set_ciphers("DEFAULT:@SECLEVEL=0")  # let this client offer old versions
    context.minimum_version = ssl.TLSVersion.TLSv1
    context.maximum_version = ssl.TLSVersion.TLSv1_1
    # The proxy's alert, not this client giving up: it did offer TLS 1.0/1.1.
    with pytest.raises(ssl.SSLError, match="ALERT_PROTOCOL_VERSION"):
        _connect(tls_proxy, context)


def test_both_listeners_at_once(dovecot: Dovecot, tmp_path: Path, alice: Account) -> None:
    cert = make_self_signed(tmp_path, "proxy")
    proxy = ProxyProcess(
        f"imap+plain://{dovecot.host}:{dovecot.port}",
        tmp_path / "both-state",
        tls=cert,
        listen_tls=True,
    )
    with proxy:
        ready = [line for line in proxy.log_text().splitlines() if "ready" in line]
        assert len(ready) == 1, proxy.log_text()
        assert f"{LOOPBACK}:{proxy.port} (STARTTLS offered)" in ready[0]
        assert f"{LOOPBACK}:{proxy.tls_port} (implicit TLS)" in ready[0]
        secure = _connect(proxy)
        plain = imaplib.IMAP4(proxy.host, proxy.port, timeout=TIMEOUT)
        try:
            # Loopback plain listener with a certificate: STARTTLS offered, login allowed.
            assert "STARTTLS" in plain.capabilities and "STARTTLS" not in secure.capabilities
            assert secure.login(alice.user, alice.password)[0] == "OK"
            plain.starttls(ssl_context=proxy.client_ssl_context())
            assert plain.login(alice.user, alice.password)[0] == "OK"
            for client in (secure, plain):
                assert client.select("INBOX", readonly=True)[0] == "OK"
                assert client.fetch("1", "(UID FLAGS)")[0] == "OK"
                client.logout()
        finally:
            _close(secure)
            _close(plain)


def test_a_certificate_chain_is_served_whole(
    dovecot: Dovecot, tmp_path: Path, alice: Account
) -> None:
    """--tls-cert holds the leaf then the intermediate (a fullchain.pem): a client that
    trusts only the root can verify the proxy only if the intermediate is sent too."""
    root, chain = _make_chain(tmp_path)
    proxy = ProxyProcess(
        f"imap+plain://{dovecot.host}:{dovecot.port}",
        tmp_path / "chain-state",
        tls=chain,
        listen_tls=True,
        listen_plain=False,
    )
    with proxy:
        client = _connect(proxy, ssl.create_default_context(cafile=str(root)))
        assert client.login(alice.user, alice.password)[0] == "OK"
        client.logout()


def _make_chain(directory: Path) -> tuple[Path, CertPair]:
    """root CA → intermediate CA → leaf for localhost/127.0.0.1, made with cryptography."""
    import datetime
    import ipaddress

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    now = datetime.datetime.now(datetime.UTC)

    def issue(
        subject: str, key: ec.EllipticCurvePrivateKey, issuer: x509.Name, signer: object, ca: bool
    ) -> x509.Certificate:
        builder = (
            x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, subject)]))
            .issuer_name(issuer)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
        )
        if not ca:
            builder = builder.add_extension(
                x509.SubjectAlternativeName(
                    [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
                ),
                critical=False,
            ).add_extension(
                x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False
            )
        return builder.sign(signer, hashes.SHA256())  # type: ignore[arg-type]

    root_key, mid_key, leaf_key = (ec.generate_private_key(ec.SECP256R1()) for _ in range(3))
    root_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "test root")])
    root = issue("test root", root_key, root_name, root_key, ca=True)
    mid = issue("test intermediate", mid_key, root.subject, root_key, ca=True)
    leaf = issue("localhost", leaf_key, mid.subject, mid_key, ca=False)
    pem = serialization.Encoding.PEM
    root_path = directory / "root.pem"
    root_path.write_bytes(root.public_bytes(pem))
    chain_path = directory / "fullchain.pem"
    chain_path.write_bytes(leaf.public_bytes(pem) + mid.public_bytes(pem))
    key_path = directory / "leaf.key"
    key_path.write_bytes(
        leaf_key.private_bytes(pem, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    key_path.chmod(0o600)
    return root_path, CertPair(chain_path, key_path)
