"""Bad input and a broken upstream: the proxy answers clearly, stays usable, and never
crashes or loses its replica."""

from __future__ import annotations

import imaplib
import re
import socket
import time
from pathlib import Path

import pytest

from tests.integration.clients import TIMEOUT, imap
from tests.support.corpus import Account
from tests.support.dovecot import Dovecot
from tests.support.proxy import ProxyProcess
from tests.support.relay import Relay

READ_LIMIT = 4 * 2**20
RAW_TIMEOUT = 10


class Raw:
    """A bare socket speaking IMAP line by line, for input no client library would send."""

    def __init__(self, host: str, port: int) -> None:
        self.sock = socket.create_connection((host, port), timeout=RAW_TIMEOUT)
        self.buffer = b""
        self.greeting = self.line()
        assert self.greeting.startswith(b"* OK"), self.greeting

    def close(self) -> None:
        self.sock.close()

    def send(self, data: bytes) -> None:
        self.sock.sendall(data)

    def line(self) -> bytes:
        """The next CRLF-terminated line (without CRLF); literals are left in the stream."""
        while b"\r\n" not in self.buffer:
            assert len(self.buffer) < READ_LIMIT, "runaway response"
            chunk = self.sock.recv(65536)
            if not chunk:
                raise ConnectionError(f"proxy closed the connection; pending {self.buffer[:200]!r}")
            self.buffer += chunk
        line, self.buffer = self.buffer.split(b"\r\n", 1)
        return line

    def until_tagged(self, tag: bytes) -> tuple[list[bytes], bytes]:
        """Lines up to the tagged reply for tag, literals included raw; (untagged, tagged)."""
        lines: list[bytes] = []
        while True:
            line = self.line()
            literal = re.search(rb"\{(\d+)\}$", line)
            if literal:
                size = int(literal.group(1))
                while len(self.buffer) < size:
                    chunk = self.sock.recv(65536)
                    if not chunk:
                        raise ConnectionError("closed inside a literal")
                    self.buffer += chunk
                line += b"\r\n" + self.buffer[:size]
                self.buffer = self.buffer[size:]
                line += self.line()
            if line.startswith(tag + b" "):
                return lines, line
            lines.append(line)

    def command(self, tag: bytes, text: bytes) -> tuple[list[bytes], bytes]:
        self.send(tag + b" " + text + b"\r\n")
        return self.until_tagged(tag)

    def assert_usable(self, tag: bytes = b"ok1") -> None:
        _, tagged = self.command(tag, b"NOOP")
        assert tagged.startswith(tag + b" OK"), tagged


def _logged_in(proxy: ProxyProcess, account: Account, select: str | None = None) -> Raw:
    raw = Raw(proxy.host, proxy.port)
    _, tagged = raw.command(b"l1", f"LOGIN {account.user} {account.password}".encode())
    assert tagged.startswith(b"l1 OK"), tagged
    if select:
        _, tagged = raw.command(b"s1", f"SELECT {select}".encode())
        assert tagged.startswith(b"s1 OK"), tagged
    return raw


def _has_reason(tagged: bytes, tag: bytes, status: bytes) -> None:
    assert tagged.startswith(tag + b" " + status + b" "), tagged
    assert len(tagged) > len(tag) + len(status) + 3, f"no reason given: {tagged!r}"


@pytest.mark.parametrize(
    "line",
    [
        b"t1 FROBNICATE",
        b"t1 FETCH 0:x FLAGS",
        b"t1 FETCH 1 (FLAGS UID",
        b"t1 FETCH 1 FLAGS)",
        b"t1 STORE 1 +FLAGS (\\Seen",
        b"t1 SEARCH (OR SEEN",
        b"t1 SELECT",
        b"t1 UID FROB 1",
        b"t1 FETCH 1 BODY[1.2.",
        b"t1 STORE 1 +FLAGS (\\NotAFlag)",
        b"t1 FETCH 1 \x00\xff\xfe",
        b'"t1 NOOP',
        b"t1",
    ],
)
def test_malformed_command_gets_bad_and_connection_stays_usable(
    proxy: ProxyProcess, alice: Account, line: bytes
) -> None:
    raw = _logged_in(proxy, alice, select="INBOX")
    try:
        tag = b"t1" if line.startswith(b"t1") else b"*"
        raw.send(line + b"\r\n")
        if tag == b"*":
            reply = raw.line()
            assert reply.startswith(b"* BAD ") and len(reply) > 6, reply
        else:
            _, tagged = raw.until_tagged(tag)
            _has_reason(tagged, tag, b"BAD")
        raw.assert_usable()
    finally:
        raw.close()
    assert proxy.running


