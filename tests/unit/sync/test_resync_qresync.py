"""sync_messages with QRESYNC against a scripted upstream: the EXAMINE's VANISHED and
FETCH responses are the resync (no UID SEARCH, no flag FETCH); the parameter names
the synced UID range and sequence match data; and where the count says the replica
and the upstream disagree beyond what VANISHED explains, one UID SEARCH settles it."""

from __future__ import annotations

from typing import Any

import pytest

from imapproxy.protocol import Atom, SequenceSet
from imapproxy.store import Store, mailboxes, messages
from imapproxy.sync import mailboxes as sync
from imapproxy.sync import qresync
from imapproxy.upstream.client import SelectInfo
from tests.unit.sync.conftest import run_now


class Upstream:
    """Enough of UpstreamClient for sync_messages over one mailbox, with QRESYNC."""

    def __init__(self, flags: dict[int, tuple[str, ...]]) -> None:
        self.flags = dict(flags)
        self.modseq = 10
        #: uid -> modseq of its last change, and of each expunge.
        self.changed_at: dict[int, int] = dict.fromkeys(flags, 1)
        self.expunged_at: dict[int, int] = {}
        self.keywords_allowed: dict[str, bool] = {}
        self.qresync = True
        self.sequence_match = False
        #: Names every UID in the known range that is not there (an upstream that no
        #: longer remembers when expunges happened), not only those since the modseq.
        self.forgetful = False
        self.calls: list[str] = []
        self.parameters: list[Any] = []

    # changes made "elsewhere"
    def set_flags(self, uid: int, *flags: str) -> None:
        self.modseq += 1
        self.flags[uid], self.changed_at[uid] = flags, self.modseq

    def expunge(self, uid: int) -> None:
        self.modseq += 1
        del self.flags[uid]
        self.expunged_at[uid] = self.modseq

    def add(self, uid: int) -> None:
        self.modseq += 1
        self.flags[uid], self.changed_at[uid] = (), self.modseq

    def _item(self, uid: int) -> dict[str, Any]:
        return {
            "UID": uid,
            "FLAGS": tuple(Atom(f) for f in self.flags[uid]),
            "INTERNALDATE": b"01-Jan-2026 00:00:00 +0000",
            "RFC822.SIZE": 100 + uid,
        }

    def has(self, capability: str) -> bool:
        return False

    async def select(
        self, name: str, readonly: bool = True, qresync: Any = None, first: Any = None
    ) -> SelectInfo:
        self.calls.append("select")
        self.parameters.append(qresync)
        uidnext = max([*self.flags, *self.expunged_at]) + 1
        base = SelectInfo(777, uidnext, len(self.flags), self.modseq, (), None)
        if qresync is None or not self.qresync:
            return base
        _, since, known, _ = qresync
        ((low, high),) = known.ranges
        vanished = tuple(
            (u, u) for u, at in sorted(self.expunged_at.items()) if at > since and low <= u <= high
        )
        if self.forgetful:
            vanished = tuple((u, u) for u in range(low, high + 1) if u not in self.flags)
        changed = tuple(
            self._item(u) for u in sorted(self.flags) if self.changed_at[u] > since and u <= high
        )
        return SelectInfo(
            777, uidnext, len(self.flags), self.modseq, (), None, True, vanished, changed
        )

    async def fetch(
        self, uids: SequenceSet, attributes: Any, **kwargs: Any
    ) -> list[dict[str, Any]]:
        self.calls.append("fetch" + (" changedsince" if kwargs.get("changedsince") else ""))
        ((low, high),) = uids.ranges  # type: ignore[attr-defined]
        top = max(self.flags)
        chosen = [u for u in sorted(self.flags) if u >= low and (high is None or u <= high)]
        return [self._item(uid) for uid in (chosen or [top])]

    async def search_uids(self, uids: SequenceSet) -> set[int]:
        self.calls.append("search")
        return set(self.flags)


def _state(store: Store, box: Any) -> dict[int, frozenset[str]]:
    listed = store.read(lambda tx: list(messages.iterate(tx, box.account, box.id)))
    return {int(m.upstream_uid): frozenset(m.flags) for m in listed}


def _sync(store: Store, box: Any, upstream: Upstream) -> Any:
    current = store.read(lambda tx: mailboxes.get(tx, box.account, box.id))
    synced, change = run_now(sync.sync_messages(upstream, store, current))  # type: ignore[arg-type]
    return synced, change


