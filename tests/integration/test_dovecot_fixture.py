"""Tests of the test harness itself: Dovecot fixture, corpus seeding, relay, proxy runner.

Everything else in tests/integration trusts these pieces, so they are checked with the
standard library's imaplib and raw sockets, independently of the proxy.
"""

from __future__ import annotations

import email
import email.policy
import imaplib
import re
import socket
import ssl
import sys
import textwrap
import time
from collections.abc import Iterator
from contextlib import contextmanager
from email.utils import parsedate_to_datetime
from pathlib import Path

import imapclient.imap_utf7
import pytest

from tests.support.corpus import (
    KOREAN_FOLDER,
    STANDARD_ACCOUNT,
    Account,
    imap_name,
    make_messages,
    seed_messages,
)
from tests.support.dovecot import Dovecot
from tests.support.proxy import ProxyProcess
from tests.support.relay import Relay

FETCH_RE = re.compile(rb"UID (\d+) FLAGS \(([^)]*)\)(?: INTERNALDATE \"([^\"]+)\")?")


@contextmanager
def login(dovecot: Dovecot, account: Account) -> Iterator[imaplib.IMAP4]:
    client = imaplib.IMAP4(dovecot.host, dovecot.port, timeout=10)
    try:
        client.login(account.user, account.password)
        yield client
    finally:
        try:
            client.logout()
        except (imaplib.IMAP4.error, OSError):
            client.shutdown()


def quoted(mailbox: str) -> str:
    return '"' + imap_name(mailbox) + '"'


def fetch_flags_and_ids(client: imaplib.IMAP4) -> list[tuple[set[str], bytes, str]]:
    """(flags without \\Recent, Message-ID, INTERNALDATE) for every message in UID order."""
    typ, data = client.uid(
        "FETCH", "1:*", "(FLAGS INTERNALDATE BODY.PEEK[HEADER.FIELDS (MESSAGE-ID)])"
    )
    assert typ == "OK"
    rows = []
    for item in data:
        if isinstance(item, tuple):
            match = FETCH_RE.search(item[0])
            assert match, item[0]
            flags = set(match.group(2).decode().split()) - {"\\Recent"}
            rows.append((flags, item[1].split(b":", 1)[1].strip(), match.group(3).decode()))
    return rows


def message_id(raw: bytes) -> bytes:
    match = re.search(rb"^Message-ID: (\S+)\r$", raw, re.MULTILINE)
    assert match
    return match.group(1)


# -- Dovecot -------------------------------------------------------------------------------


def test_plain_login_and_capabilities(dovecot: Dovecot, alice: Account) -> None:
    with login(dovecot, alice) as client:
        typ, data = client.capability()
        assert typ == "OK"
        caps = data[0].split()
        for cap in (b"CONDSTORE", b"QRESYNC", b"UIDPLUS", b"MOVE", b"IDLE", b"SPECIAL-USE"):
            assert cap in caps


def test_imaps_login_verifies_against_ca_file(dovecot: Dovecot, alice: Account) -> None:
    context = ssl.create_default_context(cafile=str(dovecot.ca_file))
    client = imaplib.IMAP4_SSL(dovecot.host, dovecot.tls_port, ssl_context=context, timeout=10)
    try:
        assert client.login(alice.user, alice.password)[0] == "OK"
    finally:
        client.logout()


def test_imaps_cert_is_rejected_without_ca(dovecot: Dovecot) -> None:
    with pytest.raises(ssl.SSLCertVerificationError):
        imaplib.IMAP4_SSL(
            dovecot.host, dovecot.tls_port, ssl_context=ssl.create_default_context(), timeout=10
        )


def test_bad_password_gets_no(dovecot: Dovecot) -> None:
    client = imaplib.IMAP4(dovecot.host, dovecot.port, timeout=10)
    try:
        with pytest.raises(imaplib.IMAP4.error, match="AUTHENTICATIONFAILED"):
            client.login("alice", "wrong-password")
    finally:
        client.shutdown()


def test_add_user_on_running_server(dovecot: Dovecot) -> None:
    dovecot.add_user("carol-live", "carol-pw")
    client = imaplib.IMAP4(dovecot.host, dovecot.port, timeout=10)
    try:
        assert client.login("carol-live", "carol-pw")[0] == "OK"
    finally:
        client.logout()


def test_connection_limit_is_raised(dovecot: Dovecot, bob: Account) -> None:
    # Dovecot's default is 10 per user and IP; a caching proxy keeps several open.
    clients = []
    try:
        for _ in range(15):
            client = imaplib.IMAP4(dovecot.host, dovecot.port, timeout=10)
            clients.append(client)
            assert client.login(bob.user, bob.password)[0] == "OK"
    finally:
        for client in clients:
            client.logout()


