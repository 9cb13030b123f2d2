"""A FETCH of a large range streams: records are loaded a group at a time, as a slow
client reads, and missing metadata is fetched per group; the metadata lines formatted
straight to bytes (fetch_lines.py) equal the generic serializer's."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from twisted.internet import defer
from twisted.internet.task import deferLater
from twisted.internet.testing import MemoryReactorClock

from imapproxy import protocol as p
from imapproxy.registry import AccountRegistry
from imapproxy.server import held_content
from imapproxy.server.connection import OUTPUT_HIGH_WATER, ClientConnection
from imapproxy.server.handlers import fetch as fetch_handler
from imapproxy.server.handlers import fetch_lines
from imapproxy.server.held_content import HeldContent
from imapproxy.server.session import ServerContext
from imapproxy.server.view import SelectedView
from imapproxy.store import Store, cache, mailboxes, messages
from imapproxy.store.messages import Message
from imapproxy.sync.content import Need
from imapproxy.types import UID, BlobId, UpstreamUID
from imapproxy.upstream.address import UpstreamAddress
from tests.unit.server.test_output_flow import SlowClientTransport

ENVELOPE = b'("Mon, 7 Feb 1994 21:52:25 -0800" "meeting" NIL NIL NIL NIL NIL NIL NIL "<%d@x>")'
STRUCTURE = b'("TEXT" "PLAIN" ("CHARSET" "US-ASCII") NIL NIL "7BIT" %d 3 NIL NIL NIL NIL)'


def _message(uid: int) -> Message:
    flags = [(), ("\\Seen",), ("\\Seen", "$Work"), ("\\Flagged", "\\Answered")][uid % 4]
    date = "01-Jan-2020 10:00:00 +0000" if uid % 7 else 'odd "date" \\ here'
    return Message(UID(uid), UpstreamUID(uid), flags, date, 1000 + uid, uid, BlobId(uid))


def _body(message: Message) -> bytes:
    return b"Subject: %d\r\n\r\nx\r\n" % message.uid


def _mailbox(
    tmp_path: Path, count: int, pad: int = 0, cached: bool = True, name: str = "replica"
) -> SelectedView:
    """count messages; ENVELOPEs of pad extra bytes, BODYSTRUCTURE, BODY (if cached)."""
    store = Store(tmp_path / name)
    box = store.write(lambda tx: mailboxes.create(tx, 1, "INBOX"))
    filler = b"x" * pad

    def fill(tx: Any) -> None:
        for uid in range(1, count + 1):
            messages.put(tx, 1, box.id, _message(uid))
            if cached:
                _cache(tx, uid, filler)

    store.write(fill)
    view = SelectedView(store, box, readonly=False, origin=object())
    view.recent = {UID(uid) for uid in range(1, count + 1, 5)}
    return view


def _cache(tx: Any, uid: int, filler: bytes = b"") -> None:
    blob = BlobId(uid)
    cache.put(tx, 1, blob, cache.Kind.ENVELOPE, ENVELOPE.replace(b"meeting", filler or b"m") % uid)
    cache.put(tx, 1, blob, cache.Kind.BODYSTRUCTURE, STRUCTURE % uid)
    cache.put(tx, 1, blob, cache.Kind.BODY, STRUCTURE % (uid + 1))


class Client:
    """What the FETCH handler uses of a session, on a real ClientConnection whose
    transport pauses it like TCP when the client does not read."""

    def __init__(self, tmp_path: Path, view: SelectedView, hold: bool = False) -> None:
        self.clock = MemoryReactorClock()
        registry = AccountRegistry(
            self.clock,
            Store(tmp_path / f"unused-{id(view)}"),
            UpstreamAddress.parse("imap+plain://127.0.0.1:1"),
        )
        self.connection = ClientConnection(ServerContext(self.clock, registry))
        self.transport = SlowClientTransport()
        self.connection.makeConnection(self.transport)
        self.transport.client_reads()  # the greeting
        self.selected = view
        self.modes = view.modes
        self.filled: list[int] = []  # messages per ensure_content call
        self.trims = 0
        self.held = HeldContent(self.clock, self._kept)
        self.after: list[Callable[[], None]] = []

        async def ensure_content(
            mailbox: object, wanted: list[Message], needs: Any, fresh: Any = None
        ) -> None:
            self.filled.append(len(wanted))
            bodies = any(need.kind is cache.Kind.FULL for need in needs)

            def keep(tx: Any) -> None:
                for m in wanted:
                    _cache(tx, int(m.uid))
                    if bodies:
                        cache.put(tx, 1, m.blob, cache.Kind.FULL, _body(m))

            if hold and fresh is not None:  # as the account does: served first, kept later
                await deferLater(self.clock, 0, lambda: None)  # the upstream's round trip
                body = [(m, {}, [(Need(cache.Kind.FULL), _body(m))]) for m in wanted]
                size = sum(len(data) for _, _, pieces in body for _, data in pieces)
                fresh.add(body, view.store, lambda tx: keep(tx) or size)
            else:
                view.store.write(keep)

        self.account = SimpleNamespace(
            store=view.store,
            ensure_content=ensure_content,
            status=SimpleNamespace(served=lambda count: None),
            content_read=lambda blobs: None,
            request_sync=lambda name: None,
        )

    def _kept(self) -> None:
        self.trims += 1

    def send(self, chunks: list[bytes]) -> None:
        self.connection.write_chunks(chunks)

    def after_answer(self, work: Callable[[], None]) -> None:
        self.after.append(work)

    def updates(self, allow_expunge: bool = True) -> list[bytes]:
        return []

    def start(self, command: bytes) -> defer.Deferred[Any]:
        reader = p.CommandReader()
        reader.receive_data(command + b"\r\n")
        return defer.ensureDeferred(fetch_handler.fetch(self, reader.next_event()))  # type: ignore[arg-type]

    def run(self, command: bytes) -> bytes:
        """The whole answer (without the tagged OK), the client reading as it comes."""
        done = self.start(command)
        received = b""
        while not done.called:
            received += self.transport.client_reads()
            self.clock.advance(0)
        received += self.transport.client_reads()
        result: list[Any] = []
        done.addBoth(result.append)
        assert isinstance(result[0], list), result
        return received


@pytest.fixture
def loaded(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Message records read from the store so far (a running total per read)."""
    counts: list[int] = []
    real = messages.get_many

    def counting(*args: Any) -> list[Message]:
        found = real(*args)
        counts.append((counts[-1] if counts else 0) + len(found))
        return found

    monkeypatch.setattr(messages, "get_many", counting)
    return counts


