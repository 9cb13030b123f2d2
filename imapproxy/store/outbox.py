"""The durable outbox: every change a client makes, queued in the transaction that applies it.

Key: account(4) seq(8); seq comes from one global counter, so an account's entries
replay in the order the user made them (RFC 4549 §3). An entry is written in the
same transaction that applies the change to the replica (replica first), so the
replica and the queue never disagree about what the user did.

Exactly once: before a byte of an entry goes upstream, ``mark_attempted`` commits
``attempts + 1``. Whoever replays an entry whose ``attempts`` is not zero (another
session, the background drain, a process restarted after SIGKILL) does not know
whether the upstream executed it, and verifies before sending again.

An entry leaves the queue in one of two ways: ``remove`` (in the transaction that
links the upstream's answer into the replica), or ``set_refused`` — the upstream
refused it for good, or the proxy failed while handling it. A refused entry is kept
(with its data) and listed by ``refused`` until someone clears it; it never replays.

Links (database ``links``): account(4) mailbox(4) local uid(4) → [upstream
uidvalidity, upstream uid], written whenever the upstream tells us where a message
we created locally (APPEND, COPY, MOVE) landed. Later entries that named the message
by its local UID only (it had no upstream UID when the user acted) resolve it here,
even if the message has since moved on in the replica.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, replace
from typing import Any

from imapproxy.store._tx import Tx, decode, read_u32, read_u64, u32, u64
from imapproxy.store.reclaim import collect_blobs
from imapproxy.types import AccountId, BlobId, MailboxId

QUEUED = "queued"
REFUSED = "refused"  # the upstream said NO for good
FAILED = "failed"  # the proxy failed handling it (a bug): never re-sent blindly


@dataclass(frozen=True)
class Entry:
    account: AccountId
    seq: int
    op: str
    args: dict[str, Any]
    created: float
    #: How many times the entry was about to be sent (committed before sending).
    attempts: int = 0
    state: str = QUEUED
    #: Why it was refused or failed (the upstream's text, or the proxy's error).
    reason: str = ""
    resolved: float | None = None

    @property
    def in_doubt(self) -> bool:
        """An earlier attempt may have reached the upstream: verify before re-sending."""
        return self.attempts > 0

    def with_(self, **changes: Any) -> Entry:
        return replace(self, **changes)


def _key(account: AccountId, seq: int) -> bytes:
    return u32(account) + u64(seq)


def _put(tx: Tx, entry: Entry) -> None:
    record: dict[str, Any] = {"op": entry.op, "args": entry.args, "created": entry.created}
    if entry.attempts:
        record["attempts"] = entry.attempts
    if entry.state != QUEUED:
        record.update(state=entry.state, reason=entry.reason, resolved=entry.resolved)
    tx.put_record(b"outbox", _key(entry.account, entry.seq), record)


def _entry(account: AccountId, key: bytes, record: dict[str, Any]) -> Entry:
    return Entry(
        account,
        read_u64(key, 4),
        record["op"],
        record["args"],
        record["created"],
        int(record.get("attempts", 0)),
        record.get("state", QUEUED),
        record.get("reason", ""),
        record.get("resolved"),
    )


def add(tx: Tx, account: AccountId, op: str, args: dict[str, Any]) -> Entry:
    entry = Entry(account, tx.counter(b"outbox"), op, args, time.time())
    _put(tx, entry)
    return entry


def get(tx: Tx, account: AccountId, seq: int) -> Entry | None:
    record = tx.get_record(b"outbox", _key(account, seq))
    return None if record is None else _entry(account, _key(account, seq), record)


def _let_go(tx: Tx, entry: Entry) -> None:
    """The entry no longer pins the content it names: free what no one else uses when
    the transaction commits (reclaim.py)."""
    found: set[BlobId] = set()
    collect_blobs(entry.args, found)
    tx.maybe_unused.update((entry.account, blob) for blob in found)


def remove(tx: Tx, entry: Entry) -> None:
    tx.delete(b"outbox", _key(entry.account, entry.seq))
    if entry.state != QUEUED:
        _note_refused(tx, entry.account, entry.seq, False)
    _let_go(tx, entry)


def _all(tx: Tx, account: AccountId) -> list[Entry]:
    return [_entry(account, key, decode(value)) for key, value in tx.scan(b"outbox", u32(account))]


def pending(tx: Tx, account: AccountId) -> list[Entry]:
    """Entries still to be replayed, oldest first."""
    return [e for e in _all(tx, account) if e.state == QUEUED]


def refused(tx: Tx, account: AccountId) -> list[Entry]:
    """Changes of this account that will never be replayed, oldest first.

    Each is an Entry with ``state`` REFUSED (the upstream refused it for good: mailbox
    gone, over quota, too big…) or FAILED (the proxy failed while handling it), the
    ``reason`` (upstream text or error), ``resolved`` (when, seconds since the epoch),
    ``op`` (store, copy, expunge, append, create, delete, rename, subscribe) and its
    ``args``. The replica was brought back in line with the upstream; a refused
    APPEND's message was put in the local "Recovered" mailbox. For ``imapproxy status``
    and for tests; entries stay until ``clear_refused``.
    """
    return [e for e in _all(tx, account) if e.state != QUEUED]


def clear_refused(tx: Tx, account: AccountId) -> int:
    """Forget the refused entries of an account (after the user has seen them)."""
    gone = refused(tx, account)
    for entry in gone:
        remove(tx, entry)
    return len(gone)


def mark_attempted(tx: Tx, entry: Entry) -> Entry:
    """Record that entry is about to be sent. Commit this before sending."""
    marked = entry.with_(attempts=entry.attempts + 1)
    _put(tx, marked)
    return marked


def update(tx: Tx, entry: Entry, args: dict[str, Any]) -> Entry:
    """Rewrite an entry's arguments in place (it keeps its position in the queue)."""
    changed = entry.with_(args=args)
    _put(tx, changed)
    return changed


