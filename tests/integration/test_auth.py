"""Logging in through the proxy: credentials go upstream, failures are clear, users stay
apart, the replica keeps no password, and the upstream's TLS is verified."""

from __future__ import annotations

import base64
import imaplib
import socket
import stat
import uuid
from pathlib import Path

import pytest

from tests.integration.clients import TIMEOUT, imap
from tests.integration.conftest import ProxyFactory
from tests.support.corpus import Account
from tests.support.dovecot import Dovecot
from tests.support.proxy import ProxyProcess


def _message(marker: str) -> bytes:
    return (
        f"From: a@example.org\r\nTo: b@example.org\r\nSubject: {marker}\r\n"
        f"Message-ID: <{marker}@imapproxy.test>\r\n\r\nbody of {marker}\r\n"
    ).encode()


def _new_user(dovecot: Dovecot, markers: list[str]) -> Account:
    """A user of its own (random password) whose INBOX holds exactly ``markers``."""
    user = f"auth-{uuid.uuid4().hex[:10]}"
    password = uuid.uuid4().hex
    dovecot.add_user(user, password)
    account = Account(user, password, {})
    with imap(dovecot.host, dovecot.port, account) as direct:
        for marker in markers:
            direct.append("INBOX", _message(marker))
    return account


def _subjects(host: str, port: int, account: Account) -> list[bytes]:
    with imap(host, port, account) as client:
        client.select_folder("INBOX", readonly=True)
        uids = client.search(["ALL"])
        items = client.fetch(uids, ["BODY.PEEK[HEADER.FIELDS (SUBJECT)]"]) if uids else {}
        return sorted(v[b"BODY[HEADER.FIELDS (SUBJECT)]"].strip() for v in items.values())


def _raw_exchange(host: str, port: int, lines: list[bytes], last_tag: bytes) -> list[bytes]:
    """Send lines one at a time on a raw socket; return every line up to last_tag's reply."""
    with socket.create_connection((host, port), timeout=TIMEOUT) as sock:
        data = b""
        while b"\r\n" not in data:
            chunk = sock.recv(65536)
            assert chunk, "proxy closed before greeting"
            data += chunk
        for line in lines:
            sock.sendall(line + b"\r\n")
        while not any(line.startswith(last_tag + b" ") for line in data.split(b"\r\n")):
            chunk = sock.recv(65536)
            assert chunk, f"proxy closed the connection; got {data!r}"
            data += chunk
        return data.split(b"\r\n")


def test_wrong_password_gets_authenticationfailed_and_connection_stays_usable(
    proxy: ProxyProcess, alice: Account
) -> None:
    client = imaplib.IMAP4(proxy.host, proxy.port, timeout=TIMEOUT)
    try:
        with pytest.raises(imaplib.IMAP4.error) as refused:
            client.login(alice.user, "not-" + alice.password)
        assert "[AUTHENTICATIONFAILED]" in str(refused.value)
        assert client.state == "NONAUTH"
        typ, _ = client.login(alice.user, alice.password)
        assert typ == "OK"
        typ, data = client.select("INBOX", readonly=True)
        assert typ == "OK" and int(data[0]) == len(alice.mailboxes["INBOX"])
    finally:
        client.logout()


def test_unknown_user_gets_authenticationfailed(proxy: ProxyProcess) -> None:
    lines = _raw_exchange(
        proxy.host, proxy.port, [b"a1 LOGIN nobody-here wrong", b"a2 NOOP"], b"a2"
    )
    assert any(line.startswith(b"a1 NO [AUTHENTICATIONFAILED]") for line in lines), lines
    assert any(line.startswith(b"a2 OK") for line in lines), lines


def test_authenticate_plain(proxy: ProxyProcess, alice: Account) -> None:
    client = imaplib.IMAP4(proxy.host, proxy.port, timeout=TIMEOUT)
    try:
        token = f"\0{alice.user}\0{alice.password}".encode()
        typ, _ = client.authenticate("PLAIN", lambda _challenge: token)
        assert typ == "OK"
        assert client.state == "AUTH"
        typ, data = client.select("INBOX", readonly=True)
        assert typ == "OK" and int(data[0]) == len(alice.mailboxes["INBOX"])
    finally:
        client.logout()


def test_authenticate_plain_with_sasl_ir_and_bad_credentials(
    proxy: ProxyProcess, alice: Account
) -> None:
    good = base64.b64encode(f"\0{alice.user}\0{alice.password}".encode())
    bad = base64.b64encode(f"\0{alice.user}\0wrong".encode())
    lines = _raw_exchange(
        proxy.host,
        proxy.port,
        [
            b"a1 CAPABILITY",
            b"a2 AUTHENTICATE PLAIN " + bad,
            b"a3 AUTHENTICATE PLAIN " + good,
            b"a4 SELECT INBOX",
        ],
        b"a4",
    )
    caps = next(line for line in lines if line.startswith(b"* CAPABILITY"))
    assert b"SASL-IR" in caps.split() and b"AUTH=PLAIN" in caps.split()
    assert not any(line.startswith(b"+") for line in lines), (
        "SASL-IR must not ask for a continuation"
    )
    assert any(line.startswith(b"a2 NO [AUTHENTICATIONFAILED]") for line in lines), lines
    assert any(line.startswith(b"a3 OK") for line in lines), lines
    assert f"* {len(alice.mailboxes['INBOX'])} EXISTS".encode() in lines
    assert any(line.startswith(b"a4 OK") for line in lines), lines