def test_missing_dovecot_says_how_to_install(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("tests.support.dovecot.shutil.which", lambda *a, **k: None)
    with pytest.raises(RuntimeError) as info:
        Dovecot()
    assert "./scripts/test" in str(info.value)
    assert "apt-get install dovecot-imapd" in str(info.value)


# -- seeded mail ---------------------------------------------------------------------------


def test_seeded_folders_are_listed(dovecot: Dovecot, alice: Account) -> None:
    with login(dovecot, alice) as client:
        typ, data = client.list()
        assert typ == "OK"
    listed = {
        line.rsplit(b' "/" ', 1)[1].strip(b'"').decode() for line in data if isinstance(line, bytes)
    }
    for mailbox in STANDARD_ACCOUNT:
        assert imap_name(mailbox) in listed
    for special in ("Drafts", "Sent", "Trash", "Junk", "Archive"):
        assert special in listed


def test_korean_folder_uses_modified_utf7(dovecot: Dovecot, alice: Account) -> None:
    wire = imap_name(KOREAN_FOLDER)
    # Cross-check our encoder against imapclient's independent implementation.
    assert wire.encode() == imapclient.imap_utf7.encode(KOREAN_FOLDER)
    assert wire.startswith("&") and wire.isascii()
    with login(dovecot, alice) as client:
        typ, data = client.list('""', quoted(KOREAN_FOLDER))
        assert typ == "OK" and data[0] is not None and wire.encode() in data[0]
        assert client.select(quoted(KOREAN_FOLDER), readonly=True) == ("OK", [b"5"])


def test_status_counts_match_seeded_mail(dovecot: Dovecot, alice: Account) -> None:
    with login(dovecot, alice) as client:
        for mailbox, messages in alice.mailboxes.items():
            typ, data = client.status(quoted(mailbox), "(MESSAGES UNSEEN)")
            assert typ == "OK"
            unseen = sum("\\Seen" not in m.flags for m in messages)
            assert f"(MESSAGES {len(messages)} UNSEEN {unseen})" in data[0].decode(), mailbox


def test_flags_and_order_match_seeded_mail(dovecot: Dovecot, alice: Account) -> None:
    with login(dovecot, alice) as client:
        client.select("INBOX", readonly=True)
        rows = fetch_flags_and_ids(client)
    expected = [(set(m.flags), message_id(m.raw)) for m in alice.mailboxes["INBOX"]]
    assert [(flags, mid) for flags, mid, _ in rows] == expected
    all_flags = set().union(*(flags for flags, _, _ in rows))
    assert {"\\Seen", "\\Flagged", "\\Answered", "$Label1"} <= all_flags


def test_internaldate_follows_date_header(dovecot: Dovecot, alice: Account) -> None:
    with login(dovecot, alice) as client:
        client.select(quoted("Archive/2024"), readonly=True)
        rows = fetch_flags_and_ids(client)
    for (_, _, internaldate), seeded in zip(rows, alice.mailboxes["Archive/2024"], strict=True):
        header = email.message_from_bytes(seeded.raw)["Date"]
        assert imaplib.Internaldate2tuple(f'INTERNALDATE "{internaldate}"'.encode()) == (
            time.localtime(parsedate_to_datetime(header).timestamp())
        )
    assert len({date for _, _, date in rows}) == len(rows)


def test_mime_structure_survives_seeding(dovecot: Dovecot, alice: Account) -> None:
    with login(dovecot, alice) as client:
        client.select("INBOX", readonly=True)
        typ, data = client.fetch("1:*", "(BODYSTRUCTURE)")
    assert typ == "OK"
    structures = b" ".join(item for item in data if isinstance(item, bytes))
    for part in (b'"base64"', b'"alternative"', b'"html"', b'"message" "rfc822"'):
        assert part in structures.lower()


def test_fresh_user_is_private(dovecot: Dovecot, fresh_user: Account, alice: Account) -> None:
    with login(dovecot, fresh_user) as client:
        client.select("INBOX")
        client.store("1:*", "+FLAGS", "\\Deleted")
        client.expunge()
        assert client.status("INBOX", "(MESSAGES)")[1][0] == b"INBOX (MESSAGES 0)"
    with login(dovecot, alice) as client:
        assert client.status("INBOX", "(MESSAGES)")[1][0] == b"INBOX (MESSAGES 60)"


def test_seeds_ten_thousand_messages_quickly(dovecot: Dovecot, fresh_user: Account) -> None:
    start = time.monotonic()
    messages = make_messages(10_000, seed=99)
    seed_messages(dovecot.mail_root(fresh_user.user), "Big", messages)
    with login(dovecot, fresh_user) as client:
        assert client.select("Big", readonly=True) == ("OK", [b"10000"])
    elapsed = time.monotonic() - start
    print(f"generated, seeded and indexed 10,000 messages in {elapsed:.1f}s")
    assert elapsed < 30


def test_generated_messages_are_varied_and_well_formed() -> None:
    messages = make_messages(200, seed=5)
    assert messages == make_messages(200, seed=5)
    assert len({message_id(m.raw) for m in messages}) == 200
    kinds = set()
    for m in messages:
        assert b"\n" not in m.raw.replace(b"\r\n", b"")  # CRLF only
        parsed = email.message_from_bytes(m.raw, policy=email.policy.default)
        kinds.add(parsed.get_content_type())
        assert parsed["Subject"] is not None and parsed["From"] is not None
    assert kinds == {"text/plain", "multipart/alternative", "multipart/mixed"}
    raw = b"".join(m.raw for m in messages)
    assert b"=?UTF-8?B?" in raw and b"=?UTF-8?Q?" in raw and b"In-Reply-To:" in raw
    assert 2_000 <= sorted(len(m.raw) for m in messages)[100] <= 20_000


# -- relay ---------------------------------------------------------------------------------


def _recv_until_closed(sock: socket.socket) -> bytes:
    data = b""
    while chunk := sock.recv(65536):
        data += chunk
    return data


def _recv_line(sock: socket.socket) -> bytes:
    data = b""
    while not data.endswith(b"\r\n"):
        chunk = sock.recv(1)
        if not chunk:
            break
        data += chunk
    return data


def test_relay_counts_bytes_each_way(dovecot: Dovecot) -> None:
    with Relay(dovecot.host, dovecot.port) as relay:
        with socket.create_connection((relay.host, relay.port), timeout=10) as sock:
            sock.sendall(b"a1 LOGOUT\r\n")
            received = _recv_until_closed(sock)
        assert received.startswith(b"* OK") and b"a1 OK" in received
        deadline = time.monotonic() + 5
        while relay.active_connections and time.monotonic() < deadline:
            time.sleep(0.01)
        assert relay.bytes_up == len(b"a1 LOGOUT\r\n")
        assert relay.bytes_down == len(received)
        relay.reset_counters()
        assert (relay.bytes_up, relay.bytes_down) == (0, 0)


def test_relay_cut_resets_and_resume_listens_again(dovecot: Dovecot) -> None:
    with Relay(dovecot.host, dovecot.port) as relay:
        sock = socket.create_connection((relay.host, relay.port), timeout=10)
        assert _recv_line(sock).startswith(b"* OK")
        relay.cut()
        with pytest.raises(ConnectionResetError):
            sock.sendall(b"a1 NOOP\r\n")
            sock.recv(100)
        sock.close()
        with pytest.raises(ConnectionRefusedError):
            socket.create_connection((relay.host, relay.port), timeout=2)
        relay.resume()
        with socket.create_connection((relay.host, relay.port), timeout=10) as again:
            assert _recv_line(again).startswith(b"* OK")


def test_relay_stall_holds_data_until_unstalled(dovecot: Dovecot) -> None:
    with (
        Relay(dovecot.host, dovecot.port) as relay,
        socket.create_connection((relay.host, relay.port), timeout=10) as sock,
    ):
        assert _recv_line(sock).startswith(b"* OK")
        relay.reset_counters()
        relay.stall()
        sock.sendall(b"a1 NOOP\r\n")
        sock.settimeout(0.3)
        with pytest.raises(TimeoutError):
            sock.recv(100)
        assert relay.bytes_up == 0
        relay.unstall()
        sock.settimeout(10)
        assert _recv_line(sock).startswith(b"a1 OK")


# -- proxy runner (against a stand-in, since it must work before the proxy does) -----------

FAKE_PROXY = textwrap.dedent(
    """
    import signal, socket, sys
    args = sys.argv[sys.argv.index("serve") + 1:]
    opts = dict(zip(args[::2], args[1::2]))
    if "--fail" in opts:
        print("cannot start: " + opts["--fail"], flush=True)
        sys.exit(3)
    host, port = opts["--listen"].rsplit(":", 1)
    server = socket.create_server((host, int(port)))
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    print("upstream " + opts["--upstream"] + " state " + opts["--state-dir"], flush=True)
    print("imapproxy ready", flush=True)
    while True:
        conn, _ = server.accept()
        conn.close()
    """
)


def test_proxy_process_waits_for_ready_and_stops(tmp_path: Path) -> None:
    script = tmp_path / "fake_proxy.py"
    script.write_text(FAKE_PROXY)
    proxy = ProxyProcess(
        "imap+plain://127.0.0.1:1", tmp_path / "state", command=[sys.executable, str(script)]
    )
    with proxy:
        assert proxy.running
        assert "imap+plain://127.0.0.1:1" in proxy.log_text()
        socket.create_connection((proxy.host, proxy.port), timeout=5).close()
    assert proxy.returncode == 0
    assert (tmp_path / "state").is_dir()


def test_proxy_process_reports_startup_failure(tmp_path: Path) -> None:
    script = tmp_path / "fake_proxy.py"
    script.write_text(FAKE_PROXY)
    proxy = ProxyProcess(
        "imap+plain://127.0.0.1:1",
        tmp_path / "state",
        extra_args=["--fail", "no-upstream"],
        command=[sys.executable, str(script)],
    )
    with pytest.raises(RuntimeError, match="(?s)exited with 3.*cannot start: no-upstream"):
        proxy.start()
    assert proxy.returncode == 3
