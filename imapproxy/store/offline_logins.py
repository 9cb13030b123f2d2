"""Offline logins without the upstream's password: token verifiers and a local password.

An account that logs in with OAuth2 has no password the proxy could verify offline.
Two things stand in for it, both kept only as salted scrypt verifiers (``verifier``):

- **Tokens the upstream accepted** for this user. Each successful online token login
  adds a verifier of the token with an expiry: the configured lifetime, shortened to
  the token's own ``exp`` when it is a readable JWT. At most ``MAX_TOKENS`` are kept
  (newest first); expired ones are dropped at the next write and never match.
- **A local password** set with ``imapproxy passwd``: it never goes upstream's way
  as a stored secret, and counts only when the upstream cannot be reached.

Each hash covers more than the secret: the login name, and for a token its expiry
(``_bound``). A record edited on disk (a later expiry, a record copied from another
account) then simply stops matching. Records are checked like the password verifier
(bounded cost parameters, sizes, types), and the whole list is refused if any record
in it is unusable: a store that was tampered with gets no benefit of the doubt. No
function here raises on bad data; every doubt is "no match".
"""

from __future__ import annotations

import hashlib
import logging

from imapproxy.store import accounts, verifier
from imapproxy.store._tx import Tx

log = logging.getLogger(__name__)

TOKENS_FIELD = "tokens"
LOCAL_PASSWORD_FIELD = "local_password"
#: Token verifiers kept per account (each costs one scrypt per offline token login).
MAX_TOKENS = 4
#: Default seconds a token verifier stays usable (config.DEFAULT_OFFLINE_TOKEN_LIFETIME).
DEFAULT_TOKEN_LIFETIME = 24 * 3600.0
#: Longest lifetime a record may claim (a year): beyond is a tampered or broken record.
MAX_LIFETIME = 366 * 24 * 3600.0


def _bound(kind: bytes, username: bytes, secret: bytes, expires: int = 0) -> bytes:
    """What is hashed: the secret, tied to its kind, owner and expiry."""
    return b"imapproxy-" + kind + b"\0" + username + b"\0" + b"%d" % expires + b"\0" + secret


def make_token_record(
    username: bytes, token: bytes, expires: int, params: verifier.ScryptParams = verifier.CURRENT
) -> dict[str, object]:
    """A verifier of token, usable until ``expires`` (slow: run it off the reactor)."""
    record = verifier.make(_bound(b"token", username, token, expires), params)
    record["expires"] = expires
    return record


def _token_record(record: object, now: float) -> tuple[verifier.Verifier, int]:
    if not isinstance(record, dict) or "expires" not in record:
        raise verifier.InvalidVerifier("token verifier has no expiry")
    expires = record["expires"]
    if type(expires) is not int or expires <= 0 or expires > now + MAX_LIFETIME:
        raise verifier.InvalidVerifier("token verifier expiry is not a sane time")
    rest = {k: v for k, v in record.items() if k != "expires"}
    return verifier.Verifier.from_record(rest), expires


def token_records_problem(records: object, now: float) -> str | None:
    """Why the stored list cannot be used (for the log), or None."""
    try:
        if records is None:
            return None
        if not isinstance(records, list) or len(records) > MAX_TOKENS:
            return f"token verifiers are not a list of at most {MAX_TOKENS}"
        for record in records:
            _token_record(record, now)
    except verifier.InvalidVerifier as exc:
        return str(exc)
    except Exception as exc:
        return f"unreadable token verifier ({type(exc).__name__})"
    return None


def token_matches(records: object, username: bytes, token: bytes, now: float) -> bool:
    """True only if the list is wholly usable and a record not yet expired matches
    token for username. Never raises."""
    try:
        if records is None or token_records_problem(records, now) is not None:
            return False
        assert isinstance(records, list)
        for record in records:
            found, expires = _token_record(record, now)
            if expires > now and found.matches(_bound(b"token", username, token, expires)):
                return True
    except Exception:
        log.exception("token verifier check failed: refusing")
    return False


def with_token(records: object, new: dict[str, object], now: float) -> list[object]:
    """The list to store after a token login: the new record first, then the old ones
    still usable and unexpired, at most MAX_TOKENS in all. A list that is unusable is
    replaced (the upstream just vouched for the new token)."""
    kept: list[object] = [new]
    if token_records_problem(records, now) is None and isinstance(records, list):
        for record in records:
            _, expires = _token_record(record, now)
            if expires > now and len(kept) < MAX_TOKENS:
                kept.append(record)
    return kept


def make_local_password(
    username: bytes, password: bytes, params: verifier.ScryptParams = verifier.CURRENT
) -> dict[str, object]:
    return verifier.make(_bound(b"local", username, password), params)


def local_password_matches(record: object, username: bytes, password: bytes) -> bool:
    """Never raises; a missing or unusable record never matches."""
    return record is not None and verifier.matches(record, _bound(b"local", username, password))


# in a transaction -------------------------------------------------------------


def get_tokens(tx: Tx, account: accounts.Account) -> object:
    return accounts.get_field(tx, account, TOKENS_FIELD)


def set_tokens(tx: Tx, account: accounts.Account, records: list[object]) -> None:
    accounts.set_field(tx, account, TOKENS_FIELD, records)


def get_local_password(tx: Tx, account: accounts.Account) -> object:
    return accounts.get_field(tx, account, LOCAL_PASSWORD_FIELD)


def set_local_password(tx: Tx, account: accounts.Account, record: dict[str, object]) -> None:
    accounts.set_field(tx, account, LOCAL_PASSWORD_FIELD, record)


def clear_local_password(tx: Tx, account: accounts.Account) -> None:
    accounts.set_field(tx, account, LOCAL_PASSWORD_FIELD, None)


def _mechanisms_key(upstream: str) -> bytes:
    return b"mechanisms:" + hashlib.sha256(upstream.encode()).digest()


def get_mechanisms(tx: Tx, upstream: str) -> frozenset[str] | None:
    """The OAuth mechanisms the upstream last offered (None: never seen), so they are
    advertised offline too, after a restart."""
    record = tx.get_record(b"meta", _mechanisms_key(upstream))
    if not isinstance(record, list) or not all(isinstance(m, str) for m in record):
        return None
    return frozenset(record)


def set_mechanisms(tx: Tx, upstream: str, mechanisms: frozenset[str]) -> None:
    tx.put_record(b"meta", _mechanisms_key(upstream), sorted(mechanisms))
