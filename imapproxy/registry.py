"""Login: credentials go to the upstream; the proxy keeps only a verifier.

The first login of a user opens an upstream connection with the client's own
credentials; if the upstream accepts them, the account's runtime is created and a
salted scrypt verifier stored, so the user can log in while the upstream is
unreachable. One user's runtime is never handed to another.

Which check decides a login:
- the account's upstream connection is up and was logged in with these very bytes:
  the upstream accepted them moments ago, reuse the runtime (constant-time compare);
- otherwise the upstream decides (a password changed or revoked upstream stops
  working here at the next upstream login);
- the upstream is unreachable: the stored verifier decides, and only the verifier.
  A verifier with outdated cost parameters is re-derived with the current ones after
  it matched; a verifier that is missing or unusable refuses.

Every attempt first goes through the LoginLimiter (failed logins cost time, per source
and per user). It fails closed: wrong credentials are LoginFailed; an exception of any
other type while checking propagates, so the client gets NO, never a session.
"""

from __future__ import annotations

import hmac
import logging
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from twisted.internet import defer, threads

from imapproxy.account import AccountRuntime
from imapproxy.login_limits import LoginLimiter, LoginPenalty
from imapproxy.notify import Notifier
from imapproxy.outbox.runner import WAIT_SECONDS
from imapproxy.protocol import DEFAULT_MAX_LITERAL
from imapproxy.store import Store, accounts, verifier
from imapproxy.store import status as status_record
from imapproxy.sync.background import DEFAULT_INTERVAL
from imapproxy.sync.prefetch import PrefetchPolicy
from imapproxy.upstream.address import UpstreamAddress
from imapproxy.upstream.client import UpstreamClient
from imapproxy.upstream.errors import (
    AuthenticationFailed,
    UpstreamUnavailable,
    UpstreamUnreachable,
)
from imapproxy.upstream.link import UpstreamLink

log = logging.getLogger(__name__)


class LoginFailed(Exception):
    """Wrong credentials: answer NO [AUTHENTICATIONFAILED]."""


