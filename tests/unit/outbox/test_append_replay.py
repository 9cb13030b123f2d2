"""Replaying an APPEND whose first attempt may have landed: find it, don't duplicate it."""

from __future__ import annotations

from typing import Any

from twisted.internet import defer

from imapproxy.outbox.operations import AppendMessage
from imapproxy.protocol import Atom, SearchKey, SequenceSet
from imapproxy.upstream.client import SelectInfo

MESSAGE = b"From: a@example.org\r\nMessage-ID: <once@example.org>\r\nSubject: s\r\n\r\nbody\r\n"


class FakeUpstream:
    """Records what the operation asks; the mailbox holds `existing` upstream UIDs."""

    def __init__(self, existing: dict[int, int]) -> None:
        self.existing = existing  # upstream uid -> size of a message with our Message-ID
        self.appended: list[bytes] = []
        self.searches: list[SearchKey] = []

    async def select(self, name: str, readonly: bool = True) -> SelectInfo:
        return SelectInfo(777, 100, len(self.existing), None, (), None)

    async def ensure_selected(self, name: str, writable: bool = False) -> None:
        return None

    async def search(self, criteria: SearchKey, charset: str | None = None) -> set[int]:
        self.searches.append(criteria)
        return set(self.existing)

    async def fetch(self, uids: SequenceSet, attributes: Any) -> list[dict[str, Any]]:
        [(uid, _)] = uids.ranges
        size = self.existing.get(uid, len(MESSAGE))
        return [
            {
                "UID": uid,
                "FLAGS": (Atom("\\Seen"),),
                "INTERNALDATE": b"01-Jan-2024 10:00:00 +0000",
                "RFC822.SIZE": size,
            }
        ]

    async def append(self, mailbox: str, flags: Any, date: Any, message: bytes) -> tuple[int, int]:
        self.appended.append(message)
        return 777, 42


def _send(args: dict[str, Any], upstream: FakeUpstream) -> Any:
    operation = AppendMessage(
        {
            "mailbox": 1,
            "name": "Drafts",
            "flags": [],
            "date": None,
            "size": len(MESSAGE),
            "blob": 1,
            **args,
        }
    )
    operation.message = MESSAGE
    d = defer.ensureDeferred(operation.send(upstream))  # type: ignore[arg-type]
    assert d.called
    return d.result


def test_first_attempt_appends_without_searching() -> None:
    upstream = FakeUpstream({5: len(MESSAGE)})
    validity, uid, _ = _send({}, upstream)
    assert (validity, uid) == (777, 42)
    assert upstream.appended == [MESSAGE] and upstream.searches == []


def test_in_doubt_attempt_that_landed_is_found_not_repeated() -> None:
    upstream = FakeUpstream({5: len(MESSAGE)})
    validity, uid, stored = _send({"in_doubt": True}, upstream)
    assert (validity, uid) == (777, 5)
    assert upstream.appended == []
    assert upstream.searches[0].args[0] == SearchKey(
        "HEADER", (b"Message-ID", b"<once@example.org>")
    )
    assert stored["RFC822.SIZE"] == len(MESSAGE)


def test_in_doubt_attempt_that_did_not_land_is_sent_again() -> None:
    assert _send({"in_doubt": True}, FakeUpstream({}))[1] == 42


def test_ambiguous_or_different_matches_are_not_taken() -> None:
    assert _send({"in_doubt": True}, FakeUpstream({5: len(MESSAGE), 6: len(MESSAGE)}))[1] == 42
    assert _send({"in_doubt": True}, FakeUpstream({5: len(MESSAGE) + 1}))[1] == 42


class FakeMoveUpstream:
    """A source mailbox still holding `present` of the upstream UIDs a MOVE named."""

    def __init__(self, present: set[int]) -> None:
        self.present = present
        self.moved: list[str] = []

    def has(self, capability: str) -> bool:
        return True

    async def ensure_selected(self, name: str, writable: bool = False) -> None:
        return None

    async def search_uids(self, uids: SequenceSet) -> set[int]:
        return self.present & set(uids.resolve(0))

    async def copy(self, uids: SequenceSet, target: str, move: bool = False) -> Any:
        self.moved.append(str(uids))
        return (9, sorted(uids.resolve(0)), [100 + u for u in sorted(uids.resolve(0))])


def _move(in_doubt: bool, upstream: FakeMoveUpstream) -> Any:
    from imapproxy.outbox.operations import CopyMessages

    args = {
        "source": 1,
        "source_name": "INBOX",
        "target": 2,
        "target_name": "Archive",
        "pairs": [[1, 11], [2, 12], [3, 13]],
        "move": True,
    }
    if in_doubt:
        args["in_doubt"] = True
    d = defer.ensureDeferred(CopyMessages(args).send(upstream))  # type: ignore[arg-type]
    assert d.called
    return d.result


def test_in_doubt_move_that_happened_is_not_repeated() -> None:
    upstream = FakeMoveUpstream(set())
    assert _move(True, upstream) is None
    assert upstream.moved == []


def test_in_doubt_move_moves_only_what_is_still_there() -> None:
    upstream = FakeMoveUpstream({13})
    _move(True, upstream)
    assert upstream.moved == ["13"]


def test_first_move_attempt_moves_everything() -> None:
    upstream = FakeMoveUpstream({11, 12, 13})
    _move(False, upstream)
    assert upstream.moved == ["11:13"]
