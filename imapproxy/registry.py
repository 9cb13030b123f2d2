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

OAuth2 (XOAUTH2, OAUTHBEARER) logins follow the same rules with a bearer token in place
of the password (``Secret`` says which it is): the upstream decides online, and each
token it accepts is kept as a verifier for a limited time; offline, only such a token
of this user, not yet expired, logs in (``store.offline_logins``). A local password
(``imapproxy passwd``) is the other offline way in; it is never sent upstream by us.

Encrypted accounts (``encrypt``; unlocking.py): an accepted login must also open the
account's key, or it is refused with NO [UNAVAILABLE] and the hint to run `imapproxy
unlock`. While such an account is locked, a LOGIN whose password opens its key through
the local password's wrapping is accepted locally, online too (it never goes upstream),
and so is an old upstream password whose wrapping opens it when the upstream refuses
it: that is how `imapproxy unlock` brings the key back after a restart.

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
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from twisted.internet import defer, threads

from imapproxy import sasl
from imapproxy.account import AccountRuntime
from imapproxy.login_limits import LoginLimiter, LoginPenalty
from imapproxy.notify import Notifier
from imapproxy.outbox.runner import WAIT_SECONDS
from imapproxy.protocol import DEFAULT_MAX_LITERAL
from imapproxy.store import Store, Tx, accounts, offline_logins, verifier
from imapproxy.store import status as status_record
from imapproxy.sync.background import DEFAULT_INTERVAL
from imapproxy.sync.prefetch import PrefetchPolicy
from imapproxy.unlocking import LOCAL, TOKEN, AccountKeys
from imapproxy.unlocking import PASSWORD as PASSWORD_KIND
from imapproxy.upstream.address import UpstreamAddress
from imapproxy.upstream.client import PASSWORD, UpstreamClient, probe
from imapproxy.upstream.errors import (
    AuthenticationFailed,
    UpstreamUnavailable,
    UpstreamUnreachable,
)
from imapproxy.upstream.link import UpstreamLink
from imapproxy.upstream.watcher import POLL_SECONDS

log = logging.getLogger(__name__)

#: A new login's offline verifier waits for the link to have been quiet this long
#: (seconds): its first sync is through, the CPU is free (_store_verifier_later).
VERIFIER_QUIET = 0.5
#: ... and waits no longer than this, however busy the link.
VERIFIER_AT_LATEST = 10.0


class LoginFailed(Exception):
    """Wrong credentials: answer NO [AUTHENTICATIONFAILED]. ``error_json``: the
    upstream's RFC 7628 error for a refused token, passed on to the client."""

    def __init__(self, error_json: bytes | None = None) -> None:
        super().__init__()
        self.error_json = error_json


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
        poll_every: float = POLL_SECONDS,
        token_lifetime: float = offline_logins.DEFAULT_TOKEN_LIFETIME,
        cache_limit: int | None = None,
        encrypt: bool = False,
    ) -> None:
        self.reactor = reactor
        #: Seconds a token the upstream accepted may log its user in offline.
        self.token_lifetime = token_lifetime
        #: Wall-clock time (token expiries are Unix times, as a JWT's ``exp``).
        self.now: Callable[[], float] = time.time
        self.write_wait = write_wait
        #: What each account's background work does (from the upstream's configuration).
        self.prefetch = prefetch
        self.sync_every = sync_every
        self.poll_every = poll_every
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
        #: How long the link must have had nothing to do before a new login's offline
        #: verifier is derived (_store_verifier_later); 0: at once.
        self.verifier_quiet = VERIFIER_QUIET
        #: Encrypted replicas: the keys a login must open (unlocking.py).
        self.keys = AccountKeys(
            store, lambda *a: self.in_thread(*a), encrypt, lambda: self.verifier_params
        )
        self.keys.now = lambda: self.now()
        self._runtimes: dict[str, AccountRuntime] = {}
        self._login_locks: dict[str, defer.DeferredLock] = {}
        #: Login name -> the newest verifier derivation started (_store_verifier_later).
        self._verifier_generation: dict[str, int] = {}
        #: Login name -> (hurry, done) of the newest derivation not yet settled.
        self._verifiers_due: dict[str, tuple[defer.Deferred[None], defer.Deferred[None]]] = {}
        #: The OAuth mechanisms the upstream offers, as last seen (None: not known yet).
        self.offered_mechanisms: frozenset[str] | None = store.read(
            lambda tx: offline_logins.get_mechanisms(tx, address.url())
        )
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
        mechanism: str = PASSWORD,
    ) -> AccountRuntime:
        """Check the credentials of a client at ``source`` (a login_limits.source_key).
        ``password`` is a bearer token when ``mechanism`` is XOAUTH2 or OAUTHBEARER.

        Raises LoginFailed (wrong credentials), UpstreamUnavailable (no verdict: the
        account cannot be checked now), LoginAbandoned (``abandoned()`` came true while
        the attempt waited its turn), or anything else on a bug; never returns a
        runtime unless the credentials were checked and accepted.
        """
        secret = Secret(mechanism, password)
        name = username.decode("utf-8", "surrogateescape")
        runtime = await self.limiter.run(
            source,
            username,
            lambda: self._one_at_a_time(username, secret),
            abandoned=abandoned,
            no_verdict=(UpstreamUnavailable,),
            fast=lambda: self._accepted_just_now(name, secret),
        )
        if self.store.keyring.any:
            self.keys.take_pending(runtime.account)  # an `imapproxy passwd` meanwhile
        return runtime

    def _accepted_just_now(self, name: str, secret: Secret) -> AccountRuntime | None:
        """The open runtime whose upstream connection is logged in with exactly these
        credentials (constant-time compare), else None: a check that costs nothing and
        can only succeed, so the limiter may run it before its line."""
        runtime = self._runtimes.get(name)
        if (
            runtime is not None
            and runtime.link.logged_in
            and runtime.link.mechanism == secret.mechanism
            and hmac.compare_digest(runtime.link.password, secret.value)
        ):
            return runtime
        return None

    async def _one_at_a_time(self, username: bytes, password: Secret) -> AccountRuntime:
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

    async def _login(self, name: str, username: bytes, password: Secret) -> AccountRuntime:
        accepted = self._accepted_just_now(name, password)
        if accepted is not None:
            return accepted
        runtime = self._runtimes.get(name)
        old_password = False
        if password.mechanism == PASSWORD:
            unlocked = await self._unlock_locally(name, username, password.value)
            if unlocked == LOCAL:
                return self._local_runtime(name, username)
            old_password = unlocked is not None
        if runtime is not None and runtime.link.known_down:
            # The account's own link is backing off: a new attempt would most likely
            # wait out its timeout. Offline, the verifier decides at once.
            reason = UpstreamUnreachable("the upstream is unreachable (the link is backing off)")
            try:
                return await self._offline_login(name, username, password, None, reason)
            except LoginFailed:
                if not old_password:
                    raise
                return self._local_runtime(name, username)
        link = UpstreamLink(
            self.reactor,
            self.address,
            username,
            password.value,
            self.ca_file,
            max_message=self.max_message,
            mechanism=password.mechanism,
        )
        try:
            await link.use(self._learn_mechanisms)
        except AuthenticationFailed as exc:
            log.info("login refused by upstream for %r: %s", name, exc.text)
            if old_password:
                # It opened the key of the locked account: the old password, an unlock.
                defer.ensureDeferred(link.close())
                return self._local_runtime(name, username)
            raise LoginFailed(getattr(exc, "error_json", None)) from None
        except UpstreamUnavailable as exc:
            log.warning("upstream unavailable at login of %r: %s", name, exc)
            try:
                runtime = await self._offline_login(name, username, password, link, exc)
            except LoginFailed:
                defer.ensureDeferred(link.close())  # its attempt may still be running
                if not old_password:
                    raise
                # Not the password the verifier knows, but it opened the key: an unlock.
                return self._local_runtime(name, username)
            except BaseException:
                defer.ensureDeferred(link.close())
                raise
            if runtime.link is not link:
                defer.ensureDeferred(link.close())
            return runtime
        try:
            return await self._accepted_upstream(name, username, password, link, runtime)
        except BaseException:
            # Accepted upstream, but not here: don't leave that session open behind us.
            defer.ensureDeferred(link.close())
            raise

    async def _accepted_upstream(
        self,
        name: str,
        username: bytes,
        password: Secret,
        link: UpstreamLink,
        runtime: AccountRuntime | None,
    ) -> AccountRuntime:
        url = self.address.url()
        account = self.store.write(lambda tx: accounts.ensure_account(tx, url, name))
        if password.mechanism == PASSWORD:
            self._store_verifier_later(name, account, password.value, link)
            await self.keys.accepted(
                account, username, PASSWORD_KIND, password.value, may_begin=True
            )
        else:
            expires = await self._remember_token(name, account, username, password.value)
            await self.keys.accepted(
                account, username, TOKEN, password.value, expires=expires, may_begin=True
            )
        if runtime is not None:
            # The old link is down or had other credentials: this one replaces it.
            defer.ensureDeferred(runtime.link.close())
            runtime.attach(link)
            return runtime
        runtime = self._runtime(account, link)
        self._runtimes[name] = runtime
        return runtime

    def _store_verifier_later(
        self, name: str, account: accounts.Account, password: bytes, link: UpstreamLink
    ) -> None:
        """Derive and store the offline verifier of a password the upstream just accepted,
        after the client has its answer: the scrypt (about 100 ms in a thread) was most
        of a first login's time on a fast link. Only the newest login's verifier is kept
        when two derivations overlap; until it is stored, an offline login checks the
        previous one (the upstream accepted this password moments ago: it is online).

        Once the link is quiet (``_until_quiet``): run at once, the scrypt (16 MB, on a
        second core) ran beside the account's first sync and the client reading it, and
        a cold 10,000-message session at 50 ms took 0.06 s longer without the client's
        parse (medians of 6, three trees alternating; a lower CPU priority for its
        thread gained nothing). An offline login does not wait for the quiet: it asks
        for the verifier at once (``_verifier_now``)."""
        generation = self._verifier_generation.get(name, 0) + 1
        self._verifier_generation[name] = generation
        hurry: defer.Deferred[None] = defer.Deferred()

        async def derive() -> None:
            await self._until_quiet(link, hurry)
            record = await self.in_thread(accounts.make_verifier, password, self.verifier_params)
            if self._verifier_generation.get(name) == generation:
                self.store.write(lambda tx: accounts.set_verifier(tx, account, record))
                log.info("offline verifier of %r stored", name)

        done = defer.ensureDeferred(derive())
        done.addErrback(
            lambda f: log.error("could not store the offline verifier of %r: %s", name, f.value)
        )
        self._verifiers_due[name] = (hurry, done)

        def settled(result: object) -> object:
            if self._verifiers_due.get(name, (None, None))[1] is done:
                del self._verifiers_due[name]
            return result

        done.addBoth(settled)

    async def _until_quiet(self, link: UpstreamLink, hurry: defer.Deferred[None]) -> None:
        """Until the link has had nothing to do for ``verifier_quiet`` seconds (a client
        that logs in lists and opens folders next: the first wait lets that begin),
        VERIFIER_AT_LATEST seconds have passed, or hurry fires."""
        quiet = self.verifier_quiet
        began = self.reactor.seconds()
        step = quiet
        while step > 0 and not hurry.called:
            left = VERIFIER_AT_LATEST - (self.reactor.seconds() - began)
            if left <= 0:
                return
            wake: defer.Deferred[None] = defer.Deferred()
            call = self.reactor.callLater(min(step, left), wake.callback, None)

            def hurried(
                result: object, wake: defer.Deferred[None] = wake, call: Any = call
            ) -> object:
                if call.active():
                    call.cancel()
                    wake.callback(None)
                return result

            hurry.addBoth(hurried)
            await wake
            step = quiet - link.quiet_for()

    async def _verifier_now(self, name: str) -> None:
        """The newest login's verifier, derived now if it waits for a quiet link and
        stored before this returns: an offline login right after the link went down
        must find the password it just used."""
        due = self._verifiers_due.get(name)
        if due is None:
            return
        hurry, done = due
        if not hurry.called:
            hurry.callback(None)
        finished: defer.Deferred[None] = defer.Deferred()

        def settled(result: object) -> object:
            finished.callback(None)
            return result

        done.addBoth(settled)
        await finished

    async def _offline_login(
        self,
        name: str,
        username: bytes,
        password: Secret,
        link: UpstreamLink | None,
        reason: UpstreamUnavailable,
    ) -> AccountRuntime:
        """The stored verifiers decide. ``link`` becomes the new runtime's link when the
        account has none yet (None only when a runtime exists)."""
        await self._verifier_now(name)
        url = self.address.url()
        account = self.store.read(lambda tx: accounts.find_account(tx, url, name))
        if account is None:
            raise UpstreamUnavailable(
                f"{reason}; this account has never logged in here, so it cannot work offline"
            )
        local = False
        if password.mechanism == PASSWORD:
            local = await self._offline_password(name, username, account, password.value)
            kind = LOCAL if local else PASSWORD_KIND
        else:
            await self._offline_token(name, username, account, password.value)
            kind = TOKEN
        await self.keys.accepted(account, username, kind, password.value)
        runtime = self._runtimes.get(name)
        if runtime is None:
            if link is None:
                raise UpstreamUnavailable(f"{reason}; no connection to use")
            if local:
                # The local password is not the upstream's: it must never be sent there.
                link = _OfflineOnlyLink(self.reactor, self.address, username, b"", self.ca_file)
            runtime = self._runtime(account, link)
            self._runtimes[name] = runtime
        return runtime

    async def _offline_password(
        self, name: str, username: bytes, account: accounts.Account, password: bytes
    ) -> bool:
        """The upstream password's verifier, else the local password (``imapproxy
        passwd``); LoginFailed unless one matches, True if it was the local one. A
        stored verifier that is present but unusable refuses outright (an OAuth-only
        account simply has none)."""
        record, local = self.store.read(
            lambda tx: (
                accounts.get_verifier(tx, account),
                offline_logins.get_local_password(tx, account),
            )
        )
        for kind, found in (("verifier", record), ("local password", local)):
            problem = None if found is None else verifier.problem(found)
            if problem is not None:
                log.warning(
                    "offline login of %r refused: stored %s unusable: %s", name, kind, problem
                )
                raise LoginFailed()
        if record is None and local is None:
            log.warning(
                "offline login of %r refused: stored verifier unusable: none stored (a "
                "token account without a local password)",
                name,
            )
            raise LoginFailed()
        matched = record is not None and await self.in_thread(
            accounts.verifier_matches, record, password
        )
        if matched is True:
            if verifier.outdated(record, self.verifier_params):
                await self._upgrade_verifier(name, account, password)
            return False
        if local is not None:
            matched = await self.in_thread(
                offline_logins.local_password_matches, local, username, password
            )
            if matched is True:
                log.info("offline login of %r with its local password", name)
                return True
        raise LoginFailed()

    async def _offline_token(
        self, name: str, username: bytes, account: accounts.Account, token: bytes
    ) -> None:
        """A token the upstream accepted for this user before, not yet expired."""
        records = self.store.read(lambda tx: offline_logins.get_tokens(tx, account))
        now = self.now()
        problem = offline_logins.token_records_problem(records, now)
        if problem is not None:
            log.warning(
                "offline token login of %r refused: stored verifiers unusable: %s", name, problem
            )
            raise LoginFailed()
        matched = await self.in_thread(offline_logins.token_matches, records, username, token, now)
        if matched is not True:
            raise LoginFailed()
        log.info("offline login of %r with a token the upstream accepted before", name)

    async def _remember_token(
        self, name: str, account: accounts.Account, username: bytes, token: bytes
    ) -> int | None:
        """Keep a verifier of a token the upstream just accepted, until the configured
        lifetime or the token's own expiry, whichever comes first; returns that expiry
        (None: not kept)."""
        now = self.now()
        expires = now + self.token_lifetime
        claimed = sasl.token_expiry(token)
        if claimed is not None:
            expires = min(expires, claimed)
        if expires <= now + 1:
            log.info("token of %r expires now: not kept for offline logins", name)
            return None
        record = await self.in_thread(
            offline_logins.make_token_record, username, token, int(expires), self.verifier_params
        )

        def store(tx: Tx) -> None:
            old = offline_logins.get_tokens(tx, account)
            offline_logins.set_tokens(tx, account, offline_logins.with_token(old, record, now))

        self.store.write(store)
        return int(expires)

    async def _unlock_locally(self, name: str, username: bytes, password: bytes) -> str | None:
        """For an encrypted account whose key is locked: open it with the local
        password's or a password wrapping; the kind that opened it, or None."""
        url = self.address.url()
        account = self.store.read(lambda tx: accounts.find_account(tx, url, name))
        if account is None or not self.keys.is_locked(account):
            return None
        return await self.keys.try_unlock(account, username, password, (LOCAL, PASSWORD_KIND))

    def _local_runtime(self, name: str, username: bytes) -> AccountRuntime:
        """The account's runtime after a login accepted here only (its key opened with
        a password the upstream does not take): never sends that password upstream."""
        runtime = self._runtimes.get(name)
        if runtime is not None:
            return runtime
        url = self.address.url()
        account = self.store.read(lambda tx: accounts.find_account(tx, url, name))
        if account is None:  # opened a key, so it exists; fail closed all the same
            raise LoginFailed()
        link = _OfflineOnlyLink(self.reactor, self.address, username, b"", self.ca_file)
        runtime = self._runtime(account, link)
        self._runtimes[name] = runtime
        log.info("login of %r accepted here: it unlocked the encrypted replica", name)
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

    def advertised_mechanisms(self) -> frozenset[str]:
        """The OAuth mechanisms a client may be offered: what the upstream offered when
        last asked (remembered across restarts, so offline logins are offered them too)."""
        return self.offered_mechanisms or frozenset()

    async def _learn_mechanisms(self, client: UpstreamClient) -> None:
        """Note what the upstream offers (for what sessions advertise before login)."""
        self.note_mechanisms(client.offered_mechanisms)

    def note_mechanisms(self, mechanisms: frozenset[str]) -> None:
        if mechanisms == self.offered_mechanisms:
            return
        self.offered_mechanisms = mechanisms
        url = self.address.url()
        self.store.write(lambda tx: offline_logins.set_mechanisms(tx, url, mechanisms))
        log.info("%s offers OAuth mechanisms: %s", url, " ".join(sorted(mechanisms)) or "none")

    async def probe_mechanisms(self, timeout: float = 20.0) -> None:
        """Ask the upstream (before any login) which OAuth mechanisms it offers; an
        unreachable upstream leaves what was known. Never raises."""
        try:
            found = await probe(self.reactor, self.address, self.ca_file, timeout=timeout)
        except Exception as exc:
            log.info("could not ask %s for its mechanisms: %s", self.address.url(), exc)
            return
        self.note_mechanisms(found)

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
            poll_every=self.poll_every,
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
        # A verifier still waiting for a quiet link is derived and stored now: the
        # next start may be offline (a restart right after a first login).
        for name in list(self._verifiers_due):
            await self._verifier_now(name)
        # Sessions still closing after this must not reach into a closed store.
        self.notifier.on_watch_change.clear()
        for runtime in self._runtimes.values():
            runtime.close()
            await runtime.link.close()


@dataclass(frozen=True)
class Secret:
    """What a client logged in with: a password, or a bearer token and its mechanism."""

    mechanism: str
    value: bytes

    def __repr__(self) -> str:
        return f"Secret({self.mechanism}, <redacted>)"


async def _no_credentials(*args: Any, **kwargs: Any) -> UpstreamClient:
    raise UpstreamUnreachable(
        "logged in offline with the local password: the upstream needs a login with the "
        "account's own credentials"
    )


class _OfflineOnlyLink(UpstreamLink):
    """The link of an account opened offline with its local password: it has nothing to
    log in upstream with, so every operation answers from the replica and queued changes
    wait. It never counts as known down, so the user's next login goes to the upstream
    and, accepted there, brings a real link (``_accepted_upstream``)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, connector=_no_credentials, **kwargs)

    @property
    def known_down(self) -> bool:
        return False
