"""Accounts and their offline-login verifiers.

An account is one (upstream, username) pair. Its key is a hash, so neither the
username nor the upstream appears in a key, and the id is a small integer that
prefixes every other key of that account: one user's data is one key range, and no
code path reads across ranges.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

from imapproxy.store import verifier
from imapproxy.store._tx import Tx
from imapproxy.types import AccountId


@dataclass(frozen=True)
class Account:
    id: AccountId
    upstream: str
    username: str


def _account_key(upstream: str, username: str) -> bytes:
    return hashlib.sha256(upstream.encode() + b"\0" + username.encode()).digest()


def find_account(tx: Tx, upstream: str, username: str) -> Account | None:
    record = tx.get_record(b"accounts", _account_key(upstream, username))
    if record is None:
        return None
    return Account(AccountId(record["id"]), upstream, username)


def ensure_account(tx: Tx, upstream: str, username: str) -> Account:
    found = find_account(tx, upstream, username)
    if found is not None:
        return found
    account_id = AccountId(tx.counter(b"account"))
    tx.put_record(
        b"accounts",
        _account_key(upstream, username),
        {"id": account_id, "upstream": upstream, "username": username, "verifier": None},
    )
    return Account(account_id, upstream, username)


def make_verifier(
    password: bytes, params: verifier.ScryptParams = verifier.CURRENT
) -> dict[str, object]:
    """A new verifier record (slow by design: run it off the reactor)."""
    return verifier.make(password, params)


def verifier_matches(record: object, password: bytes) -> bool:
    """True only for a usable record that password matches; never raises (see verifier)."""
    return verifier.matches(record, password)


def get_verifier(tx: Tx, account: Account) -> object:
    """The stored verifier record as found (None if there is none): check it before use."""
    record = tx.get_record(b"accounts", _account_key(account.upstream, account.username))
    return record.get("verifier") if isinstance(record, dict) else None


def set_verifier(tx: Tx, account: Account, new: dict[str, object]) -> None:
    set_field(tx, account, "verifier", new)


def get_field(tx: Tx, account: Account, name: str) -> object:
    """Another field of the account's record as found (None if absent): the offline
    credentials of ``offline_logins`` live there, next to the verifier."""
    record = tx.get_record(b"accounts", _account_key(account.upstream, account.username))
    return record.get(name) if isinstance(record, dict) else None


def set_field(tx: Tx, account: Account, name: str, value: object) -> None:
    key = _account_key(account.upstream, account.username)
    record = tx.get_record(b"accounts", key)
    record[name] = value
    tx.put_record(b"accounts", key, record)