# (An empty line is ignored on purpose, as several servers do; it is not tested here.)
@pytest.mark.parametrize("line", [b"\x01\x02garbage", b"* NOOP", b"(a) NOOP", b"+ NOOP"])
def test_line_without_a_tag_gets_untagged_bad(
    proxy: ProxyProcess, alice: Account, line: bytes
) -> None:
    raw = _logged_in(proxy, alice)
    try:
        raw.send(line + b"\r\n")
        reply = raw.line()
        assert reply.startswith(b"* BAD ") and len(reply) > 6, reply
        raw.assert_usable()
    finally:
        raw.close()


def test_commands_in_the_wrong_state_get_bad(proxy: ProxyProcess, alice: Account) -> None:
    raw = Raw(proxy.host, proxy.port)
    try:
        # Not authenticated yet.
        for tag, text in (
            (b"n1", b"SELECT INBOX"),
            (b"n2", b'LIST "" *'),
            (b"n3", b"FETCH 1 FLAGS"),
        ):
            _, tagged = raw.command(tag, text)
            _has_reason(tagged, tag, b"BAD")
        raw.assert_usable(b"ok0")
        _, tagged = raw.command(b"l1", f"LOGIN {alice.user} {alice.password}".encode())
        assert tagged.startswith(b"l1 OK"), tagged
        # Authenticated, nothing selected.
        for tag, text in (
            (b"a1", b"FETCH 1 FLAGS"),
            (b"a2", b"STORE 1 +FLAGS (\\Seen)"),
            (b"a3", b"EXPUNGE"),
            (b"a4", b"CLOSE"),
            (b"a5", b"LOGIN x y"),
        ):
            _, tagged = raw.command(tag, text)
            _has_reason(tagged, tag, b"BAD")
        raw.assert_usable(b"ok1")
        _, tagged = raw.command(b"s1", b"EXAMINE INBOX")
        assert tagged.startswith(b"s1 OK"), tagged
        untagged, tagged = raw.command(b"f1", b"FETCH 1 FLAGS")
        assert tagged.startswith(b"f1 OK") and any(b"FETCH" in u for u in untagged), (
            untagged,
            tagged,
        )
    finally:
        raw.close()


def _reply_to(raw: Raw, tag: bytes) -> bytes:
    """The tagged reply for tag, or an untagged BAD standing in for it (which fails the test
    fast instead of waiting: a client would wait for its tag forever)."""
    while True:
        line = raw.line()
        if line.startswith((tag + b" ", b"* BAD")):
            return line


def test_overlong_line_gets_tagged_bad_and_connection_stays_usable(
    proxy: ProxyProcess, alice: Account
) -> None:
    raw = _logged_in(proxy, alice, select="INBOX")
    try:
        raw.send(b"big1 SEARCH SUBJECT " + b"x" * (70 * 1024) + b"\r\n")
        reply = _reply_to(raw, b"big1")
        _has_reason(reply, b"big1", b"BAD")
        raw.assert_usable()
        # Much longer than any buffer, with the next command right behind it.
        raw.send(b"big2 NOOP " + b"y" * (1024 * 1024) + b"\r\nafter NOOP\r\n")
        reply = _reply_to(raw, b"big2")
        _has_reason(reply, b"big2", b"BAD")
        _, tagged = raw.until_tagged(b"after")
        assert tagged.startswith(b"after OK"), tagged
    finally:
        raw.close()
    assert proxy.running


