"""The selected view's per-session state: \\Recent claimed once, keywords announced
before they are shown, PERMANENTFLAGS as the upstream allows."""

from __future__ import annotations

from pathlib import Path

from imapproxy.notify import MailboxChange
from imapproxy.protocol import parse_sequence_set
from imapproxy.server.view import Modes, SelectedView
from imapproxy.store import Store, mailboxes, messages
from imapproxy.store.mailboxes import Mailbox
from imapproxy.store.messages import Message
from imapproxy.types import UID, AccountId, BlobId, UpstreamUID

ACCOUNT = AccountId(1)


def _store(tmp_path: Path, count: int) -> tuple[Store, Mailbox]:
    store = Store(tmp_path / "replica")

    def fill(tx: object) -> Mailbox:
        box = mailboxes.create(tx, ACCOUNT, "INBOX")  # type: ignore[arg-type]
        for uid in range(1, count + 1):
            box, modseq = mailboxes.next_modseq(tx, box)  # type: ignore[arg-type]
            message = Message(UID(uid), UpstreamUID(uid), (), "d", 10, modseq, BlobId(uid))
            messages.put(tx, ACCOUNT, box.id, message)  # type: ignore[arg-type]
        box = box.with_(uidnext=count + 1)
        mailboxes.put(tx, box)  # type: ignore[arg-type]
        return box

    return store, store.write(fill)


def _add(store: Store, box: Mailbox, uid: int, flags: tuple[str, ...] = ()) -> None:
    def add(tx: object) -> None:
        current = mailboxes.get(tx, ACCOUNT, box.id)  # type: ignore[arg-type]
        assert current is not None
        current, modseq = mailboxes.next_modseq(tx, current)  # type: ignore[arg-type]
        message = Message(UID(uid), UpstreamUID(uid), flags, "d", 10, modseq, BlobId(uid))
        messages.put(tx, ACCOUNT, box.id, message)  # type: ignore[arg-type]
        mailboxes.put(tx, current.with_(uidnext=uid + 1))  # type: ignore[arg-type]

    store.write(add)


def test_recent_is_claimed_by_the_first_read_write_session_only(tmp_path: Path) -> None:
    store, box = _store(tmp_path, 3)
    examiner = SelectedView(store, box, readonly=True, origin=object())
    first = SelectedView(store, box, readonly=False, origin=object())
    second = SelectedView(store, box, readonly=False, origin=object())
    assert examiner.recent == first.recent == {1, 2, 3}
    assert second.recent == set()
    assert store.read(lambda tx: mailboxes.recent_count(tx, box)) == 0
    # A new message: recent for whichever read-write session hears of it first.
    _add(store, box, 4)
    for view in (second, first):
        view.on_change(MailboxChange(box.id, added=True))
    second_lines = b"".join(second.updates(allow_expunge=True))
    first_lines = b"".join(first.updates(allow_expunge=True))
    assert second.recent == {4} and b"* 1 RECENT" in second_lines
    assert first.recent == {1, 2, 3} and b"RECENT" not in first_lines
    assert b"* 4 EXISTS" in second_lines and b"* 4 EXISTS" in first_lines


def test_a_new_keyword_is_announced_before_the_fetch_that_shows_it(tmp_path: Path) -> None:
    store, box = _store(tmp_path, 1)
    view = SelectedView(store, box, readonly=False, origin=object(), modes=Modes(condstore=True))
    view.announce_keywords(())

    def flag(tx: object) -> None:
        message = messages.get(tx, ACCOUNT, box.id, UID(1))  # type: ignore[arg-type]
        assert message is not None
        messages.put(tx, ACCOUNT, box.id, message.with_(flags=("$New",), modseq=9))  # type: ignore[arg-type]

    store.write(flag)
    view.on_change(MailboxChange(box.id, flags=(UID(1),)))
    lines = b"".join(view.updates(allow_expunge=False))
    assert lines.index(b"* FLAGS (") < lines.index(b"PERMANENTFLAGS") < lines.index(b"FETCH")
    assert b"* 1 FETCH (UID 1 FLAGS ($New \\Recent) MODSEQ (9))" in lines
    view.on_change(MailboxChange(box.id, flags=(UID(1),)))
    assert b"* FLAGS" not in b"".join(view.updates(allow_expunge=False))  # told once


