"""Accounts and their offline-login verifiers.

An account is one (upstream, username) pair. Its key is a hash, so neither the
username nor the upstream appears in a key, and the id is a small integer that
prefixes every other key of that account: one user's data is one key range, and no
code path reads across ranges.
"""

from __future__ import annotations

import hashlib
import hmac
import os
from dataclasses import dataclass
from typing import cast

from imapproxy.store._tx import Tx
from imapproxy.types import AccountId

# scrypt parameters: about 50 ms and 16 MiB per check, so a stolen state directory
# does not give cheap password guesses.
SCRYPT_N = 2**14
SCRYPT_R = 8
SCRYPT_P = 1


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


def make_verifier(password: bytes) -> dict[str, object]:
    salt = os.urandom(16)
    digest = hashlib.scrypt(password, salt=salt, n=SCRYPT_N, r=SCRYPT_R, p=SCRYPT_P, dklen=32)
    return {"scrypt": [SCRYPT_N, SCRYPT_R, SCRYPT_P], "salt": salt.hex(), "hash": digest.hex()}


def verifier_matches(verifier: dict[str, object] | None, password: bytes) -> bool:
    if not verifier:
        return False
    n, r, p = cast(list[int], verifier["scrypt"])
    salt = bytes.fromhex(str(verifier["salt"]))
    digest = hashlib.scrypt(password, salt=salt, n=n, r=r, p=p, dklen=32)
    return hmac.compare_digest(digest.hex(), str(verifier["hash"]))


def get_verifier(tx: Tx, account: Account) -> dict[str, object] | None:
    record = tx.get_record(b"accounts", _account_key(account.upstream, account.username))
    return None if record is None else record.get("verifier")


def set_verifier(tx: Tx, account: Account, verifier: dict[str, object]) -> None:
    key = _account_key(account.upstream, account.username)
    record = tx.get_record(b"accounts", key)
    record["verifier"] = verifier
    tx.put_record(b"accounts", key, record)
