"""What a login does with an encrypted account's key (store/keyring.py, key_wrapping.py).

After a login is accepted (by the upstream, or offline by a stored verifier) the
registry calls ``accepted``:

- a clear account stays clear unless the upstream's configuration says ``encrypt``;
  then, at a login the upstream accepted, a data key is made, wrapped under the
  secret, and the account's replica sealed in place in one write transaction;
- an encrypted account whose key is not in memory is unlocked with the secret's
  wrapping; if none opens (the process restarted, then the password was changed
  elsewhere; an OAuth client came with a fresh token) the login is refused with
  ``CacheLocked``: NO [UNAVAILABLE], saying to run `imapproxy unlock USER`;
- with the key in memory, the secret gets a wrapping if it has none: a new upstream
  password replaces the old password's wrapping (it was changed elsewhere), a new
  token is added beside the others (as many and as long-lived as token verifiers).
  A local password `imapproxy passwd` left pending becomes a wrapping (key_drop.py).

``try_unlock`` is also how a LOGIN with the local password (or an old upstream
password) unlocks a locked account while online: what `imapproxy unlock` does.
Keys stay in memory for the life of the process. Every check fails closed: an
unusable wrapping never opens, and any exception refuses the login.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any

from twisted.internet import defer

from imapproxy.store import (
    Store,
    Tx,
    account_keys,
    key_drop,
    key_wrapping,
    offline_logins,
    verifier,
)
from imapproxy.store.accounts import Account
from imapproxy.store.keyring import AccountKey
from imapproxy.upstream.errors import UpstreamUnavailable

log = logging.getLogger(__name__)

PASSWORD = key_wrapping.PASSWORD
LOCAL = key_wrapping.LOCAL
TOKEN = key_wrapping.TOKEN


class CacheLocked(UpstreamUnavailable):
    """Credentials accepted, but no wrapping opens the account's encrypted replica."""


def locked_reason(username: str) -> str:
    return (
        "the login was accepted but the encrypted cache of this account cannot be opened "
        "with it (the password changed since the proxy started, or a new token): run "
        f"'imapproxy unlock {username}' with the old password or the local password, "
        "then log in again"
    )