def test_permanentflags_offer_new_keywords_only_where_the_upstream_allows(tmp_path: Path) -> None:
    store, box = _store(tmp_path, 0)
    open_view = SelectedView(store, box, readonly=False, origin=object())
    assert b"\\*)]" in b"".join(open_view.announce_keywords(()))
    store.write(lambda tx: mailboxes.put(tx, box.with_(new_keywords=False)))
    closed_view = SelectedView(store, box, readonly=False, origin=object())
    announced = b"".join(closed_view.announce_keywords(("$Work",)))
    assert b"PERMANENTFLAGS" in announced and b"$Work" in announced
    assert b"\\*" not in announced


def test_vanished_replaces_expunge_with_qresync_and_a_guard_precedes_fetches(
    tmp_path: Path,
) -> None:
    store, box = _store(tmp_path, 4)
    plain = SelectedView(store, box, readonly=True, origin=object())
    quick = SelectedView(store, box, readonly=True, origin=object(), modes=Modes(True, True))
    told = quick.told_modseq

    def expunge(tx: object) -> None:
        current = mailboxes.get(tx, ACCOUNT, box.id)  # type: ignore[arg-type]
        assert current is not None
        for uid in (2, 3):
            message = messages.get(tx, ACCOUNT, box.id, UID(uid))  # type: ignore[arg-type]
            assert message is not None
            messages.remove(tx, ACCOUNT, box.id, message)  # type: ignore[arg-type]
            current, modseq = mailboxes.next_modseq(tx, current)  # type: ignore[arg-type]
            mailboxes.log_change(tx, current, modseq, {"uid": uid, "what": "expunge"})  # type: ignore[arg-type]
        mailboxes.put(tx, current)  # type: ignore[arg-type]

    store.write(expunge)
    change = MailboxChange(box.id, expunged=(UID(2), UID(3)), flags=(UID(4),))
    for view in (plain, quick):
        view.on_change(change)
    # During FETCH (no expunges allowed) a FETCH with a higher MODSEQ goes out: the
    # HIGHESTMODSEQ the client may rely on comes first, below the pending expunges.
    during = b"".join(quick.updates(allow_expunge=False))
    assert during.startswith(b"* OK [HIGHESTMODSEQ %d]" % told)
    after = b"".join(quick.updates(allow_expunge=True))
    assert b"* VANISHED 2:3\r\n" in after and b"EXPUNGE" not in after
    assert quick.uids == [1, 4]
    assert store.read(lambda tx: mailboxes.expunged_since(tx, box, told)) == [2, 3]
    lines = b"".join(plain.updates(allow_expunge=True))
    assert lines.count(b"EXPUNGE") == 2 and b"VANISHED" not in lines


def test_the_saved_result_names_messages_not_numbers(tmp_path: Path) -> None:
    """RFC 5182 §2.1: ``$`` is the same messages by sequence number or by UID, loses the
    ones expunged, and a new view (SELECT) starts with it empty."""
    store, box = _store(tmp_path, 5)
    view = SelectedView(store, box, readonly=True, origin=object())
    saved = parse_sequence_set("$")
    assert view.resolve(saved, by_uid=False) == []
    view.saved = frozenset({UID(2), UID(4), UID(5)})
    assert view.resolve(saved, by_uid=False) == [(2, 2), (4, 4), (5, 5)]
    assert view.resolve(saved, by_uid=True) == [(2, 2), (4, 4), (5, 5)]

    def expunge(tx: object) -> None:
        message = messages.get(tx, ACCOUNT, box.id, UID(2))  # type: ignore[arg-type]
        assert message is not None
        messages.remove(tx, ACCOUNT, box.id, message)  # type: ignore[arg-type]

    store.write(expunge)
    view.on_change(MailboxChange(box.id, expunged=(UID(2),)))
    view.updates(allow_expunge=True)
    assert view.resolve(saved, by_uid=False) == [(3, 4), (4, 5)]
    assert SelectedView(store, box, readonly=True, origin=object()).saved == frozenset()