class AccountRegistry:
    def __init__(
        self,
        reactor: Any,
        store: Store,
        address: UpstreamAddress,
        ca_file: Path | None = None,
        penalty: LoginPenalty | None = None,
        *,
        limiter: LoginLimiter | None = None,
        write_wait: float = WAIT_SECONDS,
        max_message: int = DEFAULT_MAX_LITERAL,
        prefetch: PrefetchPolicy | None = None,
        sync_every: float = DEFAULT_INTERVAL,
        cache_limit: int | None = None,
    ) -> None:
        self.reactor = reactor
        self.write_wait = write_wait
        #: What each account's background work does (from the upstream's configuration).
        self.prefetch = prefetch
        self.sync_every = sync_every
        #: Bytes of cached bodies per account (None: no limit).
        self.cache_limit = cache_limit
        #: The largest body accepted from the upstream (larger literals fail its link).
        self.max_message = max_message
        self.store = store
        self.address = address
        self.ca_file = ca_file
        self.notifier = Notifier()
        #: Shared by the registries of all upstreams when given (see service.py).
        self.limiter = limiter or LoginLimiter(reactor, penalty)
        #: Cost of new verifiers; older ones are re-derived with it at the next login.
        self.verifier_params = verifier.CURRENT
        #: Where scrypt runs: a thread, so a 50 ms hash never stalls other clients
        #: (unit tests on a fake clock run it inline).
        self.in_thread: Callable[..., defer.Deferred[Any]] = threads.deferToThread
        self._runtimes: dict[str, AccountRuntime] = {}
        self._login_locks: dict[str, defer.DeferredLock] = {}
        # For `imapproxy status`: a proxy serves this state dir (accounts appear at login).
        store.write(lambda tx: status_record.put_service(tx, os.getpid(), time.time()))

    def runtimes(self) -> list[AccountRuntime]:
        """The accounts open now (for metrics)."""
        return list(self._runtimes.values())

    async def login(
        self,
        username: bytes,
        password: bytes,
        *,
        source: str,
        abandoned: Callable[[], bool] = lambda: False,
    ) -> AccountRuntime:
        """Check the credentials of a client at ``source`` (a login_limits.source_key).

        Raises LoginFailed (wrong credentials), UpstreamUnavailable (no verdict: the
        account cannot be checked now), LoginAbandoned (``abandoned()`` came true while
        the attempt waited its turn), or anything else on a bug; never returns a
        runtime unless the credentials were checked and accepted.
        """
        return await self.limiter.run(
            source,
            username,
            lambda: self._one_at_a_time(username, password),
            abandoned=abandoned,
            no_verdict=(UpstreamUnavailable,),
        )

    async def _one_at_a_time(self, username: bytes, password: bytes) -> AccountRuntime:
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
        if (
            runtime is not None
            and runtime.link.logged_in
            and hmac.compare_digest(runtime.link.password, password)
        ):
            return runtime
        if runtime is not None and runtime.link.known_down:
            # The account's own link is backing off: a new attempt would most likely
            # wait out its timeout. Offline, the verifier decides at once.
            reason = UpstreamUnreachable("the upstream is unreachable (the link is backing off)")
            return await self._offline_login(name, password, None, reason)
        link = UpstreamLink(
            self.reactor,
            self.address,
            username,
            password,
            self.ca_file,
            max_message=self.max_message,
        )
        try:
            await link.use(_check)
        except AuthenticationFailed as exc:
            log.info("login refused by upstream for %r: %s", name, exc.text)
            raise LoginFailed() from None
        except UpstreamUnavailable as exc:
            log.warning("upstream unavailable at login of %r: %s", name, exc)
            try:
                runtime = await self._offline_login(name, password, link, exc)
            except BaseException:
                defer.ensureDeferred(link.close())  # its attempt may still be running
                raise
            if runtime.link is not link:
                defer.ensureDeferred(link.close())
            return runtime
        try:
            return await self._accepted_upstream(name, password, link, runtime)
        except BaseException:
            # Accepted upstream, but not here: don't leave that session open behind us.
            defer.ensureDeferred(link.close())
            raise

    async def _accepted_upstream(
        self, name: str, password: bytes, link: UpstreamLink, runtime: AccountRuntime | None
    ) -> AccountRuntime:
        url = self.address.url()
        record = await self.in_thread(accounts.make_verifier, password, self.verifier_params)
        account = self.store.write(lambda tx: accounts.ensure_account(tx, url, name))
        self.store.write(lambda tx: accounts.set_verifier(tx, account, record))
        if runtime is not None:
            # The old link is down or had other credentials: this one replaces it.
            defer.ensureDeferred(runtime.link.close())
            runtime.attach(link)
            return runtime
        runtime = self._runtime(account, link)
        self._runtimes[name] = runtime
        return runtime

    async def _offline_login(
        self,
        name: str,
        password: bytes,
        link: UpstreamLink | None,
        reason: UpstreamUnavailable,
    ) -> AccountRuntime:
        """The verifier decides. ``link`` becomes the new runtime's link when the account
        has none yet (None only when a runtime exists)."""
        url = self.address.url()
        account = self.store.read(lambda tx: accounts.find_account(tx, url, name))
        if account is None:
            raise UpstreamUnavailable(
                f"{reason}; this account has never logged in here, so it cannot work offline"
            )
        record = self.store.read(lambda tx: accounts.get_verifier(tx, account))
        problem = verifier.problem(record)
        if problem is not None:
            log.warning("offline login of %r refused: stored verifier unusable: %s", name, problem)
            raise LoginFailed()
        matches = await self.in_thread(accounts.verifier_matches, record, password)
        if matches is not True:
            raise LoginFailed()
        if verifier.outdated(record, self.verifier_params):
            await self._upgrade_verifier(name, account, password)
        runtime = self._runtimes.get(name)
        if runtime is None:
            if link is None:
                raise UpstreamUnavailable(f"{reason}; no connection to use")
            runtime = self._runtime(account, link)
            self._runtimes[name] = runtime
        return runtime

    async def _upgrade_verifier(
        self, name: str, account: accounts.Account, password: bytes
    ) -> None:
        """Re-derive a verifier that matched with weaker parameters than ours. The
        password was checked: a failure here is logged, not held against the user."""
        try:
            record = await self.in_thread(accounts.make_verifier, password, self.verifier_params)
            self.store.write(lambda tx: accounts.set_verifier(tx, account, record))
        except Exception:
            log.exception("could not re-derive the verifier of %r", name)
        else:
            log.info("verifier of %r re-derived with the current scrypt cost", name)

    def _runtime(self, account: accounts.Account, link: UpstreamLink) -> AccountRuntime:
        return AccountRuntime(
            self.reactor,
            self.store,
            self.notifier,
            account,
            link,
            self.write_wait,
            prefetch=self.prefetch,
            sync_every=self.sync_every,
            cache_limit=self.cache_limit,
        )

    async def close_account(self, name: str, still_idle: Callable[[], bool]) -> None:
        """Close an account no session uses (its upstream connection logs out, its
        runtime goes). Its outbox is drained first, while logins may still reuse the
        runtime; what cannot be sent stays in the store for the next login's runtime.
        The close itself holds the user's login lock and happens only if
        ``still_idle()`` says no login took the account meanwhile."""
        runtime = self._runtimes.get(name)
        if runtime is None:
            return
        if runtime.outbox.pending():
            try:
                await runtime.outbox.drain()
            except Exception as exc:  # the entries stay queued; closing goes on
                log.warning("outbox of an idle account not drained: %s", exc)
        lock = self._login_locks.setdefault(name, defer.DeferredLock())
        await lock.acquire()
        try:
            if self._runtimes.get(name) is not runtime or not still_idle():
                return
            del self._runtimes[name]
            runtime.close()
            await runtime.link.close()
        finally:
            lock.release()
            if not lock.locked and not lock.waiting:
                self._login_locks.pop(name, None)

    async def close(self) -> None:
        # Sessions still closing after this must not reach into a closed store.
        self.notifier.on_watch_change.clear()
        for runtime in self._runtimes.values():
            runtime.close()
            await runtime.link.close()


async def _check(client: UpstreamClient) -> None:
    return None
