"""How an outbox entry names a message, and how replay finds it upstream again.

A ``Ref`` is captured when the user acts: the local UID the client used, the upstream
UID if the message had one (with the upstream UIDVALIDITY it belongs to, kept on the
operation), and what identifies the message without UIDs (INTERNALDATE, size,
Message-ID when cached) plus what restoring it needs (flags, blob).

Finding messages upstream without trusting UIDs is needed in three cases, all served
by ``find``: an entry that may already have been executed (in doubt: did the APPEND
or COPY land?), an upstream without UIDPLUS (no APPENDUID/COPYUID), and an upstream
whose UIDVALIDITY changed since the entry was queued (its old UIDs name other
messages now). A match must be unambiguous — exactly one upstream message for one
ref — or it is not taken (RFC 4549 §4.2.2.5).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from imapproxy.message import header_value
from imapproxy.outbox.replica import same_date
from imapproxy.protocol import FetchAttribute, Section, SequenceSet, Value
from imapproxy.store import Tx, cache, outbox
from imapproxy.store.messages import Message
from imapproxy.types import AccountId, MailboxId
from imapproxy.upstream.client import UpstreamClient, as_int, text

MESSAGE_ID_ITEM = FetchAttribute(
    "BODY", Section(text="HEADER.FIELDS", fields=("MESSAGE-ID",)), peek=True
)
IDENTITY_ITEMS = (FetchAttribute("INTERNALDATE"), FetchAttribute("RFC822.SIZE"), MESSAGE_ID_ITEM)


@dataclass(frozen=True)
class Ref:
    uid: int
    upstream: int | None
    date: str
    size: int
    message_id: str | None
    flags: tuple[str, ...]
    blob: int

    def to_json(self) -> list[Any]:
        return [
            self.uid,
            self.upstream,
            self.date,
            self.size,
            self.message_id,
            list(self.flags),
            self.blob,
        ]

    @classmethod
    def from_json(cls, data: Sequence[Any]) -> Ref:
        uid, upstream, date, size, message_id, flags, blob = data
        return cls(int(uid), upstream, str(date), int(size), message_id, tuple(flags), int(blob))


def message_id_of(tx: Tx, account: AccountId, blob: int) -> str | None:
    """The Message-ID from the cached header (or message), when the cache has one."""
    raw = cache.get(tx, account, blob, cache.Kind.HEADER)  # type: ignore[arg-type]
    if raw is None:
        full = cache.get(tx, account, blob, cache.Kind.FULL)  # type: ignore[arg-type]
        raw = None if full is None else full[:65536]
    if raw is None:
        return None
    value = header_value(bytes(raw), b"Message-ID")
    return None if not value else value.decode("utf-8", "replace").strip()


def ref_of(tx: Tx, account: AccountId, message: Message, with_message_id: bool = False) -> Ref:
    message_id = message_id_of(tx, account, message.blob) if with_message_id else None
    return Ref(
        message.uid,
        message.upstream_uid,
        message.internaldate,
        message.size,
        message_id,
        message.flags,
        message.blob,
    )


def resolve(
    tx: Tx, account: AccountId, mailbox: int, validity: int | None, refs: Iterable[Ref]
) -> list[tuple[Ref, int | None, int]]:
    """(ref, upstream uidvalidity, upstream uid) for each ref replay can name upstream:
    its own upstream UID, or where the message it named landed (a link). Refs with
    neither (created locally and never delivered: their parent entry was refused) are
    left out, so a local UID is never sent upstream."""
    out: list[tuple[Ref, int | None, int]] = []
    for ref in refs:
        if ref.upstream is not None:
            out.append((ref, validity, ref.upstream))
            continue
        found = outbox.link(tx, account, MailboxId(mailbox), ref.uid)
        if found is not None:
            out.append((ref, found[0], found[1]))
    return out


def _message_id(item: dict[str, Value]) -> str | None:
    for key, value in item.items():
        if key.startswith("BODY[HEADER.FIELDS") and isinstance(value, bytes):
            found = header_value(value, b"Message-ID")
            return None if not found else found.decode("utf-8", "replace").strip()
    return None


async def find(
    client: UpstreamClient, refs: Sequence[Ref], since: int | None = None
) -> dict[int, int]:
    """In the selected upstream mailbox, the messages matching refs: {ref.uid: upstream
    uid}. Looks at UIDs from since on (the mailbox's UIDNEXT before the command, when
    known: only what arrived since can be ours). A ref matches a message with the same
    INTERNALDATE and size, and the same Message-ID when the ref has one; a ref with two
    candidates, or a candidate claimed by two refs, matches nothing."""
    if not refs:
        return {}
    items = await client.fetch(SequenceSet(((since or 1, None),)), IDENTITY_ITEMS)
    items = [i for i in items if as_int(i["UID"]) >= (since or 1)]
    candidates: dict[int, list[int]] = {}
    for ref in refs:
        candidates[ref.uid] = [
            as_int(item["UID"])
            for item in items
            if as_int(item.get("RFC822.SIZE")) == ref.size
            and same_date(text(item.get("INTERNALDATE")), ref.date)
            and (ref.message_id is None or _message_id(item) == ref.message_id)
        ]
    claimed: dict[int, int] = {}
    for uids in candidates.values():
        for uid in uids:
            claimed[uid] = claimed.get(uid, 0) + 1
    return {
        ref_uid: uids[0]
        for ref_uid, uids in candidates.items()
        if len(uids) == 1 and claimed[uids[0]] == 1
    }
