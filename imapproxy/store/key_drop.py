"""Handing a new local password's key to the proxy without holding the data key.

`imapproxy passwd` runs beside the proxy and has no account key: an OAuth user has no
lasting secret to unlock it with. So each encrypted account has an X25519 key pair,
its public half in clear in the account record and its private half sealed under the
data key. passwd derives the local password's key-encryption key (scrypt, a fresh
salt, as key_wrapping.py would), seals it to the public key (an ephemeral X25519
exchange, HKDF, AES-GCM) and leaves it as ``pending_local``. The proxy, the next time
it holds the data key (a login, an unlock), opens it and stores an ordinary ``local``
wrapping of the data key under that key-encryption key, then drops the pending record.

Nothing in the pending record lets anyone without the data key (or the password)
recover either: the key-encryption key is sealed to a key only the data key opens.
"""

from __future__ import annotations

import os
from typing import Any

from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from imapproxy.store import key_wrapping, verifier
from imapproxy.store.keyring import KEY_BYTES, NONCE_BYTES, AccountKey

_RAW = serialization.Encoding.Raw
_PUBLIC_RAW = serialization.PublicFormat.Raw
_PRIVATE_RAW = serialization.PrivateFormat.Raw
_FIELDS = {"scrypt", "salt", "ephemeral", "nonce", "sealed"}


def _private_slot(account: int) -> bytes:
    """Where the sealed private key would live if it were a record (its associated data)."""
    return b"x25519:%d" % account


def new_pair(key: AccountKey, account: int) -> dict[str, str]:
    """A key pair for the encryption field: public in clear, private sealed under key."""
    private = X25519PrivateKey.generate()
    raw = private.private_bytes(_RAW, _PRIVATE_RAW, serialization.NoEncryption())
    public = private.public_key().public_bytes(_RAW, _PUBLIC_RAW)
    return {
        "public": public.hex(),
        "private": key.seal(b"accounts", _private_slot(account), raw).hex(),
    }


def _channel_key(shared: bytes, ephemeral: bytes, public: bytes) -> bytes:
    return HKDF(
        hashes.SHA256(), KEY_BYTES, salt=None, info=b"imapproxy key drop" + ephemeral + public
    ).derive(shared)


def _associated(account: int) -> bytes:
    return b"imapproxy-local-drop\0%d" % account


def seal_local(
    field: dict[str, Any],
    account: int,
    username: bytes,
    password: bytes,
    params: verifier.ScryptParams = verifier.CURRENT,
) -> dict[str, Any]:
    """The pending record for a new local password (slow: one scrypt)."""
    public = bytes.fromhex(field["public"])
    salt = os.urandom(verifier.SALT_BYTES)
    kek = key_wrapping.kek(key_wrapping.LOCAL, username, password, salt, params)
    ephemeral = X25519PrivateKey.generate()
    ephemeral_public = ephemeral.public_key().public_bytes(_RAW, _PUBLIC_RAW)
    shared = ephemeral.exchange(X25519PublicKey.from_public_bytes(public))
    nonce = os.urandom(NONCE_BYTES)
    sealed = AESGCM(_channel_key(shared, ephemeral_public, public)).encrypt(
        nonce, kek, _associated(account)
    )
    return {
        "scrypt": [params.n, params.r, params.p],
        "salt": salt.hex(),
        "ephemeral": ephemeral_public.hex(),
        "nonce": nonce.hex(),
        "sealed": sealed.hex(),
    }


def open_local(field: dict[str, Any], key: AccountKey, account: int) -> dict[str, Any] | None:
    """The ``local`` wrapping a pending record stands for, or None if there is none or
    it does not open (then it is dropped all the same: it can never open). Raises
    nothing on bad data."""
    pending = field.get("pending_local")
    if not isinstance(pending, dict) or set(pending) != _FIELDS:
        return None
    try:
        costs = pending["scrypt"]
        params = verifier.ScryptParams(*costs)
        params.check()
        salt = verifier.hex_field(pending["salt"], "salt", verifier.SALT_BYTES)
        raw = key.open(b"accounts", _private_slot(account), bytes.fromhex(field["private"]))
        private = X25519PrivateKey.from_private_bytes(raw)
        public = private.public_key().public_bytes(_RAW, _PUBLIC_RAW)
        ephemeral = bytes.fromhex(pending["ephemeral"])
        shared = private.exchange(X25519PublicKey.from_public_bytes(ephemeral))
        kek = AESGCM(_channel_key(shared, ephemeral, public)).decrypt(
            bytes.fromhex(pending["nonce"]), bytes.fromhex(pending["sealed"]), _associated(account)
        )
        return key_wrapping.wrap_with(kek, key.data_key, key_wrapping.LOCAL, account, salt, params)
    except Exception:
        return None
