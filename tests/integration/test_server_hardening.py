"""Server hardening against a real Dovecot: the selected mailbox renamed or deleted
under a session, and no cleartext passwords on a listener reachable from the network."""

from __future__ import annotations

import imaplib
import ipaddress
import socket
import ssl
from email.message import EmailMessage
from pathlib import Path

import pytest
from imapclient import IMAPClient

from tests.integration.clients import imap
from tests.support.corpus import EMPTY_FOLDER, Account
from tests.support.dovecot import Dovecot
from tests.support.net import free_port
from tests.support.proxy import ProxyProcess
from tests.support.tlscert import make_self_signed


def _message(subject: str) -> bytes:
    message = EmailMessage()
    message["From"] = "a@example.org"
    message["To"] = "b@example.org"
    message["Subject"] = subject
    message.set_content("hello\n")
    return message.as_bytes().replace(b"\n", b"\r\n")


# the selected mailbox renamed or deleted --------------------------------------------


def test_selected_mailbox_renamed_through_the_same_session(
    dovecot: Dovecot, proxy: ProxyProcess, fresh_user: Account
) -> None:
    with imap(dovecot.host, dovecot.port, fresh_user) as direct:
        direct.append(EMPTY_FOLDER, _message("renamed under a session"))
    with imap(proxy.host, proxy.port, fresh_user) as client:
        client.select_folder(EMPTY_FOLDER)
        (uid,) = client.search(["ALL"])
        client.rename_folder(EMPTY_FOLDER, "Renamed")
        client.noop()
        client.add_flags([uid], [b"\\Flagged"])
        assert b"\\Flagged" in client.get_flags([uid])[uid]
    with imap(dovecot.host, dovecot.port, fresh_user) as direct:
        assert not direct.folder_exists(EMPTY_FOLDER)
        direct.select_folder("Renamed")
        flags = direct.get_flags(direct.search(["ALL"]))
        assert [b"\\Flagged" in f for f in flags.values()] == [True]


def test_selected_mailbox_deleted_by_another_session(
    proxy: ProxyProcess, fresh_user: Account
) -> None:
    with imap(proxy.host, proxy.port, fresh_user) as first:
        first.select_folder(EMPTY_FOLDER)
        with imap(proxy.host, proxy.port, fresh_user) as second:
            second.delete_folder(EMPTY_FOLDER)
        with pytest.raises(IMAPClient.Error, match="NONEXISTENT"):
            first.fetch("1:*", ["FLAGS"])
        # Back in authenticated state, not disconnected: the session carries on.
        first.noop()
        first.select_folder("INBOX")
        assert first.search(["ALL"])


# cleartext passwords on a network listener ------------------------------------------


def _exposed_address() -> str:
    """A local address other than loopback (the one a default route would use)."""
    try:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
            probe.connect(("192.0.2.1", 9))  # no packet is sent for a UDP connect
            address = str(probe.getsockname()[0])
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            sock.bind((address, 0))
    except OSError:
        pytest.skip("no non-loopback address to listen on")
    if ipaddress.ip_address(address).is_loopback:
        pytest.skip("no non-loopback address to listen on")
    return address


def _exposed_proxy(
    dovecot: Dovecot, tmp_path: Path, *extra: str
) -> tuple[ProxyProcess, ssl.SSLContext]:
    """A proxy with a certificate on a non-loopback address, and a context trusting it."""
    pair = make_self_signed(tmp_path)
    host = _exposed_address()
    proxy = ProxyProcess(
        f"imap+plain://{dovecot.host}:{dovecot.port}",
        tmp_path / "exposed-state",
        listen_port=free_port(host),
        extra_args=("--tls-cert", str(pair.cert), "--tls-key", str(pair.key), *extra),
    )
    proxy.host = host
    context = ssl.create_default_context(cafile=str(pair.cert))
    context.check_hostname = False  # the certificate names localhost, not this address
    return proxy.start(), context


def test_network_listener_wants_starttls_before_login(
    dovecot: Dovecot, tmp_path: Path, alice: Account
) -> None:
    proxy, context = _exposed_proxy(dovecot, tmp_path)
    try:
        client = imaplib.IMAP4(proxy.host, proxy.port, timeout=30)
        assert "LOGINDISABLED" in client.capabilities
        assert "AUTH=PLAIN" not in client.capabilities
        with pytest.raises(imaplib.IMAP4.error, match="PRIVACYREQUIRED"):
            client.login(alice.user, alice.password)
        credentials = f"\0{alice.user}\0{alice.password}".encode()
        with pytest.raises(imaplib.IMAP4.error, match="PRIVACYREQUIRED"):
            client.authenticate("PLAIN", lambda _: credentials)
        client.starttls(ssl_context=context)
        assert "AUTH=PLAIN" in client.capabilities
        assert client.login(alice.user, alice.password)[0] == "OK"
        client.logout()
    finally:
        proxy.stop()


