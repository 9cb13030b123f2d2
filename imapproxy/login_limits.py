"""Failed logins cost time, across connections, per source address and per user.

Without this, a client could open fifty connections and try fifty passwords at once,
and the only brake would be whatever the upstream does (and offline, nothing: the
verifier is checked locally). The rules follow Dovecot's auth penalty (2 s, doubling,
at most 15 s) and close the gap it leaves open, parallel attempts:

- **One check at a time per source.** Attempts from one source address wait in line
  (first come, first served); the delay is taken inside the line, so parallel
  connections buy nothing. A source is an IPv4 address or an IPv6 /48 (Dovecot's
  mask: one site's addresses are one source, or a /64 would be 2^64 sources).
  Clients behind one NAT address or one director share a line; a check is one
  upstream round trip, so it stays short unless logins from there keep failing.
- **Delay before the check, from recent failures.** After n failures the next check of
  that source waits until ``initial * 2**(n-1)`` seconds (at most ``maximum``) after
  the last one. It waits even for the right password: the point is that the attacker
  cannot tell sooner.
- **Per user too, but bounded.** Failures against a user, from any source, delay that
  user's next checks from every source, up to ``user_maximum``. This slows an attack
  spread over many sources, and it is the most an attacker can make the real user,
  logging in from elsewhere, wait: the user's key is a delay, never a line, so a queue
  of an attacker's attempts can never stand in front of the real user.
- **Forgotten after quiet time.** A key with no failure for ``forget_after`` seconds
  starts afresh; a success resets the user's key. The source's key is not reset by a
  success: an attacker holding one valid account could otherwise clear its penalty
  between guesses at another.
- **Bounded memory.** Each table keeps at most ``max_entries`` keys, the least recently
  failed evicted first; user names are hashed (fixed size, whatever the client sent).
  Lines exist only while someone waits in them.
- **Fail closed.** Any exception from the check counts as a failure, except the ones the
  caller names as no verdict (the upstream was unreachable, say).
- **A known-good login skips the line.** The line is there to stop parallel guessing,
  but it also put the two hundred clients of one NAT address (or of a proxy in front)
  behind each other's first logins after a restart: LOGIN p50 was 16 s in
  ``python -m bench.load``. A caller may give a ``fast`` check: one that can only say
  "these are exactly the credentials the upstream accepted moments ago" (an open
  account), costs nothing, and has no side effect. It runs before the line, and only
  while neither the source nor the user has a failure on record, so it never cuts a
  penalty short: a wrong guess is no match and goes through the line like any other,
  where it is recorded, and from then on that source gets no fast path until its
  failures are forgotten. Anything but a match (an exception too) means "take the line".

The clock is injected (``IReactorTime``), so the rules are tested with ``task.Clock``.
"""

from __future__ import annotations

import hashlib
import ipaddress
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, TypeVar

from twisted.internet import defer, task
from twisted.internet.interfaces import IReactorTime

T = TypeVar("T")

#: IPv6 sources are grouped by this prefix (as Dovecot's auth penalty does).
IPV6_PREFIX = 48


class LoginAbandoned(Exception):
    """The client went away while its attempt waited; its credentials were not checked."""


@dataclass(frozen=True)
class LoginPenalty:
    """How much a failed login costs. The defaults are Dovecot's auth penalty."""

    initial: float = 2.0
    maximum: float = 15.0
    #: The per-user delay never exceeds this: it is what an attacker can cost the real user.
    user_maximum: float = 5.0
    #: A key without a failure for this long is forgotten.
    forget_after: float = 600.0
    max_entries: int = 10_000

    def __post_init__(self) -> None:
        if not 0 <= self.initial <= self.maximum:
            raise ValueError("login delay: need 0 <= initial <= maximum")
        if self.user_maximum < 0 or self.forget_after <= 0 or self.max_entries < 1:
            raise ValueError("login delay: bad user_maximum, forget_after or max_entries")

    def delay(self, failures: int, cap: float) -> float:
        """Seconds the next check waits after the last of ``failures`` failures."""
        if failures <= 0:
            return 0.0
        # 2**n overflows a float long after min() has capped it; stop doubling early.
        return min(self.initial * 2.0 ** min(failures - 1, 64), self.maximum, cap)


@dataclass
class _Record:
    failures: int
    last: float


def source_key(address: Any) -> str:
    """The key of a client's source address (a Twisted address object).

    IPv4-mapped IPv6 counts as the IPv4 address; IPv6 is cut to its /48. Anything
    without an IP host (a UNIX socket) is one local source.
    """
    host = getattr(address, "host", None)
    if not isinstance(host, str):
        return f"local:{type(address).__name__}"
    try:
        ip = ipaddress.ip_address(host.split("%", 1)[0])
    except ValueError:
        return f"host:{host[:255]}"
    if isinstance(ip, ipaddress.IPv6Address):
        if ip.ipv4_mapped is not None:
            return str(ip.ipv4_mapped)
        return str(ipaddress.IPv6Network((ip, IPV6_PREFIX), strict=False))
    return str(ip)


