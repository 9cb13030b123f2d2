"""The failed-login limiter's rules, on a task.Clock: who waits, how long, and for whom."""

from __future__ import annotations

import itertools
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from twisted.internet import defer
from twisted.internet.address import IPv4Address, IPv6Address, UNIXAddress
from twisted.internet.task import Clock

from imapproxy import cli
from imapproxy.config import Config
from imapproxy.login_limits import (
    LoginAbandoned,
    LoginLimiter,
    LoginPenalty,
    source_key,
    user_key,
)


class WrongPassword(Exception):
    pass


class Unreachable(Exception):
    pass


class Attempts:
    """Attempts through one limiter; records when each credential check ran."""

    def __init__(self, penalty: LoginPenalty | None = None) -> None:
        self.clock = Clock()
        self.limiter = LoginLimiter(self.clock, penalty)
        self.checked: list[tuple[float, str, bytes]] = []
        self.running = 0
        self.most_running = 0

    def start(
        self,
        source: str,
        user: bytes,
        ok: bool = False,
        raises: BaseException | None = None,
        abandoned: Callable[[], bool] = lambda: False,
        fast: Callable[[], Any] | None = None,
    ) -> defer.Deferred[Any]:
        async def check() -> str:
            self.checked.append((self.clock.seconds(), source, user))
            self.running += 1
            self.most_running = max(self.most_running, self.running)
            try:
                # A check takes a little time (an upstream round trip).
                await (
                    defer.Deferred(lambda d: None)
                    .addTimeout(0.01, self.clock)
                    .addErrback(lambda _: None)
                )
            finally:
                self.running -= 1
            if raises is not None:
                raise raises
            if not ok:
                raise WrongPassword()
            return "session"

        d = defer.ensureDeferred(
            self.limiter.run(
                source, user, check, abandoned=abandoned, no_verdict=(Unreachable,), fast=fast
            )
        )
        d.addErrback(lambda f: f.value)  # keep the outcome as the result
        return d

    def advance(self, seconds: float, step: float = 0.01) -> None:
        """Let time pass in small steps, as a reactor would."""
        end = self.clock.seconds() + seconds
        while self.clock.seconds() < end - 1e-9:
            self.clock.advance(min(step, end - self.clock.seconds()))

    def run_until_idle(self, step: float = 0.01, limit: float = 10_000.0) -> None:
        while self.clock.getDelayedCalls() and self.clock.seconds() < limit:
            self.clock.advance(step)

    def check_times(self) -> list[float]:
        return [round(t, 2) for t, _, _ in self.checked]


def test_delay_follows_dovecots_curve() -> None:
    penalty = LoginPenalty()
    assert [penalty.delay(n, penalty.maximum) for n in range(7)] == [0, 2, 4, 8, 15, 15, 15]
    assert penalty.delay(10_000, penalty.maximum) == 15  # no overflow
    assert penalty.delay(10, penalty.user_maximum) == 5


def test_sequential_failures_from_one_source_wait_longer_each_time() -> None:
    a = Attempts()
    for _ in range(6):
        outcome = a.start("198.51.100.7", b"alice")
        a.run_until_idle()
        assert isinstance(outcome.result, WrongPassword)
    # Each check waits 2, 4, 8, 15, 15 s after the previous failure (+ the check's 10 ms).
    times = a.check_times()
    gaps = [later - earlier for earlier, later in itertools.pairwise(times)]
    assert gaps == pytest.approx([2, 4, 8, 15, 15], abs=0.03)


def test_parallel_attempts_from_one_source_are_checked_one_at_a_time() -> None:
    a = Attempts()
    outcomes = [a.start("198.51.100.7", b"alice") for _ in range(50)]
    a.advance(6.5)
    # Within the time Dovecot answers all fifty, only three were even checked.
    assert len(a.checked) == 3
    a.run_until_idle(step=0.5)
    assert all(isinstance(o.result, WrongPassword) for o in outcomes)
    assert a.most_running == 1
    assert a.clock.seconds() >= 2 + 4 + 8 + 15 * 46
    assert a.limiter.tracked[2] == 0  # no line left behind


def test_parallel_attempts_against_many_users_from_one_source_are_one_line_too() -> None:
    a = Attempts()
    for i in range(10):
        a.start("198.51.100.7", f"user{i}".encode())
    a.advance(6.5)
    assert len(a.checked) == 3
    assert a.most_running == 1


def test_right_password_waits_too_then_resets_the_user_but_not_the_source() -> None:
    a = Attempts()
    a.start("198.51.100.7", b"alice")
    a.run_until_idle()
    right = a.start("198.51.100.7", b"alice", ok=True)
    a.advance(1.0)
    assert not right.called, "the attacker must not learn sooner that a guess was right"
    a.run_until_idle()
    assert right.result == "session"
    assert a.limiter.wait_before("198.51.100.7", user_key(b"alice")) == 0.0
    # The source's failures still count: one valid account does not clear them.
    a.start("198.51.100.7", b"bob")
    a.run_until_idle()
    assert a.limiter.wait_before("198.51.100.7", user_key(b"bob")) == pytest.approx(4.0)


