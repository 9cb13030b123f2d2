"""Closing accounts that no session uses, so a gateway's upstream connections follow its
users instead of piling up.

Each account counts its users: every session logged in to it, and every login still
being checked (so an account is never closed under a login that is about to get it).
When the count falls to zero a timer starts; if nothing has used the account when it
fires, the account is closed (``AccountRegistry.close_account``): a last attempt to
send what its outbox holds, then its upstream connection logs out and its runtime is
dropped. What could not be sent stays in the store and is replayed when the account
opens again at its next login. Nothing is lost by closing; only the connection goes.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Coroutine
from typing import Any

from twisted.internet import defer

log = logging.getLogger(__name__)

#: (upstream URL, login name): the store's own identity of an account.
AccountKey = tuple[str, str]
Closer = Callable[[AccountKey, Callable[[], bool]], Coroutine[Any, Any, None]]


class IdleAccounts:
    """Use counts per account, and the timers that close the unused ones.

    ``close(key, still_idle)`` closes one account; it must check ``still_idle()`` at
    the moment it commits to closing (a login may have come in while it waited).
    ``idle_seconds`` 0 turns closing off.
    """

    def __init__(self, clock: Any, idle_seconds: float, close: Closer) -> None:
        self.clock = clock
        self.idle_seconds = idle_seconds
        self._close = close
        self._users: dict[AccountKey, int] = {}
        self._timers: dict[AccountKey, Any] = {}

    def users(self, key: AccountKey) -> int:
        return self._users.get(key, 0)

    @property
    def sessions(self) -> int:
        """Sessions (and logins being checked) over all accounts."""
        return sum(self._users.values())

    @property
    def accounts(self) -> int:
        """Accounts open: in use, or unused and waiting for their idle time to pass."""
        return len(self._users) + len(self._timers)

    def begin(self, key: AccountKey) -> None:
        """A session or a login starts using the account: no closing now."""
        self._users[key] = self.users(key) + 1
        timer = self._timers.pop(key, None)
        if timer is not None and timer.active():
            timer.cancel()

    def end(self, key: AccountKey) -> None:
        """One user fewer; the last one starts the idle timer."""
        left = self.users(key) - 1
        if left > 0:
            self._users[key] = left
            return
        self._users.pop(key, None)
        if self.idle_seconds > 0 and key not in self._timers:
            self._timers[key] = self.clock.callLater(self.idle_seconds, self._expire, key)

    def _expire(self, key: AccountKey) -> None:
        self._timers.pop(key, None)
        if self.users(key):
            return
        log.info(
            "closing account of %r at %s: unused for %.0f s", key[1], key[0], self.idle_seconds
        )
        defer.ensureDeferred(self._close(key, lambda: self.users(key) == 0)).addErrback(
            lambda failure: log.warning("closing an unused account failed: %s", failure.value)
        )

    def stop(self) -> None:
        """The proxy stops: no timer may fire into a closed store."""
        for timer in self._timers.values():
            if timer.active():
                timer.cancel()
        self._timers.clear()
