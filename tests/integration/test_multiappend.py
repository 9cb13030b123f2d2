"""MULTIAPPEND (RFC 3502) and APPENDLIMIT (RFC 7889) through the proxy.

A MULTIAPPEND is all or nothing (a message refused refuses the whole command, nothing
is stored); it gets one APPENDUID with every new UID, as from Dovecot; offline it is
queued and replayed. APPENDLIMIT is the upstream's, announced and enforced by the
proxy (Dovecot 2.3 has none of its own: the upstream here only announces one).
"""

from __future__ import annotations

import datetime
import re
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.integration.raw import RawClient
from tests.support.corpus import Account
from tests.support.dovecot import Dovecot
from tests.support.proxy import ProxyProcess
from tests.support.relay import Relay

DATE = '"07-Feb-1994 22:43:04 -0800"'
LIMIT = 4000


def _message(n: int, size: int = 0) -> bytes:
    body = b"x" * size if size else b"body %d\r\n" % n
    return b"From: a@example.org\r\nSubject: m%d\r\nMessage-ID: <m%d@test>\r\n\r\n" % (n, n) + body


def _multiappend(client: RawClient, mailbox: str, messages: list[bytes]) -> str:
    """One APPEND of several messages with non-synchronizing literals; the tagged line."""
    data = f'm1 APPEND "{mailbox}"'.encode()
    for index, message in enumerate(messages):
        options = b" (\\Seen)" if index % 2 else b" (\\Flagged) " + DATE.encode()
        data += options + b" {%d+}\r\n" % len(message) + message
    client.sock.sendall(data + b"\r\n")
    while True:
        line = client.file.readline().decode()
        if line.startswith("m1 "):
            return line[3:].strip()


def _contents(client: RawClient, mailbox: str) -> list[tuple[str, str, float | None]]:
    """(subject, flags, INTERNALDATE as an instant) per message; the instant only where
    the client gave one (the others are "now" on each server)."""
    client.ok(f'EXAMINE "{mailbox}"')
    lines = client.ok("FETCH 1:* (FLAGS INTERNALDATE BODY.PEEK[])")
    client.ok("UNSELECT")
    out = []
    for line in lines:
        flags = re.search(r"FLAGS \(([^)]*)\)", line).group(1)  # type: ignore[union-attr]
        date = re.search(r'INTERNALDATE "([^"]+)"', line).group(1)  # type: ignore[union-attr]
        subject = re.search(r"Subject: (m\d+)", line).group(1)  # type: ignore[union-attr]
        kept = " ".join(sorted(f for f in flags.split() if f != "\\Recent"))
        when = datetime.datetime.strptime(date.strip(), "%d-%b-%Y %H:%M:%S %z").timestamp()
        out.append((subject, kept, when if "Flagged" in kept else None))
    return out


def test_multiappend_like_dovecot(
    dovecot: Dovecot, proxy: ProxyProcess, fresh_user: Account
) -> None:
    messages = [_message(n) for n in range(1, 4)]
    user, password = fresh_user.user, fresh_user.password
    answers = {}
    for who, host, port in (
        ("direct", dovecot.host, dovecot.port),
        ("through", proxy.host, proxy.port),
    ):
        with RawClient(host, port, user, password) as client:
            client.ok(f'CREATE "{who}"')
            tagged = _multiappend(client, who, messages)
            missing = _multiappend(client, "nothere", messages)
            answers[who] = (tagged, missing.split()[:2], _contents(client, who))
    direct, through = answers["direct"], answers["through"]
    assert re.match(r"OK \[APPENDUID \d+ 1:3\]", direct[0]), direct
    assert re.match(r"OK \[APPENDUID \d+ 1:3\]", through[0]), through
    assert through[1:] == direct[1:]  # NO [TRYCREATE], and the same messages, flags, dates


@pytest.fixture(scope="module")
def limited() -> Iterator[Dovecot]:
    with Dovecot(extra_capabilities=(f"APPENDLIMIT={LIMIT}",)) as server:
        yield server


def test_appendlimit_is_announced_and_a_multiappend_over_it_stores_nothing(
    limited: Dovecot, tmp_path: Path
) -> None:
    user = f"user-{uuid.uuid4().hex[:10]}"
    limited.add_user(user, "pw")
    with Relay(limited.host, limited.port) as relay:
        proxy = ProxyProcess(f"imap+plain://{relay.host}:{relay.port}", tmp_path / "state")
        with proxy, RawClient(proxy.host, proxy.port, user, "pw") as client:
            assert f"APPENDLIMIT={LIMIT}" in client.ok("CAPABILITY")[0].split()
            big = _message(9, size=LIMIT)
            refused = _multiappend(client, "INBOX", [_message(1), _message(2), big])
            assert refused.startswith("NO [TOOBIG]"), refused
            client.ok("NOOP")  # the connection goes on, in step
            [status] = client.ok("STATUS INBOX (MESSAGES)")
            assert "MESSAGES 0" in status
            # A synchronizing literal over the limit is refused before it is sent.
            client.sock.sendall(b"s1 APPEND INBOX {%d}\r\n" % len(big))
            assert client.file.readline().startswith(b"s1 NO [TOOBIG]")
            # Offline: queued, answered with its UIDs, replayed on return.
            relay.cut()
            tagged = _multiappend(client, "INBOX", [_message(3), _message(4)])
            assert re.match(r"OK \[APPENDUID \d+ 1:2\]", tagged), tagged
            relay.resume()
            deadline = time.monotonic() + 20
            with RawClient(limited.host, limited.port, user, "pw") as direct:
                while "MESSAGES 2" not in direct.ok("STATUS INBOX (MESSAGES)")[0]:
                    assert time.monotonic() < deadline, "the queued messages never arrived"
                    client.ok("STATUS INBOX (MESSAGES)")
                    time.sleep(0.2)
                assert [row[0] for row in _contents(direct, "INBOX")] == ["m3", "m4"]