class AccountKeys:
    def __init__(
        self,
        store: Store,
        in_thread: Callable[..., defer.Deferred[Any]],
        encrypt: bool = False,
        params: Callable[[], verifier.ScryptParams] = lambda: verifier.CURRENT,
    ) -> None:
        self.store = store
        #: Where scrypt runs (the registry's: a thread, or inline in unit tests).
        self.in_thread = in_thread
        #: Encrypt accounts that are clear so far (the upstream's ``encrypt`` setting).
        self.encrypt = encrypt
        #: The cost of new wrappings (the registry's verifier cost, read when needed).
        self.params = params
        self.now: Callable[[], float] = time.time

    def is_locked(self, account: Account) -> bool:
        return self.store.keyring.is_locked(account.id)

    async def try_unlock(
        self, account: Account, username: bytes, secret: bytes, kinds: tuple[str, ...]
    ) -> str | None:
        """Unlock the account with the first wrapping of these kinds (in this order)
        that secret opens; the kind that did, or None."""
        found = self.store.read(lambda tx: account_keys.wrappings(tx, account))
        now = self.now()
        for kind in kinds:
            for wrapping in found:
                if key_wrapping.kind_of(wrapping) != kind:
                    continue
                problem = key_wrapping.problem(wrapping, now)
                if problem is not None:
                    log.warning("a key wrapping of account %d is unusable: %s", account.id, problem)
                    continue
                data = await self.in_thread(
                    key_wrapping.unwrap, wrapping, username, account.id, secret, now
                )
                if isinstance(data, bytes):
                    candidate = AccountKey(data)
                    if not self._fits(account, candidate):
                        log.warning(
                            "a key wrapping of account %d opens a key that is not the "
                            "account's (tampered with?): ignored",
                            account.id,
                        )
                        continue
                    key = self.store.keyring.unlocked(account.id) or candidate
                    key.known.add(key.fingerprint(kind, secret))
                    self.store.keyring.unlock(account.id, key)
                    self.take_pending(account, key)
                    log.info("encrypted replica of account %d unlocked (%s)", account.id, kind)
                    return kind
        return None

    def _fits(self, account: Account, key: AccountKey) -> bool:
        return self.store.read(lambda tx: account_keys.key_fits(tx, account, key))

    async def accepted(
        self,
        account: Account,
        username: bytes,
        kind: str,
        secret: bytes,
        *,
        expires: int | None = None,
        may_begin: bool = False,
    ) -> None:
        """A login with secret (of kind) was accepted: see the module docstring.
        ``expires``: when a token's wrapping stops counting (None: add none).
        ``may_begin``: the upstream itself accepted it, so a clear account may be
        encrypted now. Raises CacheLocked."""
        keyring = self.store.keyring
        if not keyring.is_encrypted(account.id):
            if self.encrypt and may_begin:
                await self._begin(account, username, kind, secret, expires)
            return
        key = keyring.unlocked(account.id)
        if key is None:
            if await self.try_unlock(account, username, secret, (kind,)) is None:
                log.warning("login of account %d accepted, but its key is locked", account.id)
                raise CacheLocked(locked_reason(username.decode("utf-8", "replace")))
            return
        self.take_pending(account, key)
        if key.fingerprint(kind, secret) in key.known:
            return
        if kind == PASSWORD:
            await self._password_wrapping(account, key, username, secret)
        elif kind == TOKEN and expires is not None:
            await self._token_wrapping(account, key, username, secret, expires)

    async def _begin(
        self, account: Account, username: bytes, kind: str, secret: bytes, expires: int | None
    ) -> None:
        key = AccountKey.new()
        wrappings: list[Any] = []
        if kind == TOKEN and expires is None:
            # No lasting secret to wrap it under: encrypted all the same (that is what
            # was asked), opened only by a local password from now on.
            log.warning(
                "account %d encrypted with no token wrapping (the token is not kept): set a "
                "local password with imapproxy passwd before the proxy restarts, or its "
                "cache cannot be opened again",
                account.id,
            )
        else:
            wrappings.append(
                await self.in_thread(
                    key_wrapping.wrap,
                    key.data_key,
                    kind,
                    username,
                    account.id,
                    secret,
                    expires or 0,
                    self.params(),
                )
            )
        field: dict[str, Any] = {"wrappings": wrappings, **key_drop.new_pair(key, account.id)}

        def begin(tx: Tx) -> tuple[int, bool]:
            if account_keys.record(tx, account) is not None:
                return -1, False  # another login did it meanwhile
            local = offline_logins.get_local_password(tx, account) is not None
            return account_keys.encrypt_in_place(tx, account, key, field), local

        sealed, local = self.store.write(begin)
        if sealed < 0:
            return
        if wrappings:
            key.known.add(key.fingerprint(kind, secret))
        log.info("replica of account %d encrypted (%d records sealed)", account.id, sealed)
        if local:
            log.warning(
                "account %d: its local password was set before the encryption and does not "
                "open it: set it again with imapproxy passwd",
                account.id,
            )

    async def _password_wrapping(
        self, account: Account, key: AccountKey, username: bytes, secret: bytes
    ) -> None:
        """Keep the password wrapping if secret opens it; else replace it (the password
        was changed elsewhere: the old one's wrapping goes)."""
        now = self.now()
        old = self.store.read(lambda tx: account_keys.wrappings(tx, account))
        for wrapping in old:
            if key_wrapping.kind_of(wrapping) == PASSWORD:
                opened = await self.in_thread(
                    key_wrapping.unwrap, wrapping, username, account.id, secret, now
                )
                if opened == key.data_key:
                    key.known.add(key.fingerprint(PASSWORD, secret))
                    return
        new = await self.in_thread(
            key_wrapping.wrap,
            key.data_key,
            PASSWORD,
            username,
            account.id,
            secret,
            0,
            self.params(),
        )

        def replace(tx: Tx) -> None:
            kept = [
                w
                for w in account_keys.wrappings(tx, account)
                if key_wrapping.kind_of(w) != PASSWORD
            ]
            account_keys.set_wrappings(tx, account, [new, *kept])

        self.store.write(replace)
        key.known.add(key.fingerprint(PASSWORD, secret))
        log.info("account %d: a wrapping for its new password replaces the old", account.id)

    async def _token_wrapping(
        self, account: Account, key: AccountKey, username: bytes, token: bytes, expires: int
    ) -> None:
        new = await self.in_thread(
            key_wrapping.wrap,
            key.data_key,
            TOKEN,
            username,
            account.id,
            token,
            expires,
            self.params(),
        )
        now = self.now()

        def add(tx: Tx) -> None:
            kept: list[Any] = [new]
            others = []
            for w in account_keys.wrappings(tx, account):
                if key_wrapping.kind_of(w) != TOKEN:
                    others.append(w)
                elif not key_wrapping.expired(w, now) and len(kept) < offline_logins.MAX_TOKENS:
                    kept.append(w)
            account_keys.set_wrappings(tx, account, [*others, *kept])

        self.store.write(add)
        key.known.add(key.fingerprint(TOKEN, token))

    def take_pending(self, account: Account, key: AccountKey | None = None) -> None:
        """Turn a local password `imapproxy passwd` left pending into a wrapping (if
        the key is in memory; otherwise it waits)."""
        found = key or self.store.keyring.unlocked(account.id)
        if found is None:
            return
        unlocked: AccountKey = found

        def take(tx: Tx) -> bool:
            field = account_keys.record(tx, account)
            if field is None or "pending_local" not in field:
                return False
            wrapping = key_drop.open_local(field, unlocked, account.id)
            if wrapping is not None:  # the new local password's wrapping replaces the old
                kept = [
                    w
                    for w in account_keys.wrappings(tx, account)
                    if key_wrapping.kind_of(w) != LOCAL
                ]
                account_keys.set_wrappings(tx, account, [*kept, wrapping])
            account_keys.set_entry(tx, account, "pending_local", None)
            return wrapping is not None

        if self.store.read(lambda tx: "pending_local" in (account_keys.record(tx, account) or {})):
            if self.store.write(take):
                log.info("account %d: its new local password now unlocks it", account.id)
            else:
                log.warning(
                    "account %d: a pending local password did not open: dropped", account.id
                )
