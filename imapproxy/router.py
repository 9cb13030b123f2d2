"""Which upstream a login goes to: one proxy, several providers.

Each configured upstream has its own AccountRegistry (its own runtimes, login locks and
notifier); the store keys accounts by (upstream URL, login name), so users of two
upstreams never share a replica, even with the same login name. ``LoginRouter`` picks
the registry from the address the client connected to and the login name, in
configuration order, first match wins (``UpstreamConfig`` says what matches). A login
that no upstream takes is refused as a failed login, without any upstream hearing of
it: the client learns nothing it could not learn from a wrong password.

Sessions reach it through ``ListenerLogins``, the router bound to one listener, whose
``login`` takes the same arguments as ``AccountRegistry.login`` (it passes them on),
so the login handlers do not know whether one upstream or several are configured.
"""

from __future__ import annotations

import fnmatch
import logging
from dataclasses import dataclass
from typing import Any

from imapproxy.account import AccountRuntime
from imapproxy.config import Listener, UpstreamConfig
from imapproxy.idle_accounts import AccountKey, IdleAccounts
from imapproxy.registry import AccountRegistry, LoginFailed

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Route:
    upstream: UpstreamConfig
    registry: AccountRegistry

    def takes(self, listener: str, username: str) -> bool:
        settings = self.upstream
        if settings.listeners and listener not in settings.listeners:
            return False
        if not settings.logins:
            return True
        name = username.casefold()
        return any(fnmatch.fnmatchcase(name, pattern.casefold()) for pattern in settings.logins)


class LoginRouter:
    def __init__(self, clock: Any, routes: list[Route], idle_seconds: float = 0) -> None:
        self.routes = routes
        self._by_url = {route.registry.address.url(): route.registry for route in routes}
        self.idle = IdleAccounts(clock, idle_seconds, self._close_account)

    def pick(self, listener: str, username: str) -> Route | None:
        """The first route that takes this login on this listener, or None."""
        return next((route for route in self.routes if route.takes(listener, username)), None)

    def for_listener(self, listener: Listener) -> ListenerLogins:
        return ListenerLogins(self, listener.describe())

    async def login(
        self, listener: str, username: bytes, password: bytes, **options: Any
    ) -> AccountRuntime:
        name = username.decode("utf-8", "surrogateescape")
        route = self.pick(listener, name)
        if route is None:
            log.info("login of %r on %s refused: no upstream takes it", name, listener)
            raise LoginFailed()
        key = (route.registry.address.url(), name)
        self.idle.begin(key)  # counted from now: not closed under this login
        try:
            return await route.registry.login(username, password, **options)
        except BaseException:
            self.idle.end(key)
            raise

    def release(self, runtime: AccountRuntime) -> None:
        """A session of this account ended."""
        account = runtime.account
        self.idle.end((account.upstream, account.username))

    def status(self) -> str:
        """One line for systemd's STATUS=."""
        return f"{self.idle.sessions} sessions, {self.idle.accounts} accounts open"

    async def _close_account(self, key: AccountKey, still_idle: Any) -> None:
        registry = self._by_url.get(key[0])
        if registry is not None:
            await registry.close_account(key[1], still_idle)

    async def close(self) -> None:
        self.idle.stop()
        for route in self.routes:
            await route.registry.close()


class ListenerLogins:
    """The router as the sessions of one listener see it."""

    def __init__(self, router: LoginRouter, listener: str) -> None:
        self.router = router
        self.listener = listener

    async def login(self, username: bytes, password: bytes, **options: Any) -> AccountRuntime:
        return await self.router.login(self.listener, username, password, **options)

    def release(self, runtime: AccountRuntime) -> None:
        self.router.release(runtime)

    def advertised_mechanisms(self) -> frozenset[str]:
        """What to advertise before the login name is known: a mechanism only if every
        upstream a login on this listener may go to offers it. Whichever upstream the
        name then picks can take it, so no advertised mechanism fails for lack of
        support (a client that uses one we did not advertise is still passed on)."""
        offers = [
            route.registry.advertised_mechanisms()
            for route in self.router.routes
            if not route.upstream.listeners or self.listener in route.upstream.listeners
        ]
        return frozenset.intersection(*offers) if offers else frozenset()
