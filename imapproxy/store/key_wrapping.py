"""An encrypted account's data key, wrapped under each secret that may unlock it.

A wrapping is a record in the account's record (account_keys.py)::

    {"kind": "password" | "local" | "token", "scrypt": [N, r, p], "salt": hex,
     "nonce": hex, "wrapped": hex, ["expires": unix time, tokens only]}

The key-encryption key is scrypt (verifier.py's ``derive``, parameters and bounds) of
the secret bound to its kind, owner and expiry, with the record's own salt; the data
key is sealed under it with AES-GCM, the kind, account id and expiry as associated
data. A record edited on disk (a later expiry, another kind, copied from another
account) therefore fails its tag. Nothing here raises on bad data: ``unwrap`` answers
None for any doubt (fail closed), and ``problem`` says why for the log.

Kinds: ``password``, the upstream password of a login the upstream accepted (or that
matched the offline verifier); ``local``, the password set with ``imapproxy passwd``;
``token``, an OAuth token the upstream accepted, usable as long as its offline token
verifier (offline_logins.py) would be.
"""

from __future__ import annotations

import os
from typing import Any

from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from imapproxy.store import verifier
from imapproxy.store.keyring import KEY_BYTES, NONCE_BYTES, TAG_BYTES

PASSWORD = "password"
LOCAL = "local"
TOKEN = "token"
KINDS = (PASSWORD, LOCAL, TOKEN)
_FIELDS = {"kind", "scrypt", "salt", "nonce", "wrapped"}
#: A token wrapping may claim at most this far ahead (as offline_logins.MAX_LIFETIME).
MAX_LIFETIME = 366 * 24 * 3600.0


def _bound(kind: str, username: bytes, secret: bytes, expires: int) -> bytes:
    return (
        b"imapproxy-wrap-" + kind.encode() + b"\0" + username + b"\0" + b"%d" % expires + b"\0"
    ) + secret


def _associated(kind: str, account: int, expires: int) -> bytes:
    return b"imapproxy-key\0" + kind.encode() + b"\0%d\0%d" % (account, expires)


def kek(
    kind: str,
    username: bytes,
    secret: bytes,
    salt: bytes,
    params: verifier.ScryptParams,
    expires: int = 0,
) -> bytes:
    """The key-encryption key of a secret (slow by design: run it off the reactor)."""
    return verifier.derive(_bound(kind, username, secret, expires), salt, params, KEY_BYTES)


def wrap_with(
    key_encryption_key: bytes,
    data_key: bytes,
    kind: str,
    account: int,
    salt: bytes,
    params: verifier.ScryptParams,
    expires: int = 0,
) -> dict[str, Any]:
    """The wrapping record of data_key under a key-encryption key made by ``kek``."""
    if kind not in KINDS:
        raise ValueError(f"unknown wrapping kind {kind!r}")
    nonce = os.urandom(NONCE_BYTES)
    sealed = AESGCM(key_encryption_key).encrypt(
        nonce, data_key, _associated(kind, account, expires)
    )
    record: dict[str, Any] = {
        "kind": kind,
        "scrypt": [params.n, params.r, params.p],
        "salt": salt.hex(),
        "nonce": nonce.hex(),
        "wrapped": sealed.hex(),
    }
    if kind == TOKEN:
        record["expires"] = expires
    return record


def wrap(
    data_key: bytes,
    kind: str,
    username: bytes,
    account: int,
    secret: bytes,
    expires: int = 0,
    params: verifier.ScryptParams = verifier.CURRENT,
) -> dict[str, Any]:
    """A new wrapping of data_key under secret (slow by design: run it off the reactor)."""
    if kind not in KINDS:
        raise ValueError(f"unknown wrapping kind {kind!r}")
    salt = os.urandom(verifier.SALT_BYTES)
    return wrap_with(
        kek(kind, username, secret, salt, params, expires),
        data_key,
        kind,
        account,
        salt,
        params,
        expires,
    )


def _parse(
    record: object, now: float
) -> tuple[str, verifier.ScryptParams, bytes, bytes, bytes, int]:
    if not isinstance(record, dict):
        raise verifier.InvalidVerifier("key wrapping is not a mapping")
    kind = record.get("kind")
    expected = _FIELDS | ({"expires"} if kind == TOKEN else set())
    if kind not in KINDS or set(record) != expected:
        raise verifier.InvalidVerifier("key wrapping has missing or unknown fields")
    costs = record["scrypt"]
    if not isinstance(costs, list) or len(costs) != 3:
        raise verifier.InvalidVerifier("scrypt parameters are not a list of three")
    params = verifier.ScryptParams(*costs)
    params.check()
    expires = record.get("expires", 0)
    if kind == TOKEN and (type(expires) is not int or not 0 < expires <= now + MAX_LIFETIME):
        raise verifier.InvalidVerifier("token wrapping expiry is not a sane time")
    return (
        kind,
        params,
        verifier.hex_field(record["salt"], "salt", verifier.SALT_BYTES),
        verifier.hex_field(record["nonce"], "nonce", NONCE_BYTES),
        verifier.hex_field(record["wrapped"], "wrapped key", KEY_BYTES + TAG_BYTES),
        expires,
    )


def problem(record: object, now: float) -> str | None:
    """Why a wrapping cannot be used (for the log), or None."""
    try:
        _parse(record, now)
    except verifier.InvalidVerifier as exc:
        return str(exc)
    except Exception as exc:
        return f"unreadable key wrapping ({type(exc).__name__})"
    return None


def kind_of(record: object) -> str | None:
    return record.get("kind") if isinstance(record, dict) else None  # type: ignore[return-value]


def expired(record: object, now: float) -> bool:
    """A token wrapping past its expiry (or unusable); other kinds never expire."""
    try:
        kind, _, _, _, _, expires = _parse(record, now)
    except Exception:
        return True
    return kind == TOKEN and expires <= now


def unwrap(
    record: object, username: bytes, account: int, secret: bytes, now: float
) -> bytes | None:
    """The data key if secret unlocks this wrapping, else None. Never raises: any doubt
    (an unusable record, an expired token wrapping, a tag that fails) is None."""
    try:
        kind, params, salt, nonce, sealed, expires = _parse(record, now)
        if kind == TOKEN and expires <= now:
            return None
        derived = kek(kind, username, secret, salt, params, expires)
        key = AESGCM(derived).decrypt(nonce, sealed, _associated(kind, account, expires))
        return key if len(key) == KEY_BYTES else None
    except Exception:
        return None