def test_another_source_is_not_queued_behind_an_attack_on_the_same_user() -> None:
    a = Attempts()
    attack = [a.start("198.51.100.7", b"alice") for _ in range(50)]
    a.advance(1.0)  # the first guess failed; 49 wait in the attacker's line
    legit = a.start("192.0.2.1", b"alice", ok=True)
    a.advance(1.5)
    assert legit.result == "session"
    # Later in the attack the user's delay is at its cap, never the attacker's queue.
    a.advance(30.0)
    assert len(a.checked) < 50
    start = a.clock.seconds()
    legit = a.start("192.0.2.2", b"alice", ok=True)
    while not legit.called:
        a.advance(0.1)
    assert a.clock.seconds() - start <= LoginPenalty().user_maximum + 0.2
    for outcome in attack:
        outcome.cancel()
    a.run_until_idle(step=1.0)


def test_failures_are_forgotten_after_quiet_time() -> None:
    a = Attempts(LoginPenalty(forget_after=60.0))
    for _ in range(4):
        a.start("198.51.100.7", b"alice")
        a.run_until_idle()
    assert a.limiter.wait_before("198.51.100.7", user_key(b"alice")) > 0
    assert a.limiter.tracked[:2] == (1, 1)
    a.clock.advance(60.0)
    assert a.limiter.wait_before("198.51.100.7", user_key(b"alice")) == 0.0
    assert a.limiter.tracked[:2] == (0, 0)


@pytest.mark.parametrize(
    "error", [KeyError("x"), TypeError(), MemoryError(), RuntimeError(), defer.CancelledError()]
)
def test_any_exception_from_the_check_counts_as_a_failure(error: BaseException) -> None:
    a = Attempts()
    outcome = a.start("198.51.100.7", b"alice", raises=error)
    a.run_until_idle()
    assert outcome.result is error
    assert a.limiter.wait_before("198.51.100.7", user_key(b"alice")) == pytest.approx(2.0)


def test_no_verdict_is_passed_on_without_a_penalty() -> None:
    a = Attempts()
    outcome = a.start("198.51.100.7", b"alice", raises=Unreachable())
    a.run_until_idle()
    assert isinstance(outcome.result, Unreachable)
    assert a.limiter.wait_before("198.51.100.7", user_key(b"alice")) == 0.0


def test_an_attempt_whose_client_left_is_not_checked() -> None:
    a = Attempts()
    a.start("198.51.100.7", b"alice")
    gone = False
    waiting = a.start("198.51.100.7", b"alice", ok=True, abandoned=lambda: gone)
    a.advance(1.0)
    gone = True
    a.run_until_idle()
    assert isinstance(waiting.result, LoginAbandoned)
    assert len(a.checked) == 1
    assert a.limiter.tracked[2] == 0


def test_memory_stays_bounded_under_many_sources_and_users() -> None:
    a = Attempts(LoginPenalty(initial=0.0, maximum=0.0, user_maximum=0.0, max_entries=100))
    for i in range(2_000):
        a.start(f"10.{i // 256 % 256}.{i % 256}.1", b"u" * 10_000 + str(i).encode())
        a.advance(0.02)
    sources, users, lines = a.limiter.tracked
    assert sources <= 100 and users <= 100 and lines == 0


def test_a_clock_set_back_never_means_a_longer_wait_than_the_maximum() -> None:
    a = Attempts()
    a.clock.advance(10_000)
    for _ in range(5):
        a.start("198.51.100.7", b"alice")
        a.run_until_idle(limit=1e9)
    a.clock.rightNow = 0.0  # the wall clock jumped back by hours
    assert a.limiter.wait_before("198.51.100.7", user_key(b"alice")) == 15.0


def test_penalty_settings_are_checked() -> None:
    with pytest.raises(ValueError):
        LoginPenalty(initial=20.0, maximum=15.0)
    with pytest.raises(ValueError):
        LoginPenalty(max_entries=0)


