"""Subscriptions to names that are no mailbox (any more).

RFC 3501 §6.3.6: a server must not drop a subscription because its mailbox went, and
LSUB keeps listing it (RFC 5258: ``LIST (SUBSCRIBED)`` shows it ``\\NonExistent``).
Subscriptions of existing mailboxes live on their replica records; these names have
no record, so they are kept here, per account, for LSUB to answer online and offline.
"""

from __future__ import annotations

from collections.abc import Iterable

from imapproxy.store._tx import Tx, u32
from imapproxy.types import AccountId


def _key(account: AccountId) -> bytes:
    return b"subscribed_only:" + u32(account)


def orphans(tx: Tx, account: AccountId) -> frozenset[str]:
    """The subscribed names with no mailbox behind them."""
    record = tx.get_record(b"meta", _key(account))
    return frozenset(record) if isinstance(record, list) else frozenset()


def set_orphans(tx: Tx, account: AccountId, names: Iterable[str]) -> None:
    found = sorted(set(names))
    if found:
        tx.put_record(b"meta", _key(account), found)
    else:
        tx.delete(b"meta", _key(account))


def note(tx: Tx, account: AccountId, name: str, subscribed: bool) -> None:
    """name is (no longer) a subscription without a mailbox."""
    current = set(orphans(tx, account))
    if subscribed:
        current.add(name)
    else:
        current.discard(name)
    set_orphans(tx, account, current)
