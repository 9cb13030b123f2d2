"""A small per-account record of what `imapproxy status` shows, kept by the running proxy.

Key: ``status:`` account(4) in the meta database. The running proxy rewrites it when
the upstream link goes up or down and after a background sync, and flushes its byte
counters every few seconds; the status command only reads it (with the pid, to tell
a running proxy's record from a stopped one's).
"""

from __future__ import annotations

from typing import Any

from imapproxy.store._tx import Tx, u32
from imapproxy.types import AccountId

PREFIX = b"status:"
#: The serving process: {pid, started}; written when it starts, before any login.
SERVICE_KEY = b"status:service"

#: Every field a record has, with the value a new account starts from.
DEFAULTS: dict[str, Any] = {
    "online": None,  # None: never tried since the record was made
    "since": None,  # when the link last went up or down (epoch seconds)
    "reason": "",  # why it is down
    "last_sync": None,  # end of the last complete background sync
    "served_bytes": 0,  # message content answered from the replica
    "fetched_bytes": 0,  # message content downloaded from the upstream
    "pid": None,  # the proxy process keeping this record
    "updated": None,
}


def key(account: AccountId) -> bytes:
    return PREFIX + u32(account)


def get(tx: Tx, account: AccountId) -> dict[str, Any]:
    """The record with every field present; a missing or unreadable one is all defaults."""
    record = dict(DEFAULTS)
    try:
        stored = tx.get_record(b"meta", key(account))
    except ValueError:
        stored = None
    if isinstance(stored, dict):
        record.update({k: v for k, v in stored.items() if k in DEFAULTS})
    return record


def put(tx: Tx, account: AccountId, record: dict[str, Any]) -> None:
    tx.put_record(b"meta", key(account), {k: record.get(k, v) for k, v in DEFAULTS.items()})


def put_service(tx: Tx, pid: int, started: float) -> None:
    tx.put_record(b"meta", SERVICE_KEY, {"pid": pid, "started": started})


def get_service(tx: Tx) -> dict[str, Any]:
    try:
        record = tx.get_record(b"meta", SERVICE_KEY)
    except ValueError:
        record = None
    return record if isinstance(record, dict) else {"pid": None, "started": None}