def test_overlong_line_never_leaves_the_connection_stuck(
    proxy: ProxyProcess, alice: Account
) -> None:
    """Whatever form the BAD takes, the next command is answered and nothing of the long
    line is taken for a command."""
    raw = _logged_in(proxy, alice, select="INBOX")
    try:
        raw.send(b"big1 NOOP " + b"a2 LOGOUT " * 10000 + b"\r\nafter NOOP\r\n")
        untagged, tagged = raw.until_tagged(b"after")
        assert tagged.startswith(b"after OK"), tagged
        assert any(b"BAD" in line for line in untagged), untagged
        assert not any(line.startswith((b"a2", b"* BYE")) for line in untagged), untagged
        raw.assert_usable()
    finally:
        raw.close()


def test_oversized_literal_gets_toobig_without_being_read(
    proxy: ProxyProcess, alice: Account
) -> None:
    raw = _logged_in(proxy, alice)
    try:
        raw.send(b"a1 APPEND INBOX {999999999}\r\n")
        reply = raw.line()
        assert not reply.startswith(b"+"), "the proxy invited a 1 GB literal"
        assert reply.startswith(b"a1 NO [TOOBIG]"), reply
        raw.assert_usable()
        # A literal inside an ordinary command, beyond the command literal limit.
        raw.send(b"a2 SELECT {10000000}\r\n")
        reply = raw.line()
        assert not reply.startswith(b"+"), reply
        assert reply.startswith((b"a2 NO [TOOBIG]", b"a2 BAD")), reply
        raw.assert_usable(b"ok2")
    finally:
        raw.close()


def test_literal_plus_append_and_pipelined_commands_answered_in_order(
    dovecot: Dovecot, proxy: ProxyProcess, fresh_user: Account
) -> None:
    message = b"From: a@example.org\r\nSubject: pipelined\r\nMessage-ID: <pipe@x>\r\n\r\nhi\r\n"
    raw = _logged_in(proxy, fresh_user)
    try:
        batch = (
            b"p1 NOOP\r\n"
            b"p2 SELECT INBOX\r\n"
            b"p3 FETCH 1:2 (FLAGS RFC822.SIZE)\r\n"
            b"p4 APPEND Sent {" + str(len(message)).encode() + b"+}\r\n" + message + b"\r\n"
            b"p5 UID SEARCH SUBJECT pipelined\r\n"
            b"p6 STATUS Sent (MESSAGES)\r\n"
            b"p7 FROB\r\n"
            b"p8 NOOP\r\n"
        )
        raw.send(batch)
        tags = []
        untagged_all: list[bytes] = []
        for expected in (b"p1", b"p2", b"p3", b"p4", b"p5", b"p6", b"p7", b"p8"):
            untagged, tagged = raw.until_tagged(expected)
            # Nothing tagged for a later command came first.
            assert not any(re.match(rb"p\d ", u) for u in untagged), untagged
            tags.append(tagged.split(b" ", 2)[:2])
            untagged_all += untagged
        assert tags == [
            [b"p1", b"OK"],
            [b"p2", b"OK"],
            [b"p3", b"OK"],
            [b"p4", b"OK"],
            [b"p5", b"OK"],
            [b"p6", b"OK"],
            [b"p7", b"BAD"],
            [b"p8", b"OK"],
        ], tags
        assert sum(1 for u in untagged_all if re.match(rb"\* [12] FETCH", u)) == 2
        status = next(u for u in untagged_all if u.startswith(b"* STATUS"))
        assert b"(MESSAGES 5)" in status, status
    finally:
        raw.close()
    with imap(dovecot.host, dovecot.port, fresh_user) as direct:
        direct.select_folder("Sent", readonly=True)
        assert len(direct.search(["SUBJECT", "pipelined"])) == 1


# -- a broken upstream link ----------------------------------------------------------------


def _no_crash(proxy: ProxyProcess) -> None:
    assert proxy.running, proxy.log_tail()
    log = proxy.log_text()
    assert "Traceback" not in log and "unhandled error" not in log, log


