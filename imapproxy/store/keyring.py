"""Encryption at rest: which accounts are encrypted, their keys in memory, sealed values.

An account with ``encrypt = true`` has a random 32-byte data key (wrapped on disk by
key_wrapping.py; in clear only here, in memory, once a secret unwrapped it). Every
value of that account in a database that holds mail content or metadata is stored as

    version(1) | nonce(12, random) | AES-GCM ciphertext and tag

with the database name and the record's key as associated data, so a value copied
to another record (another message, another account, another database) fails its
tag instead of being read as that record. ``Tx`` (``_tx.py``) seals and opens at its
get/put/scan chokepoint; the domain modules never see ciphertext.

Which databases are sealed, and why the others stay clear (``SEALED_DBS``):

- sealed: ``mailboxes`` (names, flags of folders), ``messages`` (flags, dates, sizes,
  modseqs), ``cache`` (envelopes, structures, headers, bodies), ``changes`` (what
  changed on which UID), ``outbox`` (queued changes: names, flags, whole messages),
  ``links`` (which local message became which upstream one), and in ``meta`` the
  ``subscribed_only:`` record (folder names) and ``key_check:``, a known text sealed
  under the account's key when its encryption began (account_keys.py).
- clear: ``accounts`` (wrappings, salts and verifiers: all already one-way or sealed
  under a password), ``upstream_uids`` (a local UID: the key already shows the upstream
  UID), ``blob_refs`` (0 or 1), ``usage`` and ``lru`` (sizes and read order: the cache
  limit and eviction must work, and sizes show on disk anyway), ``held`` (a time),
  ``twin_of`` (a size and the header hash of ``twins``), the meta counters, sizes,
  status and pause records (``imapproxy status`` reads them without the key), and the
  outbox *keys* (its depth) with the ``outbox_refused:`` list of sequence numbers.
- ``twins`` keys hold a hash of a message's header block; a plain hash would let
  anyone holding a guessed message (a newsletter) confirm it is cached. For an
  encrypted account it is an HMAC under a key derived from the data key
  (``AccountKey.twin_hash``), which says nothing without that key.

Failing closed: a Tx that touches a sealed record of an encrypted account whose key is
not in memory raises ``StoreLocked`` (it never returns ciphertext and never writes
plaintext); a value whose tag does not verify raises ``RecordTampered`` (never an
empty answer). The keys stay in memory for the life of the process.
"""

from __future__ import annotations

import hashlib
import hmac
import os

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

VERSION = b"\x01"
NONCE_BYTES = 12
KEY_BYTES = 32
TAG_BYTES = 16
#: Bytes a sealed value adds to its plaintext.
OVERHEAD = len(VERSION) + NONCE_BYTES + TAG_BYTES

#: Databases whose values are sealed for an encrypted account (key starts account(4)).
SEALED_DBS = frozenset({b"mailboxes", b"messages", b"cache", b"changes", b"outbox", b"links"})
#: Records of the meta database that are sealed: prefix, then account(4).
SEALED_META_PREFIXES = (b"subscribed_only:", b"key_check:")


class StoreLocked(Exception):
    """An encrypted account's records were touched while its key is not in memory."""

    def __init__(self, account: int) -> None:
        super().__init__(f"account {account} is encrypted and its key is not unlocked")
        self.account = account


class RecordTampered(Exception):
    """A sealed value that does not verify: changed, truncated, or moved from elsewhere."""


def sealed_account(db: bytes, key: bytes) -> int | None:
    """The account whose key seals this record, or None if the record stays clear."""
    if db in SEALED_DBS:
        return int.from_bytes(key[:4], "big") if len(key) >= 4 else None
    if db == b"meta":
        for prefix in SEALED_META_PREFIXES:
            if key.startswith(prefix) and len(key) == len(prefix) + 4:
                return int.from_bytes(key[len(prefix) :], "big")
    return None


def _associated(db: bytes, key: bytes) -> bytes:
    return db + b"\0" + key


def _subkey(data_key: bytes, purpose: bytes) -> bytes:
    return HKDF(hashes.SHA256(), KEY_BYTES, salt=None, info=b"imapproxy " + purpose).derive(
        data_key
    )


class AccountKey:
    """One account's data key and what is derived from it (one subkey per purpose)."""

    def __init__(self, data_key: bytes) -> None:
        if len(data_key) != KEY_BYTES:
            raise ValueError("a data key is 32 bytes")
        self.data_key = data_key
        self._aead = AESGCM(_subkey(data_key, b"values"))
        self._twins = _subkey(data_key, b"twins")
        self._fingerprints = _subkey(data_key, b"fingerprints")
        #: Fingerprints of secrets known to have a wrapping (so that a login with the
        #: same secret costs no scrypt to find out again).
        self.known: set[bytes] = set()

    @classmethod
    def new(cls) -> AccountKey:
        return cls(os.urandom(KEY_BYTES))

    def seal(self, db: bytes, key: bytes, value: bytes | bytearray) -> bytes:
        nonce = os.urandom(NONCE_BYTES)
        return VERSION + nonce + self._aead.encrypt(nonce, bytes(value), _associated(db, key))

    def open(self, db: bytes, key: bytes, value: bytes | bytearray | memoryview) -> bytes:
        """The plaintext of a sealed value; RecordTampered unless it verifies."""
        raw = bytes(value)
        if len(raw) < OVERHEAD or raw[:1] != VERSION:
            raise RecordTampered(f"a value in {db.decode()} is not sealed (or of an unknown kind)")
        nonce = raw[1 : 1 + NONCE_BYTES]
        try:
            return self._aead.decrypt(nonce, raw[1 + NONCE_BYTES :], _associated(db, key))
        except InvalidTag:
            raise RecordTampered(f"a value in {db.decode()} does not verify") from None

    def twin_hash(self, header: bytes) -> bytes:
        """The 8-byte header hash of twins.py, keyed (see the module docstring)."""
        return hmac.new(self._twins, header, hashlib.sha256).digest()[:8]

    def fingerprint(self, kind: str, secret: bytes) -> bytes:
        return hmac.new(self._fingerprints, kind.encode() + b"\0" + secret, hashlib.sha256).digest()


class Keyring:
    """Which accounts are encrypted (from their records) and the keys unlocked so far.

    The Store fills ``encrypted`` when it opens (account_keys.encrypted_accounts) and
    when a transaction that turned an account's encryption on commits.
    """

    def __init__(self) -> None:
        self._encrypted: set[int] = set()
        self._keys: dict[int, AccountKey] = {}

    @property
    def any(self) -> bool:
        return bool(self._encrypted)

    def note_encrypted(self, account: int) -> None:
        self._encrypted.add(account)

    def unlock(self, account: int, key: AccountKey) -> None:
        self._encrypted.add(account)
        self._keys[account] = key

    def is_encrypted(self, account: int) -> bool:
        return account in self._encrypted

    def is_locked(self, account: int) -> bool:
        return account in self._encrypted and account not in self._keys

    def unlocked(self, account: int) -> AccountKey | None:
        return self._keys.get(account)

    def key_of(self, account: int) -> AccountKey | None:
        """None for a clear account; the key of an unlocked one; StoreLocked otherwise."""
        if account not in self._encrypted:
            return None
        found = self._keys.get(account)
        if found is None:
            raise StoreLocked(account)
        return found
