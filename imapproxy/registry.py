"""Login: credentials go to the upstream; the proxy keeps only a verifier.

The first login of a user opens an upstream connection with the client's own
credentials; if the upstream accepts them, the account's runtime is created and a
salted scrypt verifier stored, so the user can log in while the upstream is
unreachable. Later logins with the same password reuse the runtime; one user's
runtime is never handed to another.
"""

from __future__ import annotations

import hmac
import logging
import os
import time
from pathlib import Path
from typing import Any

from twisted.internet import defer, threads

from imapproxy.account import AccountRuntime
from imapproxy.notify import Notifier
from imapproxy.store import Store, accounts
from imapproxy.store import status as status_record
from imapproxy.upstream.address import UpstreamAddress
from imapproxy.upstream.client import UpstreamClient
from imapproxy.upstream.errors import AuthenticationFailed, UpstreamUnavailable
from imapproxy.upstream.link import UpstreamLink

log = logging.getLogger(__name__)


class LoginFailed(Exception):
    """Wrong credentials: answer NO [AUTHENTICATIONFAILED]."""


class AccountRegistry:
    def __init__(
        self, reactor: Any, store: Store, address: UpstreamAddress, ca_file: Path | None = None
    ) -> None:
        self.reactor = reactor
        self.store = store
        self.address = address
        self.ca_file = ca_file
        self.notifier = Notifier()
        self._runtimes: dict[str, AccountRuntime] = {}
        self._login_locks: dict[str, defer.DeferredLock] = {}
        # For `imapproxy status`: a proxy serves this state dir (accounts appear at login).
        store.write(lambda tx: status_record.put_service(tx, os.getpid(), time.time()))

    async def login(self, username: bytes, password: bytes) -> AccountRuntime:
        """One login of a user at a time: clients open several connections at once, and
        two first logins must not build two runtimes (two outboxes) for one account."""
        name = username.decode("utf-8", "surrogateescape")
        lock = self._login_locks.setdefault(name, defer.DeferredLock())
        await lock.acquire()
        try:
            return await self._login(name, username, password)
        finally:
            lock.release()
            if not lock.locked and not lock.waiting:
                self._login_locks.pop(name, None)

    async def _login(self, name: str, username: bytes, password: bytes) -> AccountRuntime:
        runtime = self._runtimes.get(name)
        if runtime is not None and hmac.compare_digest(runtime.link.password, password):
            return runtime
        link = UpstreamLink(self.reactor, self.address, username, password, self.ca_file)
        url = self.address.url()
        try:
            await link.use(_check)
        except AuthenticationFailed as exc:
            log.info("login refused by upstream for %r: %s", name, exc.text)
            raise LoginFailed() from None
        except UpstreamUnavailable as exc:
            log.warning("upstream unavailable at login of %r: %s", name, exc)
            return await self._offline_login(name, password, link, exc)
        verifier = await threads.deferToThread(accounts.make_verifier, password)
        account = self.store.write(lambda tx: accounts.ensure_account(tx, url, name))
        self.store.write(lambda tx: accounts.set_verifier(tx, account, verifier))
        if runtime is not None:
            # The password changed upstream: the old link's credentials are stale.
            defer.ensureDeferred(runtime.link.close())
            runtime.attach(link)
            return runtime
        runtime = AccountRuntime(self.reactor, self.store, self.notifier, account, link)
        self._runtimes[name] = runtime
        return runtime

    async def _offline_login(
        self, name: str, password: bytes, link: UpstreamLink, reason: UpstreamUnavailable
    ) -> AccountRuntime:
        account = self.store.read(lambda tx: accounts.find_account(tx, self.address.url(), name))
        if account is None:
            raise UpstreamUnavailable(
                f"{reason}; this account has never logged in here, so it cannot work offline"
            )
        verifier = self.store.read(lambda tx: accounts.get_verifier(tx, account))
        matches = await threads.deferToThread(accounts.verifier_matches, verifier, password)
        if not matches:
            raise LoginFailed()
        runtime = self._runtimes.get(name)
        if runtime is None:
            runtime = AccountRuntime(self.reactor, self.store, self.notifier, account, link)
            self._runtimes[name] = runtime
        return runtime

    async def close(self) -> None:
        # Sessions still closing after this must not reach into a closed store.
        self.notifier.on_watch_change.clear()
        for runtime in self._runtimes.values():
            runtime.close()
            await runtime.link.close()


async def _check(client: UpstreamClient) -> None:
    return None