def user_key(username: bytes) -> bytes:
    """Fixed-size key of a user name; case-folded, so ``Alice`` and ``alice`` are one user
    (servers that tell them apart lose nothing but a shared penalty)."""
    folded = username.decode("utf-8", "surrogateescape").casefold()
    return hashlib.sha256(folded.encode("utf-8", "surrogateescape")).digest()[:16]


class _Table:
    """Failure records by key, oldest failure first, at most ``limit`` of them."""

    def __init__(self, limit: int, forget_after: float) -> None:
        self._records: OrderedDict[Any, _Record] = OrderedDict()
        self._limit = limit
        self._forget_after = forget_after

    def __len__(self) -> int:
        return len(self._records)

    def get(self, key: Any, now: float) -> _Record | None:
        self._expire(now)
        return self._records.get(key)

    def fail(self, key: Any, now: float) -> None:
        self._expire(now)
        record = self._records.pop(key, None) or _Record(0, now)
        record.failures += 1
        record.last = now
        self._records[key] = record  # now the most recent
        while len(self._records) > self._limit:
            self._records.popitem(last=False)

    def reset(self, key: Any) -> None:
        self._records.pop(key, None)

    def _expire(self, now: float) -> None:
        # Ordered by last failure, so the expired ones are at the front.
        while self._records:
            record = next(iter(self._records.values()))
            if now - record.last < self._forget_after:
                return
            self._records.popitem(last=False)


class LoginLimiter:
    """Runs credential checks under the rules in the module docstring."""

    def __init__(self, clock: IReactorTime, penalty: LoginPenalty | None = None) -> None:
        # Any: zope interfaces declare methods without self, which mypy misreads.
        self.clock: Any = clock
        self.penalty = penalty or LoginPenalty()
        self._sources = _Table(self.penalty.max_entries, self.penalty.forget_after)
        self._users = _Table(self.penalty.max_entries, self.penalty.forget_after)
        self._lines: dict[str, defer.DeferredLock] = {}

    def wait_before(self, source: str, user: bytes) -> float:
        """Seconds a check of (source, user) starting now would wait."""
        now = self.clock.seconds()
        penalty = self.penalty
        wait = 0.0
        by_source = self._sources.get(source, now)
        if by_source is not None:
            due = by_source.last + penalty.delay(by_source.failures, penalty.maximum)
            wait = max(wait, due - now)
        by_user = self._users.get(user, now)
        if by_user is not None:
            due = by_user.last + penalty.delay(by_user.failures, penalty.user_maximum)
            wait = max(wait, due - now)
        # The reactor's clock is wall time: were it set back, "due" could lie far ahead.
        return min(wait, penalty.maximum)

    async def run(
        self,
        source: str,
        username: bytes,
        check: Callable[[], Awaitable[T]],
        *,
        abandoned: Callable[[], bool] = lambda: False,
        no_verdict: tuple[type[BaseException], ...] = (),
        fast: Callable[[], T | None] | None = None,
    ) -> T:
        """Wait for the source's turn and the penalty, then run ``check``.

        ``check`` returning is a success; raising one of ``no_verdict`` is neither (it
        is re-raised); raising anything else is a failure (and re-raised). Raises
        LoginAbandoned, without checking, if ``abandoned()`` is true once it is our turn.
        ``fast``: see the module docstring; its result, unless None, is the success.
        """
        user = user_key(username)
        if fast is not None and self._clean(source, user):
            try:
                result = fast()
            except Exception:
                result = None  # no match: the line and the full check decide
            if result is not None:
                self._users.reset(user)
                return result
        line = self._lines.setdefault(source, defer.DeferredLock())
        await line.acquire()
        try:
            if abandoned():
                raise LoginAbandoned()
            wait = self.wait_before(source, user)
            if wait > 0:
                await task.deferLater(self.clock, wait)
                if abandoned():
                    raise LoginAbandoned()
            try:
                result = await check()
            except no_verdict:
                raise
            except BaseException:
                now = self.clock.seconds()
                self._sources.fail(source, now)
                self._users.fail(user, now)
                raise
            self._users.reset(user)
            return result
        finally:
            # Hand the line on from the reactor, not from this stack: the next check
            # may finish at once (its account is open) and hand on in turn, so hundreds
            # of queued logins handed on inline nest one call chain each until a
            # RecursionError, which left the line held and every later login from this
            # source hanging (python -m bench.load, 200 sessions from one address).
            self.clock.callLater(0, self._hand_on, source, line)

    def _clean(self, source: str, user: bytes) -> bool:
        """Neither the source nor the user has a failure on record."""
        now = self.clock.seconds()
        return self._sources.get(source, now) is None and self._users.get(user, now) is None

    def _hand_on(self, source: str, line: defer.DeferredLock) -> None:
        line.release()
        if not line.locked and not line.waiting:
            self._lines.pop(source, None)

    @property
    def tracked(self) -> tuple[int, int, int]:
        """(sources, users, lines) held in memory: for tests of the bounds."""
        return len(self._sources), len(self._users), len(self._lines)