def test_allow_plaintext_listen_keeps_cleartext_login(
    dovecot: Dovecot, tmp_path: Path, alice: Account
) -> None:
    proxy, _ = _exposed_proxy(dovecot, tmp_path, "--allow-plaintext-listen")
    try:
        client = imaplib.IMAP4(proxy.host, proxy.port, timeout=30)
        assert "LOGINDISABLED" not in client.capabilities
        assert client.login(alice.user, alice.password)[0] == "OK"
        client.logout()
    finally:
        proxy.stop()


def test_network_implicit_tls_listener_needs_no_plaintext_override(
    dovecot: Dovecot, tmp_path: Path, alice: Account
) -> None:
    """Only ``--listen-tls`` on a non-loopback address: no --allow-plaintext-listen needed
    (nothing there is in clear), and logins at once: the session is private from its
    first byte. (The plain listener's rule is the test above.)"""
    pair = make_self_signed(tmp_path)
    proxy = ProxyProcess(
        f"imap+plain://{dovecot.host}:{dovecot.port}",
        tmp_path / "exposed-tls-state",
        tls=pair,
        listen_tls=False,
        listen_plain=False,
    )
    proxy.host = _exposed_address()
    proxy.tls_port = free_port(proxy.host)
    context = ssl.create_default_context(cafile=str(pair.cert))
    context.check_hostname = False  # the certificate names localhost, not this address
    with proxy:
        assert "--allow-plaintext-listen" not in proxy.argv()
        secure = imaplib.IMAP4_SSL(proxy.host, proxy.tls_port, ssl_context=context, timeout=30)
        assert "STARTTLS" not in secure.capabilities
        assert "LOGINDISABLED" not in secure.capabilities
        assert secure.login(alice.user, alice.password)[0] == "OK"
        secure.logout()


def _read_line(sock: socket.socket | ssl.SSLSocket) -> bytes:
    """One line, byte by byte: nothing after it may be consumed (the TLS handshake is)."""
    line = b""
    while not line.endswith(b"\r\n"):
        byte = sock.recv(1)
        if not byte:
            raise ConnectionError(f"closed after {line!r}")
        line += byte
    return line


def _read_until_tagged(sock: ssl.SSLSocket, tag: bytes) -> list[bytes]:
    lines = []
    while not (lines and lines[-1].startswith(tag + b" ")):
        lines.append(_read_line(sock))
    return lines


def test_commands_pipelined_after_starttls_in_clear_are_dropped(
    dovecot: Dovecot, tmp_path: Path, alice: Account
) -> None:
    """A LOGIN sent in clear right behind STARTTLS (CVE-2011-0411 style injection) must not
    run inside the TLS session. On a loopback listener a cleartext LOGIN is allowed, so
    only the drop keeps it from logging the session in."""
    pair = make_self_signed(tmp_path)
    proxy = ProxyProcess(
        f"imap+plain://{dovecot.host}:{dovecot.port}", tmp_path / "pipelined-state", tls=pair
    )
    with proxy, socket.create_connection((proxy.host, proxy.port), timeout=30) as raw:
        assert b"STARTTLS" in _read_line(raw)
        login = f"a2 LOGIN {alice.user} {alice.password}\r\n".encode()
        raw.sendall(b"a1 STARTTLS\r\n" + login + b"a3 NOOP\r\n")
        assert _read_line(raw).startswith(b"a1 OK")
        with proxy.client_ssl_context().wrap_socket(raw, server_hostname="localhost") as tls:
            tls.sendall(b"a4 CAPABILITY\r\n")
            lines = _read_until_tagged(tls, b"a4")
            assert lines[-1].startswith(b"a4 OK"), lines
            assert not any(line.startswith((b"a2", b"a3")) for line in lines), lines
            # Still not authenticated: the injected LOGIN never ran.
            assert b"AUTH=PLAIN" in lines[0], lines
            tls.sendall(b"a5 SELECT INBOX\r\n")
            assert _read_until_tagged(tls, b"a5")[-1].startswith(b"a5 BAD"), "SELECT ran"
            tls.sendall(login.replace(b"a2", b"a6"))
            assert _read_until_tagged(tls, b"a6")[-1].startswith(b"a6 OK")
