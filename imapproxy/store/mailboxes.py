"""Mailboxes of an account: local UID space, upstream mapping state, LIST attributes.

Each replica mailbox has its own UIDVALIDITY, taken from a strictly increasing clock
(seconds since 2020, bumped past the last one handed out), so a mailbox re-created
under the same name never reuses a UIDVALIDITY.
"""

from __future__ import annotations

import time
from bisect import bisect_left
from dataclasses import asdict, dataclass, field, replace

from imapproxy.store import messages
from imapproxy.store._tx import Tx, decode, read_u32, u32, u64
from imapproxy.types import UID, AccountId, MailboxId

UIDVALIDITY_EPOCH = 1577836800  # 2020-01-01T00:00:00Z


@dataclass(frozen=True)
class Mailbox:
    account: AccountId
    id: MailboxId
    name: str
    delimiter: str | None = "/"
    attributes: tuple[str, ...] = ()
    subscribed: bool = False
    uidvalidity: int = 0
    uidnext: int = 1
    highestmodseq: int = 1
    upstream_uidvalidity: int | None = None
    upstream_uidnext: int | None = None
    upstream_highestmodseq: int | None = None
    upstream_last_uid: int = 0
    selectable: bool = True
    #: Messages from this local UID on are \Recent for the next session to select the
    #: mailbox read-write (RFC 3501 §2.3.2); that session claims them by moving it on.
    first_recent_uid: int = 1
    #: Whether the upstream lets clients create keywords (PERMANENTFLAGS ``\\*``), as
    #: last seen on a read-write SELECT there; assumed until one says otherwise.
    new_keywords: bool = True
    extra: dict[str, object] = field(default_factory=dict, compare=False)

    def with_(self, **changes: object) -> Mailbox:
        return replace(self, **changes)  # type: ignore[arg-type]

    @property
    def never_synced(self) -> bool:
        """Whether the replica never had this mailbox's message list from the upstream."""
        return self.upstream_uidvalidity is None and not self.upstream_last_uid

    @property
    def contents_known(self) -> bool:
        """Whether the replica knows this mailbox's message list, so that counting it
        is a true answer: it was synced with the upstream at least once, or it was
        created here (``extra["created_here"]``, empty until someone adds to it).
        A mailbox only seen in LIST is not known: offline it must not look empty."""
        return (
            self.upstream_uidvalidity is not None
            or bool(self.extra.get("created_here"))
            or bool(self.extra.get("local"))  # Recovered: the replica is all there is
        )


def _key(account: AccountId, mailbox: MailboxId) -> bytes:
    return u32(account) + u32(mailbox)


def _from_record(account: AccountId, mailbox_id: int, record: dict[str, object]) -> Mailbox:
    record = dict(record)
    record["attributes"] = tuple(record.get("attributes", ()))  # type: ignore[arg-type]
    # Written before \\Recent was kept: what the replica holds is not new to anyone.
    record.setdefault("first_recent_uid", record.get("uidnext", 1))
    return Mailbox(account=account, id=MailboxId(mailbox_id), **record)  # type: ignore[arg-type]


def put(tx: Tx, mailbox: Mailbox) -> None:
    record = asdict(mailbox)
    del record["account"], record["id"]
    tx.put_record(b"mailboxes", _key(mailbox.account, mailbox.id), record)


def get(tx: Tx, account: AccountId, mailbox_id: MailboxId) -> Mailbox | None:
    record = tx.get_record(b"mailboxes", _key(account, mailbox_id))
    return None if record is None else _from_record(account, mailbox_id, record)


def all_mailboxes(tx: Tx, account: AccountId) -> list[Mailbox]:
    return [
        _from_record(account, read_u32(key, 4), decode(value))
        for key, value in tx.scan(b"mailboxes", u32(account))
    ]


def normalize_name(name: str) -> str:
    """INBOX is case-insensitive (RFC 3501 5.1); every other name is exact."""
    return "INBOX" if name.upper() == "INBOX" else name