def _expected(upstream: Upstream) -> dict[int, frozenset[str]]:
    return {uid: frozenset(flags) for uid, flags in upstream.flags.items()}


def test_the_examine_alone_brings_flag_changes_and_expunges(replica: Any) -> None:
    store, box = replica
    upstream = Upstream(dict.fromkeys(range(1, 101), ("\\Seen",)))
    _sync(store, box, upstream)
    assert upstream.parameters == [None]  # nothing known yet: a plain first sync
    for uid in (1, 50, 51, 77, 100):
        upstream.expunge(uid)
    upstream.set_flags(2, "\\Flagged")
    upstream.set_flags(60)
    upstream.add(101)
    upstream.calls.clear()
    _, change = _sync(store, box, upstream)
    assert _state(store, box) == _expected(upstream)
    # One EXAMINE, and one UID FETCH for the new message: no SEARCH, no flag listing.
    assert upstream.calls == ["select", "fetch"]
    assert len(change.expunged) == 5 and len(change.flags) == 2 and change.added
    validity, modseq, known, match = upstream.parameters[-1]
    assert (validity, modseq, str(known)) == (777, 10, "1:100")
    assert match is None  # an upstream that remembers its expunges: it would not pay
    # The next resync starts from the modseq this one kept.
    upstream.calls.clear()
    _sync(store, box, upstream)
    assert upstream.parameters[-1][1] == upstream.modseq
    assert upstream.calls == ["select"]


def test_sequence_match_data_once_the_upstream_forgets_old_expunges(replica: Any) -> None:
    """RFC 7162 §3.2.5.2: an upstream that no longer knows when expunges happened names
    every gap in the known range; sequence match data then bounds what it names."""
    store, box = replica
    upstream = Upstream(dict.fromkeys(range(201, 401), ()))  # 1..200: long gone
    _sync(store, box, upstream)
    upstream.forgetful = True
    upstream.expunge(300)
    _sync(store, box, upstream)
    assert _state(store, box) == _expected(upstream)
    assert upstream.parameters[-1][3] is None and upstream.sequence_match
    _sync(store, box, upstream)
    _, _, known, match = upstream.parameters[-1]
    assert str(known) == "1:400"
    # Message numbers back from the end by powers of two, and the UIDs held there.
    assert str(match[0]) == "72,136,168,184,192,196,198:199"
    assert str(match[1]) == "272,337,369,385,393,397,399:400"


def test_a_disagreement_beyond_vanished_is_settled_by_one_search(replica: Any) -> None:
    """A message the replica lost without the upstream expunging it (an expunge the
    upstream never carried out) is in no VANISHED: the count shows it, and the UID
    SEARCH of the CONDSTORE path brings it back."""
    store, box = replica
    upstream = Upstream(dict.fromkeys(range(1, 11), ()))
    _sync(store, box, upstream)

    def drop(tx: Any) -> None:
        message = next(m for m in messages.iterate(tx, box.account, box.id) if m.upstream_uid == 4)
        messages.remove(tx, box.account, box.id, message)

    store.write(drop)
    upstream.expunge(7)
    upstream.calls.clear()
    _sync(store, box, upstream)
    assert "search" in upstream.calls
    assert _state(store, box) == _expected(upstream)


def test_an_upstream_that_did_not_take_the_parameter_gets_the_condstore_path(
    replica: Any,
) -> None:
    store, box = replica
    upstream = Upstream(dict.fromkeys(range(1, 11), ()))
    _sync(store, box, upstream)
    upstream.qresync = False  # e.g. its ENABLE was refused after all
    upstream.expunge(3)
    upstream.set_flags(5, "\\Answered")
    upstream.calls.clear()
    _sync(store, box, upstream)
    assert upstream.calls == ["select", "fetch changedsince", "search"]
    assert _state(store, box) == _expected(upstream)


@pytest.mark.parametrize(
    ("count", "sample"),
    [(1, [1]), (2, [1, 2]), (5, [2, 4, 5]), (64, [1, 33, 49, 57, 61, 63, 64])],
)
def test_sequence_sample(count: int, sample: list[int]) -> None:
    assert qresync.sequence_sample(count) == sample


def test_few_messages_go_without_sequence_match_data(replica: Any) -> None:
    store, box = replica
    upstream = Upstream(dict.fromkeys(range(1, qresync.SEQUENCE_MATCH_MIN), ()))
    upstream.sequence_match = True
    _sync(store, box, upstream)
    _sync(store, box, upstream)
    assert upstream.parameters[-1][3] is None
