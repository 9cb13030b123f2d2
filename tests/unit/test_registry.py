"""Login decisions in the registry: who decides (upstream, verifier), and that every
failure path refuses. The upstream is a stand-in link; time is a task.Clock."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from twisted.internet import defer
from twisted.internet.task import Clock
from twisted.python.failure import Failure

from imapproxy import registry as registry_module
from imapproxy.account import AccountRuntime
from imapproxy.login_limits import LoginPenalty
from imapproxy.registry import AccountRegistry, LoginFailed
from imapproxy.store import Store, accounts, verifier
from imapproxy.store.verifier import CURRENT, ScryptParams
from imapproxy.upstream.address import UpstreamAddress
from imapproxy.upstream.errors import (
    AuthenticationFailed,
    UpstreamUnavailable,
    UpstreamUnreachable,
)
from imapproxy.upstream.sasl_login import BearerRefused

URL = "imap+plain://127.0.0.1:1"
CHEAP = ScryptParams(2**10, 8, 1)


class Upstream:
    """What the stand-in links do: accept one password, be unreachable, or blow up."""

    def __init__(self) -> None:
        self.password = b"right"
        #: Bearer tokens the upstream accepts, per login name.
        self.tokens: dict[bytes, set[bytes]] = {}
        #: The JSON error it sends with a refused token.
        self.error_json: bytes | None = None
        self.down = False
        self.error: BaseException | None = None
        self.links: list[FakeLink] = []
        #: While set, a new link's login waits for it (a slow upstream).
        self.hang: defer.Deferred[None] | None = None


class FakeLink:
    upstream: Upstream

    def __init__(
        self,
        reactor: Any,
        address: Any,
        username: bytes,
        password: bytes,
        ca: Any = None,
        **options: Any,
    ) -> None:
        self.username = username
        self.password = password
        self.mechanism = options.get("mechanism", "PASSWORD")
        self.logged_in = False
        self.known_down = False
        self.closed = False
        self.watched = None
        self.on_connected: Any = None
        self.upstream.links.append(self)

    async def use(self, operation: Any, **how: bool) -> Any:
        """UpstreamLink.use; how it waits for its turn does not matter here."""
        if self.upstream.hang is not None and not self.logged_in:
            await self.upstream.hang
        if self.upstream.error is not None:
            raise self.upstream.error
        if self.upstream.down:
            raise UpstreamUnreachable("upstream down (test)")
        if self.mechanism != "PASSWORD":
            if self.password not in self.upstream.tokens.get(self.username, set()):
                raise BearerRefused("NO", None, "bad token (test)", self.upstream.error_json)
        elif self.password != self.upstream.password:
            raise AuthenticationFailed("NO", None, "wrong password (test)")
        self.logged_in = True
        return None

    async def close(self) -> None:
        self.closed = True
        self.logged_in = False

    def watch(self, mailbox: Any, on_change: Any) -> None:
        pass


class Env:
    def __init__(self, tmp_path: Path, upstream: Upstream) -> None:
        self.clock = Clock()
        self.upstream = upstream
        self.store = Store(tmp_path / "replica")
        # No delays here: the limiter has tests of its own.
        self.registry = AccountRegistry(
            self.clock,
            self.store,
            UpstreamAddress.parse(URL),
            penalty=LoginPenalty(initial=0.0, maximum=0.0, user_maximum=0.0),
        )
        self.registry.in_thread = lambda f, *args: defer.maybeDeferred(f, *args)
        self.registry.verifier_quiet = 0.0

    def login(self, password: bytes, user: bytes = b"alice", mechanism: str = "PASSWORD") -> Any:
        """The runtime, or the exception the login ended with."""
        d = defer.ensureDeferred(
            self.registry.login(user, password, source="192.0.2.1", mechanism=mechanism)
        )
        for _ in range(10):
            self.clock.advance(0)
        assert d.called, "the login did not finish"
        result: list[Any] = []
        d.addBoth(result.append)
        outcome = result[0]
        return outcome.value if isinstance(outcome, Failure) else outcome

    def stored(self, user: str = "alice") -> object:
        account = self.store.read(lambda tx: accounts.find_account(tx, URL, user))
        assert account is not None
        return self.store.read(lambda tx: accounts.get_verifier(tx, account))

    def store_verifier(self, record: object, user: str = "alice") -> None:
        account = self.store.write(lambda tx: accounts.ensure_account(tx, URL, user))
        self.store.write(lambda tx: accounts.set_verifier(tx, account, record))  # type: ignore[arg-type]


@pytest.fixture
def env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Env]:
    upstream = Upstream()
    monkeypatch.setattr(FakeLink, "upstream", upstream, raising=False)
    monkeypatch.setattr(registry_module, "UpstreamLink", FakeLink)
    e = Env(tmp_path, upstream)
    yield e
    e.store.close()


def test_online_the_upstream_decides_and_a_current_verifier_is_stored(env: Env) -> None:
    assert isinstance(env.login(b"wrong"), LoginFailed)
    runtime = env.login(b"right")
    assert isinstance(runtime, AccountRuntime)
    record = env.stored()
    assert verifier.matches(record, b"right") and not verifier.outdated(record)


def test_offline_the_verifier_decides(env: Env) -> None:
    env.login(b"right")
    env.upstream.down = True
    for link in env.upstream.links:
        link.logged_in = False  # the account's connection is gone too
    assert isinstance(env.login(b"wrong"), LoginFailed)
    assert isinstance(env.login(b"right"), AccountRuntime)


def _quiet_wait(env: Env, monkeypatch: pytest.MonkeyPatch, quiet: list[float]) -> None:
    """New verifiers wait for 0.5 s of quiet; the account's link says it has been
    quiet for quiet[0] seconds."""
    env.registry.verifier_quiet = 0.5
    monkeypatch.setattr(FakeLink, "quiet_for", lambda self: quiet[0], raising=False)


def test_an_offline_login_does_not_wait_for_a_quiet_link_to_find_the_verifier(
    env: Env, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The verifier of a login just accepted waits for the link to be quiet; an
    offline login that comes first has it derived at once, and it is the newest."""
    _quiet_wait(env, monkeypatch, [0.0])  # the link stays busy
    env.login(b"right")
    env.clock.pump([0.25] * 4)
    assert env.stored() is None  # still waiting for the link to be quiet
    env.upstream.down = True
    for link in env.upstream.links:
        link.logged_in = False
    assert isinstance(env.login(b"wrong"), LoginFailed)
    assert isinstance(env.login(b"right"), AccountRuntime)
    assert verifier.matches(env.stored(), b"right")
    env.clock.pump([1.0] * 12)  # the wait that was cut short leaves nothing behind
    assert not env.clock.getDelayedCalls() or all(
        c.getTime() > env.clock.seconds() + 10 for c in env.clock.getDelayedCalls()
    )