def test_upstream_cut_while_selected_serves_cache_then_recovers(
    dovecot: Dovecot, proxy: ProxyProcess, alice: Account
) -> None:
    relay = proxy.relay
    assert relay is not None
    client = imaplib.IMAP4(proxy.host, proxy.port, timeout=TIMEOUT)
    try:
        client.login(alice.user, alice.password)
        typ, data = client.select("INBOX", readonly=True)
        assert typ == "OK"
        typ, cached = client.fetch("1:5", "(BODY.PEEK[] ENVELOPE)")
        assert typ == "OK"

        relay.cut()
        typ, again = client.fetch("1:5", "(BODY.PEEK[] ENVELOPE)")
        assert typ == "OK", again
        assert again == cached
        typ, data = client.fetch("40", "(BODY.PEEK[])")
        assert typ == "NO", data
        assert data[0].startswith(b"[UNAVAILABLE]"), data
        typ, _ = client.noop()
        assert typ == "OK"
        typ, data = client.search(None, "ALL")
        assert typ == "OK" and len(data[0].split()) == len(alice.mailboxes["INBOX"])
        _no_crash(proxy)

        relay.resume()
        deadline = time.monotonic() + 10
        while True:
            typ, data = client.fetch("40", "(BODY.PEEK[])")
            if typ == "OK" or time.monotonic() > deadline:
                break
            time.sleep(0.2)
        assert typ == "OK", data
        body = data[0][1]
    finally:
        client.logout()
    with imap(dovecot.host, dovecot.port, alice) as direct:
        direct.select_folder("INBOX", readonly=True)
        direct.use_uid = False
        assert direct.fetch([40], ["BODY.PEEK[]"])[40][b"BODY[]"] == body
    _no_crash(proxy)


def test_replica_is_intact_after_the_link_is_cut_mid_session(
    dovecot: Dovecot, fresh_user: Account, tmp_path: Path
) -> None:
    """Cut the link mid-FETCH, stop, restart on the same state directory (and the same
    upstream address, which names the account) with the link still down: the replica
    alone must answer with what the first run had."""
    state = tmp_path / "shared-state"
    with Relay(dovecot.host, dovecot.port) as relay:
        upstream = f"imap+plain://{dovecot.host}:{relay.port}"
        first = ProxyProcess(upstream, state).start()
        try:
            counts = {}
            with imap(first.host, first.port, fresh_user) as client:
                for mailbox in ("INBOX", "Archive/2024", "Sent"):
                    counts[mailbox] = client.select_folder(mailbox, readonly=True)[b"EXISTS"]
                client.select_folder("INBOX")
                client.use_uid = False
                bodies = client.fetch(list(range(1, 11)), ["BODY.PEEK[]"])
                client.add_flags([3], [b"\\Flagged"])

            raw = _logged_in(first, fresh_user, select="INBOX")
            try:
                # Cut while a large fetch of uncached bodies needs the upstream.
                raw.send(b"x1 FETCH 11:* (BODY.PEEK[])\r\n")
                relay.cut()
                _, tagged = raw.until_tagged(b"x1")
                assert tagged.startswith((b"x1 OK", b"x1 NO [UNAVAILABLE]")), tagged
                raw.assert_usable()
            finally:
                raw.close()
            _no_crash(first)
        finally:
            assert first.stop() == 0

        second = ProxyProcess(upstream, state).start()
        try:
            with imap(second.host, second.port, fresh_user) as client:
                for mailbox, count in counts.items():
                    assert client.select_folder(mailbox, readonly=True)[b"EXISTS"] == count, mailbox
                client.select_folder("INBOX", readonly=True)
                client.use_uid = False
                again = client.fetch(list(range(1, 11)), ["BODY.PEEK[]", "FLAGS"])
                assert {k: v[b"BODY[]"] for k, v in again.items()} == {
                    k: v[b"BODY[]"] for k, v in bodies.items()
                }
                assert b"\\Flagged" in again[3][b"FLAGS"]
            _no_crash(second)

            # Back online, the same replica agrees with the upstream.
            relay.resume()
            with imap(second.host, second.port, fresh_user) as client:
                for mailbox, count in counts.items():
                    assert client.select_folder(mailbox, readonly=True)[b"EXISTS"] == count, mailbox
        finally:
            second.stop()
