"""The offline-login verifier: a salted scrypt hash, its cost parameters stored with it.

Stored as ``{"scrypt": [N, r, p], "salt": hex, "hash": hex}``. Because the parameters
travel with each record, the cost can be raised at any time: old records still verify
with their own parameters, and the next successful login re-derives them with the
current ones (``outdated``), so nobody is locked out and nobody stays on the old cost.

A record is data from disk, so it is checked before use, and every doubt means
"refuse": missing keys, wrong types, parameters outside sane bounds (an ``N`` of 2**40
would ask for terabytes; ``True`` is an int in Python but not a cost), a salt or hash
of the wrong size. ``matches`` never raises: any exception during the check is a
mismatch.
"""

from __future__ import annotations

import hashlib
import hmac
import os
from dataclasses import dataclass

#: Bounds on what a stored record may ask of us. The current cost is far below them.
MAX_MEMORY = 256 * 2**20  # scrypt needs about 128 * N * r bytes
MAX_WORK = 2**22  # N * r * p; the current cost is 2**17 (about 50 ms here)
SALT_BYTES = 16
HASH_BYTES = 32


class InvalidVerifier(ValueError):
    """A stored verifier we will not use; the message says why (never its contents)."""


@dataclass(frozen=True)
class ScryptParams:
    n: int
    r: int
    p: int

    def check(self) -> None:
        """Raise InvalidVerifier unless these are parameters we are willing to run."""
        for name, value in (("N", self.n), ("r", self.r), ("p", self.p)):
            if type(value) is not int or value < 1:
                raise InvalidVerifier(f"scrypt {name} is not a positive integer")
        if self.n < 2 or self.n & (self.n - 1):
            raise InvalidVerifier("scrypt N is not a power of two above 1")
        if 128 * self.n * self.r > MAX_MEMORY:
            raise InvalidVerifier("scrypt N * r would need too much memory")
        if self.n * self.r * self.p > MAX_WORK:
            raise InvalidVerifier("scrypt N * r * p would take too long")

    def weaker_than(self, other: ScryptParams) -> bool:
        return self.n < other.n or self.r < other.r or self.p < other.p

    @property
    def maxmem(self) -> int:
        # OpenSSL's own estimate (V and B arrays) plus room; hashlib refuses above maxmem.
        return 128 * self.r * (self.n + self.p + 2) + 2**20


#: What new verifiers use: about 50 ms and 16 MiB per check, so a stolen state
#: directory does not give cheap password guesses.
CURRENT = ScryptParams(2**14, 8, 1)


@dataclass(frozen=True)
class Verifier:
    params: ScryptParams
    salt: bytes
    digest: bytes

    @classmethod
    def from_record(cls, record: object) -> Verifier:
        """Parse a stored record; InvalidVerifier if anything about it is off."""
        if not isinstance(record, dict):
            raise InvalidVerifier("verifier record is not a mapping")
        if set(record) != {"scrypt", "salt", "hash"}:
            raise InvalidVerifier("verifier record has missing or unknown keys")
        costs, salt, digest = record["scrypt"], record["salt"], record["hash"]
        if not isinstance(costs, list) or len(costs) != 3:
            raise InvalidVerifier("scrypt parameters are not a list of three")
        params = ScryptParams(*costs)
        params.check()
        return cls(
            params, hex_field(salt, "salt", SALT_BYTES), hex_field(digest, "hash", HASH_BYTES)
        )

    def to_record(self) -> dict[str, object]:
        p = self.params
        return {"scrypt": [p.n, p.r, p.p], "salt": self.salt.hex(), "hash": self.digest.hex()}

    def matches(self, password: bytes) -> bool:
        return hmac.compare_digest(derive(password, self.salt, self.params), self.digest)


def hex_field(value: object, name: str, size: int) -> bytes:
    """A hex string of exactly size bytes from a record; InvalidVerifier otherwise."""
    if not isinstance(value, str):
        raise InvalidVerifier(f"verifier {name} is not a string")
    try:
        raw = bytes.fromhex(value)
    except ValueError:
        raise InvalidVerifier(f"verifier {name} is not hex") from None
    if len(raw) != size:
        raise InvalidVerifier(f"verifier {name} is not {size} bytes")
    return raw


def derive(secret: bytes, salt: bytes, params: ScryptParams, size: int = HASH_BYTES) -> bytes:
    """scrypt of secret with params checked first (InvalidVerifier if out of bounds).
    Also the key-encryption keys of encrypted replicas (key_wrapping.py) come from
    here, so both kinds of record share one cost and one set of bounds."""
    params.check()
    return hashlib.scrypt(
        secret,
        salt=salt,
        n=params.n,
        r=params.r,
        p=params.p,
        maxmem=params.maxmem,
        dklen=size,
    )


def make(password: bytes, params: ScryptParams = CURRENT) -> dict[str, object]:
    """A new record for password, with a fresh salt (slow: run it off the reactor)."""
    salt = os.urandom(SALT_BYTES)
    return Verifier(params, salt, derive(password, salt, params)).to_record()


def matches(record: object, password: bytes) -> bool:
    """True only if record is a usable verifier and password matches it. Never raises."""
    try:
        return Verifier.from_record(record).matches(password)
    except Exception:
        return False


def problem(record: object) -> str | None:
    """Why record cannot be used (for the log), or None if it can."""
    try:
        Verifier.from_record(record)
    except InvalidVerifier as exc:
        return str(exc)
    except Exception as exc:
        return f"unreadable verifier ({type(exc).__name__})"
    return None


def outdated(record: object, params: ScryptParams = CURRENT) -> bool:
    """True if record should be re-derived: unusable, or cheaper than params."""
    try:
        return Verifier.from_record(record).params.weaker_than(params)
    except Exception:
        return True