def find(tx: Tx, account: AccountId, name: str) -> Mailbox | None:
    name = normalize_name(name)
    for mailbox in all_mailboxes(tx, account):
        if mailbox.name == name:
            return mailbox
    return None


def new_uidvalidity(tx: Tx) -> int:
    raw = tx.get(b"meta", b"uidvalidity_clock")
    last = 0 if raw is None else int(raw)
    value = max(int(time.time()) - UIDVALIDITY_EPOCH, last + 1)
    tx.put(b"meta", b"uidvalidity_clock", str(value).encode())
    return value


def create(tx: Tx, account: AccountId, name: str, **attrs: object) -> Mailbox:
    mailbox_id = MailboxId(tx.counter(b"mailbox:" + u32(account)))
    mailbox = Mailbox(
        account=account,
        id=mailbox_id,
        name=normalize_name(name),
        uidvalidity=new_uidvalidity(tx),
        **attrs,  # type: ignore[arg-type]
    )
    put(tx, mailbox)
    return mailbox


def delete(tx: Tx, mailbox: Mailbox) -> None:
    """Remove a mailbox and everything keyed under it (messages, UID map, change log);
    content its messages alone used is freed when the transaction commits."""
    prefix = _key(mailbox.account, mailbox.id)
    for message in list(messages.iterate(tx, mailbox.account, mailbox.id)):
        messages.remove(tx, mailbox.account, mailbox.id, message)
    tx.delete(b"mailboxes", prefix)
    tx.delete_prefix(b"messages", prefix)
    tx.delete_prefix(b"upstream_uids", prefix)
    tx.delete_prefix(b"changes", prefix)


def recent_count(tx: Tx, mailbox: Mailbox) -> int:
    """Messages no session has claimed as \\Recent yet (STATUS RECENT)."""
    mailbox = get(tx, mailbox.account, mailbox.id) or mailbox
    start = messages.prefix(mailbox.account, mailbox.id) + u32(max(mailbox.first_recent_uid, 1))
    return sum(1 for _ in tx.scan(b"messages", messages.prefix(mailbox.account, mailbox.id), start))


def claim_recent(tx: Tx, mailbox: Mailbox, uids: list[UID], claim: bool) -> set[UID]:
    """Which of uids (sorted) are \\Recent for a session that sees them now; with claim
    (a read-write session), no other session will see them so (RFC 3501 §2.3.2)."""
    current = get(tx, mailbox.account, mailbox.id) or mailbox
    first = current.first_recent_uid
    recent = set(uids[bisect_left(uids, first) :])
    if claim and first < current.uidnext:
        put(tx, current.with_(first_recent_uid=current.uidnext))
    return recent


def next_modseq(tx: Tx, mailbox: Mailbox) -> tuple[Mailbox, int]:
    modseq = mailbox.highestmodseq + 1
    return mailbox.with_(highestmodseq=modseq), modseq


def log_change(tx: Tx, mailbox: Mailbox, modseq: int, change: dict[str, object]) -> None:
    """The per-mailbox change log, keyed by modseq: what CONDSTORE/QRESYNC serve from."""
    tx.put_record(b"changes", _key(mailbox.account, mailbox.id) + u64(modseq), change)


def expunged_since(tx: Tx, mailbox: Mailbox, modseq: int) -> list[UID]:
    """Local UIDs expunged with a modseq above modseq, ascending (QRESYNC's VANISHED
    (EARLIER), RFC 7162 §3.2.5.1). The log keeps every expunge since the mailbox was
    created, so the answer is exact however old modseq is."""
    prefix = _key(mailbox.account, mailbox.id)
    start = prefix + u64(max(modseq, 0) + 1)
    uids = set()
    for _, value in tx.scan(b"changes", prefix, start):
        change = decode(value)
        if change.get("what") == "expunge":
            uids.add(UID(int(change["uid"])))
    return sorted(uids)