@pytest.mark.parametrize(
    "args",
    [("--login-delay", "-1"), ("--login-delay", "20"), ("--login-delay-max", "1e9")],
)
def test_command_line_delays_out_of_range_are_one_line_errors(
    args: tuple[str, str], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = ["serve", "--upstream", "imap+plain://127.0.0.1:1", "--state-dir", str(tmp_path)]
    assert cli.main([*argv, *args]) == 2
    assert "--login-delay" in capsys.readouterr().err


def test_command_line_delays_reach_the_config(tmp_path: Path) -> None:
    config = Config.build(
        "imap+plain://127.0.0.1:1", "127.0.0.1:0", tmp_path, login_delay=0.5, login_delay_max=3
    )
    assert (config.login_delay, config.login_delay_max) == (0.5, 3)
    assert (Config.build("imap+plain://127.0.0.1:1", "127.0.0.1:0", tmp_path).login_delay) == 2.0


@pytest.mark.parametrize(
    ("address", "key"),
    [
        (IPv4Address("TCP", "192.0.2.1", 1234), "192.0.2.1"),
        (IPv6Address("TCP", "::ffff:192.0.2.1", 1234), "192.0.2.1"),
        (IPv6Address("TCP", "2001:db8:1:2:3:4:5:6", 1234), "2001:db8:1::/48"),
        (IPv6Address("TCP", "2001:db8:1:ffff::1", 1234), "2001:db8:1::/48"),
        (IPv6Address("TCP", "fe80::1%eth0", 1234), "fe80::/48"),
        (UNIXAddress(b"/run/imapproxy.sock"), "local:UNIXAddress"),
        (None, "local:NoneType"),
    ],
)
def test_source_keys(address: object, key: str) -> None:
    assert source_key(address) == key


def test_user_keys_are_fixed_size_and_case_folded() -> None:
    assert user_key(b"Alice") == user_key(b"alice")
    assert user_key(b"alice") != user_key(b"bob")
    assert len(user_key(b"x" * 100_000)) == 16
    assert len(user_key(b"\xff\xfe")) == 16  # not UTF-8: still a key


def test_a_long_line_of_logins_that_succeed_at_once_is_handed_on_without_recursion() -> None:
    """The gateway case: hundreds of clients log in from one address (a Dovecot proxy in
    front, or all of a site behind one NAT) while a slow first login holds the line; the
    queued ones then succeed at once (their account is open). Handing the line on inside
    the previous holder's stack nested one call chain per waiter: a RecursionError after
    a hundred or so, and the line stayed held, so every later login from that address
    hung for good (found by ``python -m bench.load``)."""
    clock = Clock()
    limiter = LoginLimiter(clock, LoginPenalty(initial=0.0, maximum=0.0, user_maximum=0.0))
    first = defer.Deferred[str]()

    async def slow() -> str:
        return await first

    async def at_once() -> str:
        return "session"

    head = defer.ensureDeferred(limiter.run("127.0.0.1", b"alice", slow))
    line = [defer.ensureDeferred(limiter.run("127.0.0.1", b"bob", at_once)) for _ in range(600)]
    first.callback("session")
    while clock.getDelayedCalls():
        clock.advance(0)
    assert head.result == "session"
    assert [d.result for d in line] == ["session"] * 600
    assert limiter.tracked[2] == 0  # the line was freed and forgotten
    later = defer.ensureDeferred(limiter.run("127.0.0.1", b"carol", at_once))
    while clock.getDelayedCalls():
        clock.advance(0)
    assert later.result == "session"


def test_a_known_good_login_skips_the_line_while_source_and_user_are_clean() -> None:
    """200 clients behind one address: those whose account is open need not wait for
    the others' first logins (python -m bench.load measured LOGIN p50 16 s)."""
    a = Attempts()
    slow = [a.start("198.51.100.7", f"new{i}".encode(), ok=True) for i in range(20)]
    quick = a.start("198.51.100.7", b"open", fast=lambda: "open session")
    assert quick.result == "open session"  # at once, ahead of the twenty in line
    assert len(a.checked) == 1  # the full check of the fast one never ran
    a.run_until_idle()
    assert all(d.result == "session" for d in slow)


@pytest.mark.parametrize("fast", [lambda: None, lambda: 1 / 0], ids=["no match", "raises"])
def test_no_fast_match_takes_the_line_and_the_full_check(fast: Callable[[], Any]) -> None:
    a = Attempts()
    outcome = a.start("198.51.100.7", b"alice", fast=fast)
    a.run_until_idle()
    assert isinstance(outcome.result, WrongPassword)
    assert len(a.checked) == 1


def test_after_a_failure_the_fast_path_waits_its_turn_and_the_penalty() -> None:
    """A right guess must not come back sooner than a wrong one would: once the source
    (or the user) has failed, even a fast match waits in line and for the delay."""
    a = Attempts()
    a.start("198.51.100.7", b"alice")
    a.run_until_idle()
    failed_at = a.clock.seconds()
    outcome = a.start("198.51.100.7", b"bob", ok=True, fast=lambda: "open session")
    assert not outcome.called
    a.run_until_idle()
    assert outcome.result == "session"  # the full check decided, after the delay
    assert a.checked[-1][0] >= failed_at + 2 - 0.02
    other = a.start("203.0.113.9", b"alice", ok=True, fast=lambda: "open session")
    assert not other.called  # alice failed elsewhere: her user key is not clean
    a.run_until_idle()
    assert other.result == "session"