def test_two_users_at_once_each_see_only_their_own_mail(
    dovecot: Dovecot, proxy: ProxyProcess
) -> None:
    # Not alice and bob: they are seeded with identical mail, so a mix-up would not show.
    first = _new_user(dovecot, ["first-a", "first-b"])
    second = _new_user(dovecot, ["second-a", "second-b", "second-c"])
    with imap(proxy.host, proxy.port, first) as a, imap(proxy.host, proxy.port, second) as b:
        # Interleaved on one proxy at the same time.
        a.select_folder("INBOX", readonly=True)
        b.select_folder("INBOX", readonly=True)
        a_items = a.fetch(a.search(["ALL"]), ["BODY.PEEK[HEADER.FIELDS (SUBJECT)]"])
        b_items = b.fetch(b.search(["ALL"]), ["BODY.PEEK[HEADER.FIELDS (SUBJECT)]"])
        a_subjects = sorted(v[b"BODY[HEADER.FIELDS (SUBJECT)]"].strip() for v in a_items.values())
        b_subjects = sorted(v[b"BODY[HEADER.FIELDS (SUBJECT)]"].strip() for v in b_items.values())
    assert a_subjects == [b"Subject: first-a", b"Subject: first-b"]
    assert b_subjects == [b"Subject: second-a", b"Subject: second-b", b"Subject: second-c"]
    assert a_subjects == _subjects(dovecot.host, dovecot.port, first)
    assert b_subjects == _subjects(dovecot.host, dovecot.port, second)
    # And again in later sessions, now served from each user's replica.
    assert _subjects(proxy.host, proxy.port, first) == a_subjects
    assert _subjects(proxy.host, proxy.port, second) == b_subjects


def test_another_users_password_does_not_open_a_logged_in_replica(
    dovecot: Dovecot, make_proxy: ProxyFactory
) -> None:
    # Five wrong passwords in a row: without this the failed-login delay (tested in
    # test_login_limits) would add 2 + 4 + 8 + 15 s, and prove nothing more here.
    proxy = make_proxy(extra_args=("--login-delay", "0"))
    victim = _new_user(dovecot, ["victim-secret"])
    other = _new_user(dovecot, ["other-mail"])
    with imap(proxy.host, proxy.port, victim) as session:
        session.select_folder("INBOX", readonly=True)  # the victim's runtime and replica exist
        for password in (other.password, "", victim.password + "x", victim.password[:-1]):
            client = imaplib.IMAP4(proxy.host, proxy.port, timeout=TIMEOUT)
            try:
                with pytest.raises(imaplib.IMAP4.error) as refused:
                    client.login(victim.user, password or '""')
                assert "AUTHENTICATIONFAILED" in str(refused.value), password
            finally:
                client.logout()
    # After the victim logged out too.
    lines = _raw_exchange(
        proxy.host,
        proxy.port,
        [f"a1 LOGIN {victim.user} {other.password}".encode(), b"a2 SELECT INBOX"],
        b"a2",
    )
    assert any(line.startswith(b"a1 NO [AUTHENTICATIONFAILED]") for line in lines), lines
    assert any(line.startswith(b"a2 BAD") for line in lines), lines


def test_state_directory_is_private_and_holds_no_password(
    dovecot: Dovecot, proxy: ProxyProcess
) -> None:
    account = _new_user(dovecot, ["private"])
    assert _subjects(proxy.host, proxy.port, account) == [b"Subject: private"]
    # A second login is checked against what the proxy kept.
    assert _subjects(proxy.host, proxy.port, account) == [b"Subject: private"]
    state: Path = proxy.state_dir
    assert stat.S_IMODE(state.stat().st_mode) == 0o700
    secret = account.password.encode()
    files = [path for path in state.rglob("*") if path.is_file()]
    assert files, "the replica wrote nothing"
    for path in files:
        data = path.read_bytes()
        for form in (secret, base64.b64encode(secret), secret.hex().encode()):
            assert form not in data, f"{path} contains the password ({form!r})"
    log = proxy.log_text().encode()
    assert secret not in log, "the proxy log contains the password"


def test_upstream_over_tls_with_upstream_ca(make_proxy: ProxyFactory, alice: Account) -> None:
    proxy = make_proxy(tls=True)
    with imap(proxy.host, proxy.port, alice) as client:
        exists = client.select_folder("INBOX", readonly=True)[b"EXISTS"]
        assert exists == len(alice.mailboxes["INBOX"])
        body = client.fetch([client.search(["ALL"])[0]], ["BODY.PEEK[]"])
    assert next(iter(body.values()))[b"BODY[]"] in {m.raw for m in alice.mailboxes["INBOX"]}


def test_upstream_tls_certificate_not_trusted_without_ca(
    dovecot: Dovecot, alice: Account, tmp_path: Path
) -> None:
    proxy = ProxyProcess(f"imaps://{dovecot.host}:{dovecot.tls_port}", tmp_path / "untrusted-state")
    proxy.start()
    try:
        client = imaplib.IMAP4(proxy.host, proxy.port, timeout=TIMEOUT)
        try:
            with pytest.raises(imaplib.IMAP4.error) as refused:
                client.login(alice.user, alice.password)
            assert client.state == "NONAUTH"
            # Not a credentials problem: the upstream could not be trusted.
            assert "AUTHENTICATIONFAILED" not in str(refused.value)
            assert client.noop()[0] == "OK"
        finally:
            client.logout()
        assert proxy.running
    finally:
        proxy.stop()
    assert alice.password not in proxy.log_text()
