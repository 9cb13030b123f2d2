"""A first sync of a large mailbox fetches and stores its message list in batches by
message number, ends with every message in upstream order, and a sync stopped between
batches leaves a replica the next sync completes."""

from __future__ import annotations

from typing import Any

import pytest
from twisted.internet import defer

from imapproxy.protocol import Atom, SequenceSet
from imapproxy.store import Store, mailboxes, messages
from imapproxy.sync import mailboxes as sync
from imapproxy.upstream.client import SelectInfo
from tests.unit.sync.conftest import run_now


class Upstream:
    """Enough of UpstreamClient for sync_messages, over one CONDSTORE mailbox."""

    def __init__(self, uids: list[int], recent: frozenset[int] = frozenset()) -> None:
        self.uids = uids
        self.recent = recent
        self.fetches: list[tuple[str, bool]] = []
        self.keywords_allowed: dict[str, bool] = {}
        #: fetch_each: the link goes after this many messages; these are not sent.
        self.lost_after: int | None = None
        self.delivered = 0
        self.skipped: set[int] = set()
        self.highestmodseq = 50
        self.qresync = False
        self.examines = 0
        #: The SelectInfo still_selected answers True for (the connection's selection).
        self.selection: SelectInfo | None = None

    def has(self, capability: str) -> bool:
        return False

    async def select(
        self, name: str, readonly: bool = True, qresync: Any = None, first: Any = None
    ) -> SelectInfo:
        self.examines += 1
        pipelined = None
        if first is not None:  # the UID FETCH behind the EXAMINE, as Dovecot answers it
            ((low, high),) = first[0].ranges
            self.fetches.append((f"with EXAMINE {low}:{high}", False))
            pipelined = tuple(self._item(u) for u in self.uids if low <= u <= high)
        return SelectInfo(
            777, max(self.uids) + 1, len(self.uids), self.highestmodseq, (), None, first=pipelined
        )

    def still_selected(self, info: SelectInfo) -> bool:
        return info is self.selection

    def _item(self, uid: int) -> dict[str, Any]:
        flags = (Atom("\\Recent"),) if uid in self.recent else (Atom("\\Seen"),)
        return {
            "UID": uid,
            "FLAGS": flags,
            "INTERNALDATE": b"01-Jan-2026 00:00:00 +0000",
            "RFC822.SIZE": uid,
        }

    async def fetch(
        self, numbers: SequenceSet, attributes: Any, by_sequence: bool = False, **_: Any
    ) -> list[dict[str, Any]]:
        self.fetches.append((str(numbers), by_sequence))
        ((low, high),) = numbers.ranges  # type: ignore[attr-defined]
        if by_sequence:
            return [self._item(uid) for uid in self.uids[low - 1 : high]]
        top = max(self.uids)
        chosen = [u for u in self.uids if u >= low and (high is None or u <= high)]
        return [self._item(uid) for uid in (chosen or [top])]

    async def search_uids(self, uids: SequenceSet) -> set[int]:
        return set(self.uids)

    async def fetch_each(
        self, numbers: SequenceSet, attributes: Any, each: Any, by_sequence: bool = False
    ) -> None:
        self.fetches.append((str(numbers), by_sequence))
        ((low, high),) = numbers.ranges  # type: ignore[attr-defined]
        for uid in self.uids[low - 1 : high]:
            if self.lost_after is not None and self.delivered == self.lost_after:
                raise ConnectionError("link lost")
            self.delivered += 1
            if uid not in self.skipped:
                each(self._item(uid))
        self.fetches.append((f"{numbers} answered", by_sequence))


def _upstream_uids(store: Store, box: Any) -> list[int]:
    listed = store.read(lambda tx: list(messages.iterate(tx, box.account, box.id)))
    return [int(m.upstream_uid) for m in sorted(listed, key=lambda m: m.uid)]


