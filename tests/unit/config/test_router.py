"""Login routing: patterns, listen addresses, first match wins, and no match at all."""

from __future__ import annotations

from typing import Any

import pytest
import pytest_twisted
from twisted.internet import defer, task

from imapproxy.config import UpstreamConfig
from imapproxy.idle_accounts import IdleAccounts
from imapproxy.registry import LoginFailed
from imapproxy.router import LoginRouter, Route
from imapproxy.upstream.address import UpstreamAddress


class FakeRegistry:
    """Records the logins it is asked to check; answers with a fake runtime."""

    def __init__(self, url: str) -> None:
        self.address = UpstreamAddress.parse(url)
        self.logins: list[tuple[bytes, dict[str, Any]]] = []
        self.closed: list[str] = []
        self.answer: defer.Deferred[Any] | None = None

    async def login(self, username: bytes, password: bytes, **options: Any) -> Any:
        self.logins.append((username, options))
        if self.answer is not None:
            return await self.answer
        return FakeRuntime(self.address.url(), username.decode())

    async def close_account(self, name: str, still_idle: Any) -> None:
        if still_idle():
            self.closed.append(name)

    async def close(self) -> None:
        pass


class FakeRuntime:
    def __init__(self, upstream: str, username: str) -> None:
        self.account = type("Account", (), {"upstream": upstream, "username": username})()


def _route(url: str, logins: tuple[str, ...] = (), listeners: tuple[str, ...] = ()) -> Route:
    upstream = UpstreamConfig(url, UpstreamAddress.parse(url), logins=logins, listeners=listeners)
    return Route(upstream, FakeRegistry(url))  # type: ignore[arg-type]


def _router(*routes: Route, idle: float = 0, clock: Any = None) -> LoginRouter:
    return LoginRouter(clock or task.Clock(), list(routes), idle)


A = "imaps://a.test"
B = "imaps://b.test"
C = "imaps://c.test"


@pytest.mark.parametrize(
    ("listener", "login", "expected"),
    [
        ("127.0.0.1:1143", "alice@a.test", A),
        ("127.0.0.1:1143", "ALICE@A.TEST", A),  # patterns ignore case
        ("127.0.0.1:1143", "bob@b.test", B),
        ("127.0.0.1:1143", "bob@sub.b.test", None),  # *@b.test does not cover subdomains
        ("127.0.0.1:1144", "anyone", C),  # the listener decides
        ("127.0.0.1:1144", "alice@a.test", A),  # first match wins
        ("127.0.0.1:1143", "carol@c.test", None),
        ("127.0.0.1:1143", "alice@a.test.evil", None),
        ("127.0.0.1:1143", "", None),
    ],
)
def test_pick(listener: str, login: str, expected: str | None) -> None:
    router = _router(
        _route(A, logins=("*@a.test",)),
        _route(B, logins=("*@b.test", "admin-?")),
        _route(C, listeners=("127.0.0.1:1144",)),
    )
    route = router.pick(listener, login)
    assert (route.upstream.name if route else None) == expected


def test_both_conditions_must_hold() -> None:
    router = _router(_route(A, logins=("*@a.test",), listeners=("127.0.0.1:1144",)))
    assert router.pick("127.0.0.1:1144", "x@a.test") is not None
    assert router.pick("127.0.0.1:1143", "x@a.test") is None
    assert router.pick("127.0.0.1:1144", "x@b.test") is None


def test_a_catch_all_takes_the_rest() -> None:
    router = _router(_route(A, logins=("*@a.test",)), _route(B))
    assert router.pick("127.0.0.1:1143", "x@a.test").upstream.name == A  # type: ignore[union-attr]
    assert router.pick("127.0.0.1:1143", "x@elsewhere").upstream.name == B  # type: ignore[union-attr]