def test_a_verifier_waiting_for_a_quiet_link_is_stored_when_the_registry_closes(
    env: Env, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A stop right after a first login must not leave the next, offline start with no
    verifier."""
    _quiet_wait(env, monkeypatch, [0.0])  # the link stays busy
    env.login(b"right")
    env.clock.advance(0.25)
    assert env.stored() is None
    closed = defer.ensureDeferred(env.registry.close())
    env.clock.advance(0)
    assert closed.called and verifier.matches(env.stored(), b"right")


def test_offline_a_user_never_seen_gets_unavailable_not_a_session(env: Env) -> None:
    env.upstream.down = True
    outcome = env.login(b"anything")
    assert isinstance(outcome, UpstreamUnavailable)
    assert "never logged in here" in str(outcome)


def test_a_cached_session_does_not_outlive_a_password_changed_upstream(env: Env) -> None:
    first = env.login(b"right")
    assert env.login(b"right") is first  # live connection, same bytes: reused
    env.upstream.password = b"new"
    first.link.logged_in = False  # the old connection dropped; the next login asks upstream
    assert isinstance(env.login(b"right"), LoginFailed)
    assert env.login(b"new") is first


def test_an_open_account_logs_in_at_once_behind_a_slow_first_login_from_its_address(
    env: Env,
) -> None:
    """One NAT address, many users: the line of first logins does not hold up a login
    the upstream accepted moments ago, while the address has no failure on record."""
    alice = env.login(b"right")
    env.upstream.hang = defer.Deferred()
    bob = defer.ensureDeferred(env.registry.login(b"bob", b"right", source="192.0.2.1"))
    env.clock.advance(0)
    assert not bob.called  # its upstream login hangs, holding the address's line
    assert env.login(b"right") is alice
    wrong = defer.ensureDeferred(env.registry.login(b"alice", b"wrong", source="192.0.2.1"))
    env.clock.advance(0)
    assert not wrong.called  # no match: it waits its turn behind bob
    env.upstream.hang.callback(None)
    env.upstream.hang = None
    for _ in range(10):
        env.clock.advance(0)
    assert isinstance(bob.result, AccountRuntime)
    wrong.addErrback(lambda f: f.value)
    assert isinstance(wrong.result, LoginFailed)


def test_raising_the_scrypt_cost_locks_nobody_out_and_upgrades_at_login(env: Env) -> None:
    env.registry.verifier_params = CHEAP
    env.login(b"right")
    assert env.stored()["scrypt"] == [CHEAP.n, CHEAP.r, CHEAP.p]  # type: ignore[index]
    env.registry.verifier_params = CURRENT  # the cost was raised (a new release)
    env.upstream.down = True
    for link in env.upstream.links:
        link.logged_in = False
    assert isinstance(env.login(b"wrong"), LoginFailed)
    assert env.stored()["scrypt"] == [CHEAP.n, CHEAP.r, CHEAP.p]  # type: ignore[index]
    assert isinstance(env.login(b"right"), AccountRuntime)
    upgraded = env.stored()
    assert upgraded["scrypt"] == [CURRENT.n, CURRENT.r, CURRENT.p]  # type: ignore[index]
    assert verifier.matches(upgraded, b"right") and not verifier.matches(upgraded, b"wrong")


@pytest.mark.parametrize(
    "record",
    [
        None,
        {"scrypt": [2**40, 8, 1], "salt": "00" * 16, "hash": "00" * 32},
        {"scrypt": [True, 8, 1], "salt": "00" * 16, "hash": "00" * 32},
        {"salt": "00" * 16, "hash": "00" * 32},
        {"scrypt": [1024, 8, 1], "salt": 5, "hash": "00" * 32},
        "garbage",
    ],
    ids=["missing", "absurd N", "bool N", "no params", "salt not str", "not a record"],
)
def test_offline_a_corrupt_verifier_refuses_even_the_right_password(
    env: Env, record: object, caplog: pytest.LogCaptureFixture
) -> None:
    env.store_verifier(record)
    env.upstream.down = True
    outcome = env.login(b"right")
    assert isinstance(outcome, LoginFailed)
    assert "verifier unusable" in caplog.text
    # Online, the upstream decides again and a good verifier replaces the bad one.
    env.upstream.down = False
    assert isinstance(env.login(b"right"), AccountRuntime)
    assert verifier.problem(env.stored()) is None


@pytest.mark.parametrize(
    "error", [KeyError("x"), TypeError("t"), ValueError("v"), MemoryError(), RuntimeError("r")]
)
def test_any_exception_while_the_upstream_checks_is_no_session(
    env: Env, error: BaseException
) -> None:
    env.upstream.error = error
    assert env.login(b"right") is error
    assert env.registry._runtimes == {}


@pytest.mark.parametrize("error", [KeyError("x"), OSError("disk"), RuntimeError("r")])
def test_any_exception_after_upstream_accepted_is_no_session_and_closes_the_link(
    env: Env, error: BaseException, monkeypatch: pytest.MonkeyPatch
) -> None:
    def broken(*args: object) -> None:
        raise error

    monkeypatch.setattr(accounts, "ensure_account", broken)
    assert env.login(b"right") is error
    assert env.registry._runtimes == {}
    assert env.upstream.links[-1].closed


def test_the_verifier_is_stored_after_the_answer_and_only_the_newest(env: Env) -> None:
    """The scrypt of the offline verifier runs after the login is answered; when two
    derivations overlap, the older one's result is not stored over the newer."""
    pending: list[tuple[defer.Deferred[Any], tuple[Any, ...]]] = []

    def in_thread(f: Any, *args: Any) -> defer.Deferred[Any]:
        d: defer.Deferred[Any] = defer.Deferred()
        pending.append((d, (f, *args)))
        return d

    env.registry.in_thread = in_thread
    first = env.login(b"right")
    assert isinstance(first, AccountRuntime)  # answered before any verifier exists
    assert len(pending) == 1
    env.upstream.password = b"newer"
    first.link.logged_in = False
    assert env.login(b"newer") is first
    assert len(pending) == 2
    for d, (f, *args) in reversed(pending):  # the newer derivation finishes first
        d.callback(f(*args))
    record = env.stored()
    assert verifier.matches(record, b"newer") and not verifier.matches(record, b"right")


def test_the_verifier_waits_for_the_link_to_be_quiet_and_no_longer_than_the_limit(
    env: Env, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The scrypt waits until the link has had nothing to do for verifier_quiet seconds
    (the first sync is through), and at most VERIFIER_AT_LATEST while it stays busy."""
    quiet = [0.0]  # what the account's link says: busy
    _quiet_wait(env, monkeypatch, quiet)
    env.login(b"right")
    env.clock.pump([0.25] * 8)
    assert env.stored() is None  # busy all along
    quiet[0] = 0.3
    env.clock.advance(0.1)
    assert env.stored() is None  # quiet, not long enough
    quiet[0] = 0.5
    env.clock.advance(0.5)
    assert verifier.matches(env.stored(), b"right")

    env.store_verifier(None)  # type: ignore[arg-type]
    quiet[0] = 0.0
    env.upstream.password = b"newer"
    for link in env.upstream.links:
        link.logged_in = False
    env.login(b"newer")
    steps = int(registry_module.VERIFIER_AT_LATEST / 0.1)
    env.clock.pump([0.1] * (steps - 6))
    assert env.stored() is None
    env.clock.pump([0.1] * 12)
    assert verifier.matches(env.stored(), b"newer")


def test_a_verifier_that_cannot_be_stored_is_logged_and_the_old_one_stays(
    env: Env, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    env.login(b"right")
    old = env.stored()

    def broken(*args: object) -> None:
        raise OSError("disk")

    monkeypatch.setattr(accounts, "set_verifier", broken)
    env.upstream.password = b"newer"
    for link in env.upstream.links:
        link.logged_in = False
    assert isinstance(env.login(b"newer"), AccountRuntime)
    assert env.stored() == old
    assert "could not store the offline verifier" in caplog.text


@pytest.mark.parametrize("error", [KeyError("x"), TypeError("t"), MemoryError()])
def test_any_exception_while_the_verifier_checks_is_no_session(
    env: Env, error: BaseException, monkeypatch: pytest.MonkeyPatch
) -> None:
    env.login(b"right")
    env.upstream.down = True
    for link in env.upstream.links:
        link.logged_in = False

    def broken(*args: object) -> bool:
        raise error

    monkeypatch.setattr(accounts, "verifier_matches", broken)
    assert env.login(b"right") is error


def test_a_verifier_check_answering_anything_but_true_refuses(
    env: Env, monkeypatch: pytest.MonkeyPatch
) -> None:
    env.login(b"right")
    env.upstream.down = True
    for link in env.upstream.links:
        link.logged_in = False
    monkeypatch.setattr(accounts, "verifier_matches", lambda *args: 1)
    assert isinstance(env.login(b"right"), LoginFailed)


def test_a_link_known_down_lets_the_verifier_decide_without_a_new_attempt(env: Env) -> None:
    """The account's link is backing off: a login does not start an attempt of its own
    (which would wait out a connect timeout on a stalled network)."""
    runtime = env.login(b"right")
    env.upstream.down = True
    runtime.link.logged_in = False
    runtime.link.known_down = True
    links = len(env.upstream.links)
    assert isinstance(env.login(b"wrong"), LoginFailed)
    assert env.login(b"right") is runtime
    assert len(env.upstream.links) == links


def test_an_attempt_left_behind_by_an_offline_login_is_closed(env: Env) -> None:
    runtime = env.login(b"right")
    env.upstream.down = True
    runtime.link.logged_in = False
    assert env.login(b"right") is runtime
    assert isinstance(env.login(b"wrong"), LoginFailed)
    extra = [link for link in env.upstream.links if link is not runtime.link]
    assert len(extra) == 2 and all(link.closed for link in extra)


def test_the_configured_poll_interval_reaches_the_watcher(env: Env) -> None:
    """[upstream.freshness] poll_interval: how often a selected mailbox is polled where
    the upstream lacks NOTIFY (it was accepted and then ignored)."""
    env.registry.poll_every = 7.0
    runtime = env.login(b"right")
    assert runtime.watcher.poll_seconds == 7.0
