"""The durable outbox: every change a client makes, queued before anyone hears OK.

Key: account(4) seq(8); seq comes from one global counter, so an account's entries
replay in the order the user made them (RFC 4549 §3). An entry is written in its
own committed transaction before the upstream is asked, and removed in the same
transaction that applies the upstream's answer to the replica: a crash at any
point leaves either the queued entry or its applied result, never neither.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

from imapproxy.store._tx import Tx, decode, read_u64, u32, u64
from imapproxy.types import AccountId


@dataclass(frozen=True)
class Entry:
    account: AccountId
    seq: int
    op: str
    args: dict[str, Any]
    created: float


def add(tx: Tx, account: AccountId, op: str, args: dict[str, Any]) -> Entry:
    seq = tx.counter(b"outbox")
    entry = Entry(account, seq, op, args, time.time())
    tx.put_record(
        b"outbox", u32(account) + u64(seq), {"op": op, "args": args, "created": entry.created}
    )
    return entry


def remove(tx: Tx, entry: Entry) -> None:
    tx.delete(b"outbox", u32(entry.account) + u64(entry.seq))


def pending(tx: Tx, account: AccountId) -> list[Entry]:
    entries = []
    for key, value in tx.scan(b"outbox", u32(account)):
        record = decode(value)
        entries.append(
            Entry(account, read_u64(key, 4), record["op"], record["args"], record["created"])
        )
    return entries


def update(tx: Tx, entry: Entry, args: dict[str, Any]) -> None:
    """Rewrite an entry's arguments in place (it keeps its position in the queue)."""
    tx.put_record(
        b"outbox",
        u32(entry.account) + u64(entry.seq),
        {"op": entry.op, "args": args, "created": entry.created},
    )
