"""What a session's FETCHes took from the upstream is held, then kept in one write: when
the session pauses, when much is held or held long, and before any other command."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
from twisted.internet import defer
from twisted.internet.testing import MemoryReactorClock

from imapproxy import protocol as p
from imapproxy.server import held_content
from imapproxy.server.held_content import HeldContent
from imapproxy.store.cache import Kind
from imapproxy.store.messages import Message
from imapproxy.sync.content import Need
from imapproxy.types import UID, BlobId, UpstreamUID
from tests.unit.server.test_after_answer import _session


def _message(uid: int) -> Message:
    return Message(UID(uid), UpstreamUID(uid), (), "01-Jan-2020 10:00:00 +0000", 10, 1, BlobId(uid))


class Writes:
    """A store that counts its write transactions (each one a disk sync)."""

    def __init__(self) -> None:
        self.count = 0

    def write(self, body: Callable[[object], int], durable: bool = True) -> int:
        assert not durable  # content the upstream can give again
        self.count += 1
        return body(object())


class Holder:
    def __init__(self) -> None:
        self.clock = MemoryReactorClock()
        self.kept: list[int] = []
        self.trims = 0
        self.store = Writes()
        self.held = HeldContent(self.clock, self._trim)

    def _trim(self) -> None:
        self.trims += 1

    def fetch(self, uid: int, size: int = 10) -> None:
        """What a FETCH that read message uid's body from the upstream leaves held."""
        content = [(_message(uid), {}, [(Need(Kind.FULL), b"x" * size)])]

        def keep(tx: object) -> int:
            self.kept.append(uid)
            return size

        self.held.fetched.add(content, self.store, keep)  # type: ignore[arg-type]


def test_kept_once_quiet_and_the_quiet_restarts_with_each_answer() -> None:
    h = Holder()
    h.fetch(1)
    h.held.answered()
    h.clock.advance(held_content.HOLD_QUIET * 0.8)
    h.fetch(2)
    h.held.answered()
    h.clock.advance(held_content.HOLD_QUIET * 0.8)
    assert h.kept == []  # a client reading one body after another is not kept waiting
    assert h.held.fetched.get(BlobId(1), Kind.FULL) == b"x" * 10
    h.clock.advance(held_content.HOLD_QUIET * 0.3)
    assert h.kept == [1, 2]
    assert h.store.count == 1  # one write transaction, one disk sync, for both
    assert h.trims == 1
    assert h.held.fetched.get(BlobId(1), Kind.FULL) is None
    assert h.held.fetched.held_bytes == 0


def test_kept_at_once_past_hold_bytes_or_hold_longest(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(held_content, "HOLD_BYTES", 25)
    h = Holder()
    h.fetch(1)
    h.held.answered()
    h.fetch(2)
    h.held.keep_if_full()
    assert h.kept == []
    h.fetch(3)
    h.held.keep_if_full()
    assert h.kept == [1, 2, 3]

    h = Holder()
    for uid in range(1, 100):
        h.fetch(uid)
        h.held.answered()
        h.clock.advance(held_content.HOLD_QUIET / 2)  # never quiet for long enough
        if h.kept:
            break
    assert h.kept  # the oldest was held HOLD_LONGEST at most
    assert len(h.kept) <= held_content.HOLD_LONGEST / (held_content.HOLD_QUIET / 2) + 1


def test_a_failing_keep_or_trim_is_logged_and_the_holder_goes_on(
    caplog: pytest.LogCaptureFixture,
) -> None:
    h = Holder()

    def broken(tx: object) -> int:
        raise OSError("disk full")

    h.held.fetched.add([(_message(1), {}, [(Need(Kind.FULL), b"x")])], h.store, broken)  # type: ignore[arg-type]
    h.fetch(2)
    h.held.on_kept = lambda: (_ for _ in ()).throw(RuntimeError("trim failed"))
    h.held.keep()
    assert h.kept == [2]
    assert "could not keep fetched content" in caplog.text
    assert "after keeping fetched content" in caplog.text
    h.fetch(3)
    h.held.answered()
    h.clock.advance(held_content.HOLD_QUIET)
    assert h.kept == [2, 3]


def test_nothing_held_keeps_nothing_and_schedules_nothing() -> None:
    h = Holder()
    h.held.answered()
    h.held.keep()
    assert h.clock.getDelayedCalls() == []
    assert h.trims == 0


def _held_in(session: object, kept: list[int]) -> None:
    content = [(_message(1), {}, [(Need(Kind.FULL), b"body")])]

    def keep(tx: object) -> int:
        kept.append(1)
        return 4

    session.held.fetched.add(content, Writes(), keep)  # type: ignore[attr-defined]


@pytest.mark.parametrize(
    ("command", "keeps"),
    [
        (b"a NOOP", True),
        (b"a UID SEARCH BODY x", True),
        (b"a FETCH 1 (BODY[])", False),
        (b"a LOGOUT", False),  # kept once the session has closed, after its answer
    ],
)
def test_a_command_other_than_fetch_keeps_first(
    tmp_path: Path, command: bytes, keeps: bool
) -> None:
    """Another command may read the cache (SEARCH of bodies, COPY) or mean the client
    paused: what is held is kept before it runs; a FETCH reads it where it is."""
    session, _ = _session(tmp_path)
    kept: list[int] = []
    _held_in(session, kept)
    reader = p.CommandReader()
    reader.receive_data(command + b"\r\n")
    defer.ensureDeferred(session.handle(reader.next_event()))
    assert kept == ([1] if keeps else [])


def test_a_closed_session_keeps_what_it_held(tmp_path: Path) -> None:
    session, _ = _session(tmp_path)
    kept: list[int] = []
    _held_in(session, kept)
    session.closed()
    assert kept == [1]