@pytest_twisted.ensureDeferred
async def test_login_goes_to_its_upstream_only() -> None:
    a, b = _route(A, logins=("*@a.test",)), _route(B, logins=("*@b.test",))
    router = _router(a, b)
    from imapproxy.config import Listener

    logins = router.for_listener(Listener("127.0.0.1", 1143))
    runtime = await logins.login(b"bob@b.test", b"pw", source="127.0.0.1")
    assert runtime.account.upstream == "imaps://b.test:993"
    assert a.registry.logins == []  # type: ignore[attr-defined]
    assert b.registry.logins == [(b"bob@b.test", {"source": "127.0.0.1"})]  # type: ignore[attr-defined]


@pytest_twisted.ensureDeferred
async def test_no_match_is_a_failed_login_that_no_upstream_hears() -> None:
    a = _route(A, logins=("*@a.test",))
    router = _router(a)
    with pytest.raises(LoginFailed):
        await router.login("127.0.0.1:1143", b"mallory@b.test", b"pw")
    assert a.registry.logins == []  # type: ignore[attr-defined]


# closing unused accounts -------------------------------------------------------------


def _idle(seconds: float = 10) -> tuple[IdleAccounts, task.Clock, list[str]]:
    clock = task.Clock()
    closed: list[str] = []

    async def close(key: tuple[str, str], still_idle: Any) -> None:
        if still_idle():
            closed.append(key[1])

    return IdleAccounts(clock, seconds, close), clock, closed


def test_account_closes_after_the_last_session_plus_the_idle_time() -> None:
    idle, clock, closed = _idle()
    key = ("imaps://a.test:993", "alice")
    idle.begin(key)
    idle.begin(key)
    idle.end(key)
    clock.advance(60)
    assert closed == []  # one session is still there
    idle.end(key)
    clock.advance(9.9)
    assert closed == []
    clock.advance(0.2)
    assert closed == ["alice"]


def test_a_login_before_the_timer_fires_keeps_the_account() -> None:
    idle, clock, closed = _idle()
    key = ("u", "alice")
    idle.begin(key)
    idle.end(key)
    clock.advance(5)
    idle.begin(key)
    clock.advance(60)
    assert closed == []
    assert idle.users(key) == 1


def test_zero_means_never_close() -> None:
    idle, clock, closed = _idle(0)
    idle.begin(("u", "alice"))
    idle.end(("u", "alice"))
    clock.advance(10**6)
    assert closed == [] and clock.getDelayedCalls() == []


def test_stop_cancels_the_timers() -> None:
    idle, clock, closed = _idle()
    idle.begin(("u", "alice"))
    idle.end(("u", "alice"))
    idle.stop()
    clock.advance(60)
    assert closed == [] and clock.getDelayedCalls() == []


@pytest_twisted.ensureDeferred
async def test_a_login_in_progress_counts_as_a_user() -> None:
    """The timer fires while a login is still being checked upstream: no closing."""
    clock = task.Clock()
    a = _route(A)
    router = _router(a, idle=10, clock=clock)
    runtime = await router.login("l", b"alice", b"pw")
    router.release(runtime)
    registry: FakeRegistry = a.registry  # type: ignore[assignment]
    registry.answer = defer.Deferred()
    pending = defer.ensureDeferred(router.login("l", b"alice", b"pw"))
    clock.advance(11)
    assert registry.closed == []
    registry.answer.callback(runtime)
    assert (await pending) is runtime
    router.release(runtime)
    clock.advance(11)
    assert registry.closed == ["alice"]


@pytest_twisted.ensureDeferred
async def test_a_failed_login_does_not_keep_the_account_open() -> None:
    clock = task.Clock()
    a = _route(A)
    router = _router(a, idle=10, clock=clock)
    registry: FakeRegistry = a.registry  # type: ignore[assignment]
    registry.answer = defer.fail(LoginFailed())
    with pytest.raises(LoginFailed):
        await router.login("l", b"alice", b"wrong")
    clock.advance(11)
    assert registry.closed == ["alice"]  # asked to close: nothing is open, nothing kept