def test_a_large_first_sync_goes_in_batches_and_keeps_upstream_order(
    replica: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    store, box = replica
    monkeypatch.setattr(sync, "FIRST_SYNC_BATCH", 4)
    monkeypatch.setattr(sync, "PIPELINED_FIRST_UIDS", 5)
    uids = [3, 5, 6, 9, 10, 20, 21, 22, 40, 41]
    upstream = Upstream(uids, recent=frozenset({40, 41}))
    synced, change = run_now(sync.sync_messages(upstream, store, box))  # type: ignore[arg-type]
    # UIDs 3 and 5 came with the EXAMINE: they are messages 1 and 2; the rest streams
    # from message 3 in one FETCH. Every message the EXAMINE counted came: nothing is
    # asked for above them.
    assert upstream.fetches == [
        ("with EXAMINE 1:5", False),
        ("3:10", True),
        ("3:10 answered", True),
    ]
    assert _upstream_uids(store, box) == uids
    assert change.added
    assert synced.upstream_last_uid == 41 and synced.upstream_uidnext == 42
    # \Recent: exactly the messages the upstream still calls recent (local UIDs 9, 10).
    assert synced.first_recent_uid == 9


def test_batches_that_came_short_are_completed_above_the_last_uid(
    replica: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A batch that lacks a message the EXAMINE counted (gone meanwhile, or an upstream
    that skipped it): the sync asks for everything above the last UID it got."""
    store, box = replica
    monkeypatch.setattr(sync, "FIRST_SYNC_BATCH", 4)
    monkeypatch.setattr(sync, "PIPELINED_FIRST_UIDS", 2)
    upstream = Upstream(list(range(1, 11)))
    upstream.skipped = {8}
    run_now(sync.sync_messages(upstream, store, box))  # type: ignore[arg-type]
    asked = [f for f, _ in upstream.fetches if not f.endswith("answered")]
    # ...and, since the count still disagrees, for the one the upstream says it has.
    assert asked == ["with EXAMINE 1:2", "3:10", "11:*", "8"]


def test_a_sync_stopped_between_batches_is_completed_by_the_next(
    replica: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    store, box = replica
    monkeypatch.setattr(sync, "FIRST_SYNC_BATCH", 4)
    monkeypatch.setattr(sync, "PIPELINED_FIRST_UIDS", 2)
    uids = list(range(1, 11))
    upstream = Upstream(uids)
    upstream.lost_after = 5  # messages 3 to 7 came, then the link went
    with pytest.raises(ConnectionError):
        run_now(sync.sync_messages(upstream, store, box))  # type: ignore[arg-type]
    # A whole batch (1 to 4) was stored as it came; what came after it is kept too.
    assert _upstream_uids(store, box) == [1, 2, 3, 4, 5, 6, 7]
    upstream.lost_after = None
    current = store.read(lambda tx: mailboxes.get(tx, box.account, box.id))
    run_now(sync.sync_messages(upstream, store, current))  # type: ignore[arg-type]
    assert _upstream_uids(store, box) == uids


def test_a_batch_that_cannot_be_stored_fails_the_sync_once_the_fetch_is_answered(
    replica: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A store error while the answer streams in (a full disk): nothing after it is
    stored, the FETCH is read to its end (the link stays usable), then the sync fails."""
    store, box = replica
    monkeypatch.setattr(sync, "FIRST_SYNC_BATCH", 4)
    monkeypatch.setattr(sync, "PIPELINED_FIRST_UIDS", 2)
    upstream = Upstream(list(range(1, 13)))
    store_batch = sync._store_batch
    calls: list[int] = []

    def failing(store: Store, mailbox: Any, batch: Any) -> Any:
        calls.append(len(batch.new))
        if len(calls) == 2:
            raise OSError("disk full")
        return store_batch(store, mailbox, batch)

    monkeypatch.setattr(sync, "_store_batch", failing)
    with pytest.raises(OSError, match="disk full"):
        run_now(sync.sync_messages(upstream, store, box))  # type: ignore[arg-type]
    assert calls == [4, 4]
    assert ("3:12 answered", True) in upstream.fetches
    assert _upstream_uids(store, box) == [1, 2, 3, 4]


def test_a_small_first_sync_goes_with_its_examine(replica: Any) -> None:
    """A folder the replica never had: its message list is asked for in the same write
    as its EXAMINE (one round trip where a client's STATUS costs one too)."""
    store, box = replica
    upstream = Upstream([1, 2, 3])
    run_now(sync.sync_messages(upstream, store, box))  # type: ignore[arg-type]
    assert upstream.fetches == [("with EXAMINE 1:1000", False)]
    assert _upstream_uids(store, box) == [1, 2, 3]


def test_messages_above_the_pipelined_uids_are_fetched_after(
    replica: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    store, box = replica
    monkeypatch.setattr(sync, "PIPELINED_FIRST_UIDS", 3)
    upstream = Upstream([1, 2, 3, 7, 8])
    run_now(sync.sync_messages(upstream, store, box))  # type: ignore[arg-type]
    assert upstream.fetches == [("with EXAMINE 1:3", False), ("4:*", False)]
    assert _upstream_uids(store, box) == [1, 2, 3, 7, 8]


def test_a_change_made_while_the_sync_waited_for_the_link_keeps_its_flags(
    replica: Any,
) -> None:
    """The race the load test found: the caller checked that nothing queued touched
    the mailbox, then waited for the link; meanwhile a client set \\Deleted (applied to
    the replica, queued). The upstream's flags are older: they must not overwrite it,
    or the client's EXPUNGE that follows finds nothing to expunge."""
    store, box = replica
    upstream = Upstream([1, 2, 3])
    run_now(sync.sync_messages(upstream, store, box))  # type: ignore[arg-type]
    current = store.read(lambda tx: mailboxes.get(tx, box.account, box.id))
    clear_at = current.highestmodseq  # the caller's "nothing queued" moment

    def client_store(tx: Any) -> None:  # as the outbox applies a STORE locally
        mailbox = mailboxes.get(tx, box.account, box.id)
        message = messages.get(tx, box.account, box.id, 1)
        mailbox, modseq = mailboxes.next_modseq(tx, mailbox)
        messages.put(
            tx, box.account, box.id, message.with_(flags=("\\Seen", "\\Deleted"), modseq=modseq)
        )
        mailboxes.put(tx, mailbox)

    store.write(client_store)
    upstream.highestmodseq = 51  # something changed upstream: flags are fetched
    current = store.read(lambda tx: mailboxes.get(tx, box.account, box.id))
    run_now(sync.sync_messages(upstream, store, current, changed_after=clear_at))  # type: ignore[arg-type]
    kept = store.read(lambda tx: messages.get(tx, box.account, box.id, 1))
    assert "\\Deleted" in kept.flags
    # Unchanged messages still take the upstream's flags.
    other = store.read(lambda tx: messages.get(tx, box.account, box.id, 2))
    assert other.flags == ("\\Seen",)


def test_a_message_expunged_here_while_the_sync_waited_does_not_come_back(
    replica: Any,
) -> None:
    """The same race for an EXPUNGE: a client expunged a message (applied to the replica,
    queued) while the sync waited for the link. The upstream still has it, and the
    replica lacks it: it must not be brought back as a new message (test_condstore saw
    it as two UIDs that appeared and vanished again once the EXPUNGE was replayed)."""
    store, box = replica
    upstream = Upstream([1, 2, 3])
    run_now(sync.sync_messages(upstream, store, box))  # type: ignore[arg-type]
    current = store.read(lambda tx: mailboxes.get(tx, box.account, box.id))
    clear_at = current.highestmodseq

    def client_expunge(tx: Any) -> None:  # as the outbox applies an EXPUNGE locally
        mailbox = mailboxes.get(tx, box.account, box.id)
        message = messages.get(tx, box.account, box.id, 2)
        messages.remove(tx, box.account, box.id, message)
        mailbox, modseq = mailboxes.next_modseq(tx, mailbox)
        mailboxes.log_change(tx, mailbox, modseq, {"uid": 2, "what": "expunge"})
        mailboxes.put(tx, mailbox)

    store.write(client_expunge)
    upstream.highestmodseq = 51
    current = store.read(lambda tx: mailboxes.get(tx, box.account, box.id))
    run_now(sync.sync_messages(upstream, store, current, changed_after=clear_at))  # type: ignore[arg-type]
    assert _upstream_uids(store, box) == [1, 3]
    # Once nothing local is in flight, a message the replica lacks does come back.
    current = store.read(lambda tx: mailboxes.get(tx, box.account, box.id))
    run_now(sync.sync_messages(upstream, store, current))  # type: ignore[arg-type]
    assert sorted(_upstream_uids(store, box)) == [1, 2, 3]


def _look(upstream: Upstream, upto: int) -> sync.FirstLook:
    """What sync_new_mailboxes kept of a mailbox examined with another's first sync."""
    items = tuple(upstream._item(u) for u in upstream.uids if u <= upto)
    info = SelectInfo(
        777,
        max(upstream.uids) + 1,
        len(upstream.uids),
        upstream.highestmodseq,
        (),
        None,
        first=items,
    )
    return sync.FirstLook(info, upto)


def test_a_first_sync_goes_on_from_an_unchanged_look(replica: Any) -> None:
    store, box = replica
    upstream = Upstream(list(range(1, 11)))
    look = _look(upstream, 4)
    run_now(sync.sync_messages(upstream, store, box, look=look))  # type: ignore[arg-type]
    # No FETCH behind the EXAMINE: the look's first part stands, the rest is fetched.
    assert upstream.fetches == [("5:*", False)]
    assert _upstream_uids(store, box) == list(range(1, 11))


def test_a_look_still_selected_goes_on_without_a_second_examine(replica: Any) -> None:
    """The last mailbox a look examined stays selected: with nothing run since, its
    EXAMINE's answer is the state, and the rest is fetched by number from there."""
    store, box = replica
    upstream = Upstream(list(range(1, 3001)))
    look = _look(upstream, 1000)
    upstream.selection = look.info
    run_now(sync.sync_messages(upstream, store, box, look=look))  # type: ignore[arg-type]
    assert upstream.examines == 0
    assert upstream.fetches == [("1001:3000", True), ("1001:3000 answered", True)]
    assert _upstream_uids(store, box) == list(range(1, 3001))


def test_a_look_no_longer_selected_is_examined_again(replica: Any) -> None:
    store, box = replica
    upstream = Upstream(list(range(1, 3001)))
    look = _look(upstream, 1000)
    upstream.selection = _look(upstream, 1000).info  # an EXAMINE since, equal but not it
    run_now(sync.sync_messages(upstream, store, box, look=look))  # type: ignore[arg-type]
    assert upstream.examines == 1
    assert _upstream_uids(store, box) == list(range(1, 3001))


def test_a_look_at_a_mailbox_that_changed_since_is_not_used(replica: Any) -> None:
    store, box = replica
    upstream = Upstream(list(range(1, 11)))
    look = _look(upstream, 4)
    upstream.uids = [2, 3, 4, 5, 6, 7, 8, 9, 10, 11]  # 1 expunged, 11 arrived meanwhile
    upstream.highestmodseq += 2
    run_now(sync.sync_messages(upstream, store, box, look=look))  # type: ignore[arg-type]
    assert upstream.fetches == [("1:*", False)]
    assert _upstream_uids(store, box) == list(range(2, 12))


def test_batches_are_stored_as_the_answer_streams_in(
    replica: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The message list comes in one FETCH (FIRST_SYNC_COMMAND messages at most) and is
    stored a batch at a time while it arrives: no batch waits for the whole answer or
    costs a round trip, and what is held stays one batch."""
    store, box = replica
    monkeypatch.setattr(sync, "FIRST_SYNC_BATCH", 4)
    monkeypatch.setattr(sync, "FIRST_SYNC_COMMAND", 6)
    monkeypatch.setattr(sync, "PIPELINED_FIRST_UIDS", 2)
    upstream = Upstream(list(range(1, 13)))
    store_batch = sync._store_batch

    def noted(store: Store, mailbox: Any, batch: Any) -> Any:
        upstream.fetches.append((f"store {len(batch.new)}", False))
        return store_batch(store, mailbox, batch)

    monkeypatch.setattr(sync, "_store_batch", noted)
    run_now(sync.sync_messages(upstream, store, box))  # type: ignore[arg-type]
    assert [f for f, _ in upstream.fetches] == [
        "with EXAMINE 1:2",
        "3:8",
        "store 4",  # the two with the EXAMINE and messages 3 and 4, while 5 to 8 come
        "store 4",
        "3:8 answered",
        "9:12",
        "store 4",
        "9:12 answered",
    ]
    assert _upstream_uids(store, box) == list(range(1, 13))


def _answered_later(upstream: Upstream, monkeypatch: pytest.MonkeyPatch) -> defer.Deferred[None]:
    """Make upstream's fetch_each note its command as sent, then deliver only once the
    returned Deferred fires: the FETCH on its way, as on a real link."""
    answer: defer.Deferred[None] = defer.Deferred()
    deliver = upstream.fetch_each

    async def later(*args: Any, **kwargs: Any) -> None:
        upstream.fetches.append(("sent", False))
        await answer
        await deliver(*args, **kwargs)

    monkeypatch.setattr(upstream, "fetch_each", later)
    return answer


def test_the_looks_messages_are_stored_while_the_rest_is_on_its_way(
    replica: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A first sync is bound by the proxy's CPU: the messages that came with the look
    are stored in the round trip the FETCH of the rest takes, not after it."""
    store, box = replica
    upstream = Upstream(list(range(1, 3001)))
    look = _look(upstream, 1000)
    upstream.selection = look.info
    answer = _answered_later(upstream, monkeypatch)
    done = defer.ensureDeferred(sync.sync_messages(upstream, store, box, look=look))  # type: ignore[arg-type]
    assert upstream.fetches == [("sent", False)]
    assert _upstream_uids(store, box) == list(range(1, 1001))
    answer.callback(None)
    assert done.called and _upstream_uids(store, box) == list(range(1, 3001))


def test_a_look_that_cannot_be_stored_fails_the_sync_once_the_fetch_is_answered(
    replica: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The look's messages fail to store while the FETCH is on its way: the sync fails
    only once that FETCH is answered (the link is left with no command half read)."""
    store, box = replica
    upstream = Upstream(list(range(1, 3001)))
    look = _look(upstream, 1000)
    upstream.selection = look.info
    answer = _answered_later(upstream, monkeypatch)

    def broken(store: Store, mailbox: Any, batch: Any) -> Any:
        raise OSError("disk full")

    monkeypatch.setattr(sync, "_store_batch", broken)
    done = defer.ensureDeferred(sync.sync_messages(upstream, store, box, look=look))  # type: ignore[arg-type]
    failures: list[Any] = []
    done.addErrback(failures.append)
    assert not done.called
    answer.callback(None)
    assert upstream.fetches[-1] == ("1001:3000 answered", True)
    assert len(failures) == 1 and failures[0].check(OSError)
    assert _upstream_uids(store, box) == []


def test_an_unsolicited_flag_change_in_the_list_is_no_new_message(
    replica: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With QRESYNC enabled an unsolicited FETCH names its UID: one for a message not
    listed yet must neither become a message nor move the last UID synced past the
    messages between."""
    store, box = replica
    monkeypatch.setattr(sync, "PIPELINED_FIRST_UIDS", 2)
    upstream = Upstream([1, 2, 3, 4, 5])
    fetch = upstream.fetch

    async def with_news(numbers: SequenceSet, attributes: Any, **kw: Any) -> list[Any]:
        got = await fetch(numbers, attributes, **kw)
        return [{"UID": 40, "FLAGS": (Atom("\\Seen"),)}, *got]

    monkeypatch.setattr(upstream, "fetch", with_news)
    synced, _ = run_now(sync.sync_messages(upstream, store, box))  # type: ignore[arg-type]
    assert _upstream_uids(store, box) == [1, 2, 3, 4, 5]
    assert synced.upstream_last_uid == 5


def test_new_messages_already_linked_here_are_not_added_again(replica: Any) -> None:
    """A sync that only adds looks its new UIDs up in one range read: messages of ours
    linked to them (our APPEND, replayed), at either end of the range, keep their local
    UIDs and take the upstream's flags; the one between is added; one linked outside
    the range is left alone."""
    store, box = replica
    first = messages.Message(
        messages.UID(1), messages.UpstreamUID(6), (), "01-Jan-2026 00:00:00 +0000", 6, 1, 1
    )
    last = first.with_(uid=messages.UID(2), upstream_uid=messages.UpstreamUID(8), blob=2)
    outside = first.with_(uid=messages.UID(3), upstream_uid=messages.UpstreamUID(20), blob=3)
    linked = (first, last, outside)
    store.write(lambda tx: [messages.put(tx, box.account, box.id, m) for m in linked])
    box = box.with_(uidnext=4)
    store.write(lambda tx: mailboxes.put(tx, box))
    upstream = Upstream([6, 7, 8])
    info = SelectInfo(777, 9, 3, 50, (), None)
    fetched = sync._Fetched(info, new=[upstream._item(u) for u in (6, 7, 8)], local_modseq=0)
    box = sync._store_batch(store, box, fetched)

    upmap = store.read(lambda tx: messages.upstream_map(tx, box.account, box.id))
    assert upmap == {6: 1, 7: 4, 8: 2, 20: 3}
    mine = store.read(lambda tx: messages.get_many(tx, box.account, box.id, [1, 2]))
    assert [m.flags for m in mine] == [("\\Seen",), ("\\Seen",)]


class _Looker:
    """Enough of UpstreamClient for sync_new_mailboxes: each name's messages by UID."""

    def __init__(self, uids: dict[str, list[int]]) -> None:
        self.uids = uids
        self.examined: list[str] = []

    def has(self, capability: str) -> bool:
        return False

    async def examine_new(self, names: list[str], firsts: list[Any], items: Any) -> list[Any]:
        self.examined = names
        infos = []
        for name, first in zip(names, firsts, strict=True):
            ((low, high),) = first.ranges
            upstream = Upstream(self.uids[name])
            listed = tuple(upstream._item(u) for u in upstream.uids if low <= u <= high)
            infos.append(
                SelectInfo(
                    7, max(upstream.uids) + 1, len(upstream.uids), 50, (), None, first=listed
                )
            )
        return infos


def test_a_first_look_examines_inbox_last_and_stores_what_came_whole_at_once(
    replica: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    store, inbox = replica
    work, big = (
        store.write(lambda tx, n=n: mailboxes.create(tx, inbox.account, n)) for n in ("Work", "Big")
    )
    upstream = _Looker({"INBOX": [1, 2, 3], "Work": [1, 2], "Big": list(range(1, 300))})
    writes = []
    write = store.write

    def counted(fn: Any) -> Any:
        writes.append(fn)
        return write(fn)

    monkeypatch.setattr(store, "write", counted)
    done, looks = run_now(sync.sync_new_mailboxes(upstream, store, [work, inbox, big]))  # type: ignore[arg-type]
    assert upstream.examined == ["Work", "Big", "INBOX"]
    assert len(writes) == 1  # one transaction (one disk sync) for every folder that came whole
    assert sorted(m.name for m, _ in done) == ["INBOX", "Work"]
    assert list(looks) == [big.id] and looks[big.id].upto == sync.NEW_FOLDER_UIDS
    assert _upstream_uids(store, inbox) == [1, 2, 3] and _upstream_uids(store, work) == [1, 2]
    assert _upstream_uids(store, big) == []