def set_refused(tx: Tx, entry: Entry, state: str, reason: str) -> Entry:
    """Take entry out of the queue for good, keeping it (and its data) listed."""
    done = entry.with_(state=state, reason=reason, resolved=time.time())
    _put(tx, done)
    _note_refused(tx, entry.account, entry.seq, True)
    if state == REFUSED:
        _let_go(tx, done)
    return done


# -- which entries were refused, readable without an encrypted account's key ----------------


def _refused_key(account: AccountId) -> bytes:
    return b"outbox_refused:" + u32(account)


def refused_seqs(tx: Tx, account: AccountId) -> list[int]:
    """Sequence numbers of the refused (or failed) entries, kept in clear in the meta
    database beside the sealed entries, so `imapproxy status` can count them without the
    key of an encrypted account (numbers only: nothing of what the changes were)."""
    record = tx.get_record(b"meta", _refused_key(account))
    if not isinstance(record, list):
        return []
    return [seq for seq in record if type(seq) is int]


def set_refused_seqs(tx: Tx, account: AccountId, seqs: list[int]) -> None:
    if seqs:
        tx.put_record(b"meta", _refused_key(account), sorted(set(seqs)))
    else:
        tx.delete(b"meta", _refused_key(account))


def _note_refused(tx: Tx, account: AccountId, seq: int, refused: bool) -> None:
    seqs = set(refused_seqs(tx, account))
    if refused:
        seqs.add(seq)
    else:
        seqs.discard(seq)
    set_refused_seqs(tx, account, list(seqs))


# -- links: where messages created locally landed upstream --------------------------------


def put_link(
    tx: Tx, account: AccountId, mailbox: MailboxId, uid: int, validity: int, upstream_uid: int
) -> None:
    tx.put_record(b"links", u32(account) + u32(mailbox) + u32(uid), [validity, upstream_uid])


def link(tx: Tx, account: AccountId, mailbox: MailboxId, uid: int) -> tuple[int, int] | None:
    """(upstream uidvalidity, upstream uid) of a message created locally, once known."""
    record = tx.get_record(b"links", u32(account) + u32(mailbox) + u32(uid))
    return None if record is None else (int(record[0]), int(record[1]))


def drop_links(tx: Tx, account: AccountId, mailbox: MailboxId) -> None:
    tx.delete_prefix(b"links", u32(account) + u32(mailbox))


def links_of(tx: Tx, account: AccountId) -> dict[tuple[int, int], tuple[int, int]]:
    return {
        (read_u32(key, 4), read_u32(key, 8)): (int(v[0]), int(v[1]))
        for key, raw in tx.scan(b"links", u32(account))
        for v in [decode(raw)]
    }


# -- paused replay (the upstream refused the stored credentials) --------------------------


def set_paused(tx: Tx, account: AccountId, reason: str | None) -> None:
    """Mark (reason) or unmark (None) an account whose replay waits for a new login."""
    key = b"outbox_paused:" + u32(account)
    if reason is None:
        tx.delete(b"meta", key)
    else:
        tx.put_record(b"meta", key, {"reason": reason, "since": time.time()})


def paused(tx: Tx, account: AccountId) -> dict[str, Any] | None:
    """{reason, since} when replay of this account is paused until the user logs in
    again (the upstream rejected the stored credentials); None otherwise."""
    record = tx.get_record(b"meta", b"outbox_paused:" + u32(account))
    return None if record is None else dict(record)