def test_a_slow_client_paces_the_loading_of_records(
    tmp_path: Path, loaded: list[int], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(fetch_handler, "FILL_GROUP", 100)
    count = 2000
    view = _mailbox(tmp_path, count, pad=2000)  # about 2.2 KB a line, 4.4 MB in all
    client = Client(tmp_path, view)
    done = client.start(b"a1 UID FETCH 1:* (FLAGS INTERNALDATE RFC822.SIZE ENVELOPE BODYSTRUCTURE)")
    for _ in range(50):
        client.clock.advance(0)
    # The client has read nothing: the answer waits at the transport's high-water
    # mark, and so does the loading of records, one group ahead at most.
    assert not done.called
    buffered = len(client.transport.value())
    assert OUTPUT_HIGH_WATER <= buffered <= OUTPUT_HIGH_WATER + 300 * 2300
    lines_out = client.transport.value().count(b" FETCH (")
    assert loaded[-1] <= lines_out + 2 * 100 < count
    received = client.transport.client_reads()
    while not done.called:
        received += client.transport.client_reads()
        client.clock.advance(0)
    received += client.transport.client_reads()
    assert received.count(b" FETCH (") == count
    assert len(loaded) >= count // 100  # one read per group
    assert max(b - a for a, b in zip([0, *loaded], loaded, strict=False)) <= 100


COMMANDS = [
    b"a1 UID FETCH 1:* (FLAGS INTERNALDATE RFC822.SIZE ENVELOPE BODYSTRUCTURE)",
    b"a1 FETCH 2:* (BODYSTRUCTURE FLAGS BODY RFC822.SIZE)",
    b"a1 FETCH 1:* (MODSEQ ENVELOPE)",
    b"a1 UID FETCH 5:* (FLAGS) (CHANGEDSINCE 40)",
    b"a1 FETCH 7,1,3:9 FAST",
]


@pytest.mark.parametrize("command", COMMANDS)
def test_lines_equal_the_generic_serializer(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, command: bytes
) -> None:
    view = _mailbox(tmp_path, 120, name="a")
    direct = Client(tmp_path, view).run(command)
    assert direct.count(b" FETCH (") >= 7
    monkeypatch.setattr(fetch_lines, "applies", lambda attributes: False)
    view = _mailbox(tmp_path, 120, name="b")
    generic = Client(tmp_path, view).run(command)
    assert direct == generic


def test_missing_metadata_is_fetched_group_by_group(
    tmp_path: Path, loaded: list[int], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(fetch_handler, "FILL_GROUP", 100)
    view = _mailbox(tmp_path, 450, cached=False)
    client = Client(tmp_path, view)
    received = client.run(b"a1 UID FETCH 1:* (FLAGS ENVELOPE BODYSTRUCTURE)")
    assert client.filled == [100, 100, 100, 100, 50]
    # Every message once, in order, each with its own ENVELOPE.
    seqs = [int(line.split()[1]) for line in received.split(b"\r\n") if b" FETCH (" in line]
    assert seqs == list(range(1, 451))
    assert b'"<450@x>"' in received


def test_missing_bodies_are_fetched_a_few_at_a_time(
    tmp_path: Path, loaded: list[int], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(fetch_handler, "FILL_GROUP", 100)
    monkeypatch.setattr(fetch_handler, "BODY_FILL_GROUP", 30)
    view = _mailbox(tmp_path, 130, cached=False)
    client = Client(tmp_path, view)
    received = client.run(b"a1 FETCH 1:* (UID BODY.PEEK[])")
    assert client.filled == [30, 30, 30, 10, 30]
    assert max(b - a for a, b in zip([0, *loaded], loaded, strict=False)) <= 100
    assert received.count(b" FETCH (") == 130
    assert b"Subject: 130\r\n" in received


def _bodies_kept(view: SelectedView, count: int) -> int:
    return view.store.read(
        lambda tx: sum(cache.has(tx, 1, BlobId(u), cache.Kind.FULL) for u in range(1, count + 1))
    )


def test_fetched_bodies_are_answered_before_they_are_kept(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The answer does not wait for the disk: what the upstream gave is held, and kept
    in one write once the session has been quiet for HOLD_QUIET after the answer."""
    monkeypatch.setattr(fetch_handler, "BODY_FILL_GROUP", 30)
    view = _mailbox(tmp_path, 70, cached=False)
    client = Client(tmp_path, view, hold=True)

    received = client.run(b"a1 FETCH 1:* (UID BODY.PEEK[])")
    assert received.count(b" FETCH (") == 70
    assert b"Subject: 70\r\n" in received
    assert _bodies_kept(view, 70) == 0
    assert len(client.after) == 1
    client.after[0]()
    assert _bodies_kept(view, 70) == 0  # not before the session is quiet
    client.clock.advance(held_content.HOLD_QUIET)
    assert _bodies_kept(view, 70) == 70
    assert client.trims == 1  # the cache limit, after what the keep added
    assert not client.held.fetched.pending


def test_held_bodies_answer_the_next_fetch_without_the_upstream(tmp_path: Path) -> None:
    """A body held from one FETCH serves the session's next FETCH of it: nothing is
    fetched again, and the answer is the same."""
    view = _mailbox(tmp_path, 5, cached=False)
    client = Client(tmp_path, view, hold=True)
    first = client.run(b"a1 FETCH 2 (BODY.PEEK[])")
    client.after.pop()()
    second = client.run(b"a2 FETCH 2 (BODY.PEEK[HEADER] BODY.PEEK[])")
    assert client.filled == [1]
    assert _bodies_kept(view, 5) == 0
    assert b"Subject: 2\r\n\r\nx\r\n" in first
    assert second.count(b"Subject: 2\r\n") == 2  # the header, derived from the held body


def test_a_long_fetch_keeps_what_it_holds_past_hold_bytes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Memory stays bounded in a FETCH of many bodies: past HOLD_BYTES, what is held is
    kept while the upstream works on the next group."""
    monkeypatch.setattr(fetch_handler, "BODY_FILL_GROUP", 30)
    monkeypatch.setattr(held_content, "HOLD_BYTES", 100)
    view = _mailbox(tmp_path, 70, cached=False)
    client = Client(tmp_path, view, hold=True)
    received = client.run(b"a1 FETCH 1:* (UID BODY.PEEK[])")
    assert received.count(b" FETCH (") == 70
    assert _bodies_kept(view, 70) == 60  # the groups sent before the last
    client.after.pop()()  # past HOLD_BYTES: at once, not when quiet
    assert _bodies_kept(view, 70) == 70
