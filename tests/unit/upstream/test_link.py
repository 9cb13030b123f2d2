"""UpstreamLink against a scripted upstream on a fake clock: states, stall detection,
backoff with jitter, keepalive, and operations that never wait long on a dead link."""

from __future__ import annotations

import gc
import itertools
import random
from collections.abc import Iterator
from typing import Any

import pytest
from twisted.internet import defer, task
from twisted.internet.error import ConnectionDone
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport
from twisted.logger import ILogObserver, globalLogPublisher
from twisted.python.failure import Failure
from zope.interface import provider

from imapproxy.protocol import FetchAttribute, SequenceSet
from imapproxy.upstream import link as link_module
from imapproxy.upstream.address import UpstreamAddress
from imapproxy.upstream.client import UpstreamClient, as_int
from imapproxy.upstream.connection import STALL_SECONDS, UpstreamProtocol
from imapproxy.upstream.errors import UpstreamBusy, UpstreamUnavailable, UpstreamUnreachable
from imapproxy.upstream.link import LinkState, UpstreamLink


@pytest.fixture(autouse=True)
def no_unhandled_errors() -> Iterator[None]:
    """Every Deferred the link starts must have its errors handled: a Deferred that
    is garbage-collected holding a failure logs "Unhandled error in Deferred"."""
    seen: list[dict] = []

    @provider(ILogObserver)
    def observe(event: dict) -> None:
        if event.get("isError") or "log_failure" in event:
            seen.append(event)

    globalLogPublisher.addObserver(observe)
    try:
        yield
        gc.collect()
    finally:
        globalLogPublisher.removeObserver(observe)
    assert not seen, [str(e.get("log_failure") or e) for e in seen]


class FakeTransport(StringTransport):
    def __init__(self, server: FakeConnection) -> None:
        super().__init__()
        self.server = server

    def write(self, data: bytes) -> None:
        super().write(data)
        self.server.clock.callLater(0, self.server.received)

    def loseConnection(self) -> None:
        self.abortConnection()

    def abortConnection(self) -> None:
        if not self.disconnected:
            self.disconnected = True
            self.server.clock.callLater(
                0, self.server.protocol.connectionLost, Failure(ConnectionDone())
            )


class FakeConnection:
    """One scripted upstream connection: answers NOOP, SELECT, IDLE/DONE, UID FETCH,
    LOGOUT; with ``stalled`` set it reads and never answers (a dead network)."""

    def __init__(self, server: FakeServer) -> None:
        self.server = server
        self.clock = server.clock
        self.protocol = UpstreamProtocol(self.clock)
        self.transport = FakeTransport(self)
        self.protocol.makeConnection(self.transport)
        self.protocol.dataReceived(b"* OK fake ready\r\n")
        self.pending = b""
        self.idle_tag: bytes | None = None
        self.commands: list[bytes] = []
        #: The command lines of each read: lines sent together arrive in one.
        self.reads: list[list[bytes]] = []

    def received(self) -> None:
        self.pending += self.transport.value()
        self.transport.clear()
        lines: list[bytes] = []
        while b"\r\n" in self.pending:
            line, self.pending = self.pending.split(b"\r\n", 1)
            self.commands.append(line)
            lines.append(line)
            if not self.server.stalled and not self.transport.disconnected:
                self.answer(line)
        if lines:
            self.reads.append(lines)

    def send(self, data: bytes) -> None:
        self.protocol.dataReceived(data)

    def answer(self, line: bytes) -> None:
        if line == b"DONE" and self.server.done_reply is not None:
            self.send(self.server.done_reply)
            if self.server.close_after_done:
                self.transport.abortConnection()
            return
        if line == b"DONE":
            assert self.idle_tag is not None
            tag, self.idle_tag = self.idle_tag, None
            self.send(tag + b" OK idle done\r\n")
            return
        tag, _, rest = line.partition(b" ")
        name = rest.split(b" ")[0].upper()
        if name == b"IDLE":
            self.idle_tag = tag
            self.send(b"+ idling\r\n")
        elif name in (b"SELECT", b"EXAMINE"):
            self.send(b"* 3 EXISTS\r\n* OK [UIDVALIDITY 7] ok\r\n" + tag + b" OK selected\r\n")
        elif name == b"UID" and rest.upper().startswith(b"UID FETCH"):
            self.send(self.server.fetch_reply + tag + b" OK fetched\r\n")
        elif name == b"LOGOUT":
            self.send(b"* BYE bye\r\n" + tag + b" OK\r\n")
        else:
            self.send(tag + b" OK done\r\n")


class FakeServer:
    def __init__(self) -> None:
        self.clock = Clock()
        self.connections: list[FakeConnection] = []
        self.attempts: list[float] = []
        self.stalled = False
        self.refuse = False
        self.hang = False
        self.fetch_reply = b"* 1 FETCH (UID 1 FLAGS ())\r\n"
        self.done_reply: bytes | None = None
        self.close_after_done = False

    async def connect(self, *args: Any, **kwargs: Any) -> UpstreamClient:
        self.attempts.append(self.clock.seconds())
        if self.refuse:
            raise UpstreamUnreachable("connection refused")
        if self.hang or self.stalled:
            # A greeting that never comes; like connect(), give up after its timeout.
            try:
                await defer.Deferred().addTimeout(kwargs["timeout"], self.clock)
            except defer.TimeoutError:
                raise UpstreamUnreachable("no greeting") from None
        connection = FakeConnection(self)
        self.connections.append(connection)
        return UpstreamClient(connection.protocol, {"IMAP4REV1", "IDLE", "UIDPLUS"})

    def run(self, seconds: float, step: float = 0.1) -> None:
        for _ in range(round(seconds / step)):
            self.clock.advance(step)


def make_link(server: FakeServer, seed: int = 1) -> UpstreamLink:
    return UpstreamLink(
        server.clock,
        UpstreamAddress.parse("imap+plain://127.0.0.1:1"),
        b"u",
        b"p",
        connector=server.connect,
        rng=random.Random(seed),
    )


async def _noop(client: UpstreamClient) -> None:
    await client.noop()


def start(link: UpstreamLink, server: FakeServer, op: Any = _noop) -> defer.Deferred:
    d = defer.ensureDeferred(link.use(op))
    server.clock.advance(0)
    return d


def idling(server: FakeServer) -> tuple[UpstreamLink, FakeConnection]:
    link = make_link(server)
    d = start(link, server)
    assert d.called and d.result is None
    link.watch("INBOX", lambda _: None)
    server.run(0.5)
    assert link.state is LinkState.IDLING
    return link, server.connections[-1]


def stall(link: UpstreamLink, server: FakeServer) -> None:
    """Stall the network and let the link find out (its next operation fails)."""
    server.stalled = True
    d = start(link, server)
    limit = link_module.IDLE_SWITCH_SECONDS if link.state is LinkState.IDLING else STALL_SECONDS
    server.run(limit + 1.5)
    assert isinstance(error_of(d), UpstreamUnavailable)


def error_of(d: defer.Deferred) -> BaseException:
    assert d.called
    failure = d.result
    d.addErrback(lambda _: None)
    assert isinstance(failure, Failure), failure
    return failure.value


# -- the stall that used to cost 45 s ---------------------------------------------


def test_a_stall_while_idling_fails_the_next_operation_within_seconds() -> None:
    server = FakeServer()
    link, _ = idling(server)
    server.stalled = True
    d = start(link, server)
    server.run(link_module.IDLE_SWITCH_SECONDS - 0.5)
    assert not d.called
    server.run(1.5)
    assert isinstance(error_of(d), UpstreamUnavailable)
    # Meanwhile operations fail at once, without a connect attempt of their own.
    for _ in range(20):
        assert link.state in (LinkState.BACKING_OFF, LinkState.CONNECTING)
        attempts = len(server.attempts)
        again = start(link, server)
        assert isinstance(error_of(again), UpstreamUnreachable)
        assert len(server.attempts) == attempts
        server.run(0.5)


def test_after_a_stall_the_link_comes_back_by_itself() -> None:
    server = FakeServer()
    link, first = idling(server)
    stall(link, server)
    server.run(30)  # attempts hang on the stalled network, then time out
    assert link.state in (LinkState.CONNECTING, LinkState.BACKING_OFF)
    server.stalled = False
    server.run(70)
    assert link.state is LinkState.IDLING
    assert server.connections[-1] is not first
    assert start(link, server).result is None


def test_an_operation_waits_briefly_for_an_attempt_after_a_failure() -> None:
    """A connection attempt that hangs does not hold operations: they wait at most
    SUSPECT_WAIT_SECONDS and the attempt goes on without them."""
    server = FakeServer()
    link = make_link(server)
    start(link, server)  # connected, nobody watching: no background attempts
    stall(link, server)
    server.run(link_module.FAIL_FAST_SECONDS + 0.5)
    assert link.state is LinkState.BACKING_OFF
    d = start(link, server)
    server.run(link_module.SUSPECT_WAIT_SECONDS + 0.5)
    assert isinstance(error_of(d), UpstreamUnreachable)


@pytest.mark.parametrize(
    "reply", [b"\x00\xff garbage\r\n", b"Q9 OK never sent\r\n", b"* 1 FETCH (((\r\n"]
)
def test_a_wrong_answer_to_done_fails_the_operation_and_backs_off(reply: bytes) -> None:
    server = FakeServer()
    link, connection = idling(server)
    server.done_reply = reply
    d = start(link, server)
    server.run(0.2)
    assert isinstance(error_of(d), UpstreamUnavailable)
    assert connection.transport.disconnected
    assert link.state in (LinkState.BACKING_OFF, LinkState.CONNECTING)
    server.done_reply = None
    server.run(3)
    assert link.state is LinkState.IDLING
    assert start(link, server).result is None


def test_a_connection_the_server_closes_is_replaced_by_the_next_operation() -> None:
    """A BYE (Dovecot's answer to deleting the mailbox a session has selected) is not
    a dead link: no fail-fast window, the next operation simply reconnects."""
    server = FakeServer()
    link, connection = idling(server)
    connection.send(b"* BYE mailbox deleted\r\n")
    connection.transport.abortConnection()
    server.clock.advance(0)
    assert link.state is LinkState.DISCONNECTED
    assert start(link, server).result is None
    assert len(server.connections) == 2


def test_a_stalled_command_fails_within_the_stall_limit() -> None:
    server = FakeServer()
    link = make_link(server)
    start(link, server)
    server.stalled = True
    d = start(link, server)
    server.run(9.5)
    assert isinstance(error_of(d), UpstreamUnavailable)
    assert link.state is LinkState.BACKING_OFF


def _read_noop(link: UpstreamLink, server: FakeServer) -> defer.Deferred:
    d = defer.ensureDeferred(link.use(_noop, reads_only=True))
    server.clock.advance(0)
    return d


def test_a_read_goes_out_with_done_not_a_round_trip_after_it() -> None:
    """A command that changes nothing follows IDLE's DONE in the same write (RFC 2177
    lets it): a body read after a quiet spell costs one round trip, not two."""
    server = FakeServer()
    link, connection = idling(server)
    d = _read_noop(link, server)
    assert d.called and d.result is None
    assert [line.split(b" ")[-1] for line in connection.reads[-1]] == [b"DONE", b"NOOP"]
    server.run(link_module.IDLE_DELAY_SECONDS + 0.2)
    assert link.state is LinkState.IDLING  # and back to IDLE afterwards


def test_other_work_waits_for_idles_answer_before_its_command() -> None:
    server = FakeServer()
    link, connection = idling(server)
    d = start(link, server)
    assert d.called and d.result is None
    last = [[line.split(b" ")[-1] for line in read] for read in connection.reads[-2:]]
    assert last == [[b"DONE"], [b"NOOP"]]


def test_a_read_behind_done_runs_again_when_the_connection_closed_as_idle_ended() -> None:
    """The upstream said BYE and closed instead of answering DONE: the read sent behind
    it may not have been read at all, and it changes nothing, so it simply goes again on
    a new connection, as it would have had it waited for IDLE's answer."""
    server = FakeServer()
    link, _ = idling(server)
    server.done_reply = b"* BYE shutting down\r\n"
    server.close_after_done = True
    d = _read_noop(link, server)
    server.run(0.2)
    assert d.called and d.result is None
    assert len(server.connections) == 2
    assert server.connections[-1].commands[-1].endswith(b"NOOP")


def test_a_wrong_answer_to_done_fails_the_read_behind_it_and_backs_off() -> None:
    server = FakeServer()
    link, connection = idling(server)
    server.done_reply = b"\x00\xff garbage\r\n"
    d = _read_noop(link, server)
    server.run(0.2)
    assert isinstance(error_of(d), UpstreamUnavailable)
    assert connection.transport.disconnected
    assert link.state in (LinkState.BACKING_OFF, LinkState.CONNECTING)


# -- keepalive -----------------------------------------------------------------------


def test_keepalive_leaves_idle_sends_noop_and_idles_again() -> None:
    server = FakeServer()
    _, connection = idling(server)
    before = len(connection.commands)
    server.run(link_module.KEEPALIVE_SECONDS - 1)
    assert len(connection.commands) == before
    server.run(2)
    names = [c.split(b" ")[-1] for c in connection.commands[before:]]
    assert names == [b"DONE", b"NOOP", b"IDLE"]


def test_keepalive_finds_a_link_that_died_quietly() -> None:
    server = FakeServer()
    link, _ = idling(server)
    server.stalled = True
    server.run(link_module.KEEPALIVE_SECONDS + link_module.IDLE_SWITCH_SECONDS + 2)
    assert link.state in (LinkState.BACKING_OFF, LinkState.CONNECTING)


def test_the_upstream_ending_idle_is_followed_by_a_new_idle() -> None:
    server = FakeServer()
    link, connection = idling(server)
    tag = connection.idle_tag
    assert tag is not None
    connection.idle_tag = None
    connection.send(tag + b" OK IDLE terminated\r\n")
    server.run(0.5)
    assert link.state is LinkState.IDLING
    assert connection.commands[-1].endswith(b"IDLE")


# -- backoff -----------------------------------------------------------------------------


def _attempt_gaps(seed: int) -> list[float]:
    server = FakeServer()
    server.refuse = True
    link = make_link(server, seed)
    link.watch("INBOX", lambda _: None)
    error_of(start(link, server))
    server.run(400, step=0.25)
    times = server.attempts
    return [b - a for a, b in itertools.pairwise(times)]


def test_backoff_grows_exponentially_with_jitter() -> None:
    gaps = _attempt_gaps(seed=1)
    assert len(gaps) >= 8
    for n, gap in enumerate(gaps):
        ceiling = min(link_module.RECONNECT_MAX_SECONDS, link_module.RECONNECT_MIN_SECONDS * 2**n)
        assert ceiling / 2 - 0.3 <= gap <= ceiling + 0.3, (n, gaps)
    assert max(gaps) <= link_module.RECONNECT_MAX_SECONDS + 0.3
    other = _attempt_gaps(seed=2)
    assert [round(g, 1) for g in gaps[:6]] != [round(g, 1) for g in other[:6]]


def test_an_upstream_that_logs_in_then_misbehaves_is_backed_off_from() -> None:
    """Each connection works until its first command, which gets garbage: the
    successful logins must not reset the backoff."""
    server = FakeServer()
    server.fetch_reply = b"\x00garbage\r\n"
    link = make_link(server)
    link.watch("INBOX", lambda _: None)

    async def fetch(client: UpstreamClient) -> None:
        await client.fetch(SequenceSet(((1, None),)), (FetchAttribute("FLAGS"),))

    def on_connected() -> None:
        defer.ensureDeferred(link.use(fetch)).addErrback(lambda _: None)

    link.on_connected = on_connected
    error_of(start(link, server, fetch))
    server.run(120, step=0.25)
    assert 4 <= len(server.attempts) <= 9, server.attempts
    gaps = [b - a for a, b in itertools.pairwise(server.attempts)]
    assert gaps[-1] > 8 * gaps[0], gaps


def test_close_stops_the_attempts() -> None:
    server = FakeServer()
    server.refuse = True
    link = make_link(server)
    link.watch("INBOX", lambda _: None)
    error_of(start(link, server))
    closed = defer.ensureDeferred(link.close())
    server.run(1)
    assert closed.called
    count = len(server.attempts)
    server.run(200)
    assert len(server.attempts) == count
    assert link.state is LinkState.CLOSED
    assert isinstance(error_of(start(link, server)), UpstreamUnreachable)


# -- wrong answers ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    "reply",
    [
        b"* 1 FETCH (UID abc FLAGS ())\r\n",  # a UID that is not a number
        b"* 1 FETCH (UID 1 FLAGS)\r\n",  # an odd item list
        b"* 1 FETCH UID\r\n",  # not a list at all
    ],
)
def test_a_malformed_fetch_costs_the_connection_not_the_caller(reply: bytes) -> None:
    server = FakeServer()
    link = make_link(server)
    start(link, server)
    server.fetch_reply = reply

    async def fetch_uids(client: UpstreamClient) -> list[int]:
        items = await client.fetch(SequenceSet(((1, None),)), (FetchAttribute("FLAGS"),))
        return [as_int(i["UID"]) for i in items]

    d = start(link, server, fetch_uids)
    server.run(0.5)
    assert isinstance(error_of(d), UpstreamUnavailable)
    assert link.state is LinkState.BACKING_OFF
    assert server.connections[0].transport.disconnected


def test_a_select_answer_without_uidvalidity_is_refused_not_taken_as_empty() -> None:
    """OK to SELECT with no EXISTS and no UIDVALIDITY would read as an empty,
    renumbered mailbox and wipe its replica: it is a malformed answer instead."""
    server = FakeServer()
    link = make_link(server)
    start(link, server)
    connection = server.connections[0]
    connection.answer = lambda line: connection.send(  # type: ignore[method-assign]
        line.split(b" ")[0] + b" OK [READ-WRITE] selected\r\n"
    )

    async def select(client: UpstreamClient) -> object:
        return await client.select("INBOX")

    d = start(link, server, select)
    server.run(0.2)
    assert isinstance(error_of(d), UpstreamUnavailable)
    assert link.state in (LinkState.BACKING_OFF, LinkState.CONNECTING)


# -- queued work keeps the link trying ----------------------------------------------


@pytest.mark.parametrize("queued", [True, False])
def test_queued_work_keeps_the_link_trying_without_a_watching_client(queued: bool) -> None:
    """With nobody watching a mailbox, the link reconnects on its own only while
    something waits for the upstream (the outbox's queued changes), and then
    reports the connection so the replay can start."""
    server = FakeServer()
    link = make_link(server)
    link.keep_trying = lambda: queued
    connected: list[float] = []
    link.on_connected = lambda: connected.append(server.clock.seconds())
    start(link, server)
    stall(link, server)
    attempts = len(server.attempts)
    server.stalled = False
    server.run(30)
    if queued:
        assert len(server.attempts) > attempts
        assert link.state is LinkState.READY
        assert connected and connected[-1] > 0
    else:
        assert len(server.attempts) == attempts
        assert link.state is LinkState.BACKING_OFF


def test_a_failing_keep_trying_hook_means_try() -> None:
    server = FakeServer()
    link = make_link(server)

    def broken() -> bool:
        raise RuntimeError("store closed")

    link.keep_trying = broken
    start(link, server)
    stall(link, server)
    attempts = len(server.attempts)
    server.stalled = False
    server.run(30)
    assert len(server.attempts) > attempts
    assert link.known_down is False


# -- IDLE between commands -------------------------------------------------------------


def test_commands_in_quick_succession_do_not_leave_and_reenter_idle_between_them() -> None:
    """A client reading bodies one command after another: one round trip each, no
    DONE/IDLE pair between them; IDLE once the link has been free for a moment."""
    server = FakeServer()
    link, connection = idling(server)
    before = len(connection.commands)
    for _ in range(3):
        d = start(link, server)
        server.run(0.1)
        assert d.called and d.result is None
    names = [c.split(b" ")[-1] for c in connection.commands[before:]]
    assert names == [b"DONE", b"NOOP", b"NOOP", b"NOOP"]
    server.run(link_module.IDLE_DELAY_SECONDS + 0.2)
    assert link.state is LinkState.IDLING
    assert connection.commands[-1].endswith(b"IDLE")


# -- a client's wait behind another operation ---------------------------------------


async def _slow_search(client: UpstreamClient) -> None:
    """A command the proxy lets run long without a byte (a SEARCH over bodies)."""
    await client.protocol.run(lambda tag: [[f"{tag} UID SEARCH BODY x\r\n".encode()]], patience=30)


def test_a_client_operation_behind_a_stalled_slow_command_fails_busy_in_client_wait() -> None:
    server = FakeServer()
    link = make_link(server)
    assert start(link, server).called
    server.stalled = True  # the link dies under the slow command
    holder = start(link, server, _slow_search)
    waiter = start(link, server)
    server.run(link.client_wait - 0.2)
    assert not waiter.called
    server.run(0.4)
    error = error_of(waiter)
    assert isinstance(error, UpstreamBusy) and isinstance(error, UpstreamUnavailable)
    assert server.connections[-1].commands[-1].endswith(b"UID SEARCH BODY x"), "nothing sent"
    # Background work waits its turn; the slow command fails at its own patience.
    background = defer.ensureDeferred(link.use(_noop, background=True))
    server.run(25.0)
    assert not background.called
    server.run(10.0)
    assert isinstance(error_of(holder), UpstreamUnavailable)
    assert isinstance(error_of(background), UpstreamUnavailable)


@pytest.mark.parametrize("wait", [0.5, 8.0])
def test_client_wait_is_configurable(wait: float) -> None:
    server = FakeServer()
    link = make_link(server)
    link.client_wait = wait
    assert start(link, server).called
    server.stalled = True
    holder = start(link, server, _slow_search)
    waiter = start(link, server)
    server.run(wait - 0.2)
    assert not waiter.called
    server.run(0.4)
    assert isinstance(error_of(waiter), UpstreamBusy)
    server.run(40.0)
    error_of(holder)


def test_a_free_link_serves_a_client_at_once_whatever_client_wait() -> None:
    server = FakeServer()
    link = make_link(server)
    link.client_wait = 0.0
    assert start(link, server).called
    d = start(link, server)
    assert d.called and d.result is None


def test_a_client_hears_back_within_its_bound_while_a_slow_command_runs_on() -> None:
    """use_within: the client gets UpstreamBusy at its bound (the replica answers it);
    the command itself goes on and ends by the link's own stall detection."""
    server = FakeServer()
    link = make_link(server)
    assert start(link, server).called
    server.stalled = True  # the link dies under the search
    answer = defer.ensureDeferred(link.use_within(_slow_search, 10.0))
    server.run(9.8)
    assert not answer.called
    server.run(0.4)
    assert isinstance(error_of(answer), UpstreamBusy)
    server.run(30.0)  # the search's own patience: the link fails, nothing unhandled
    assert server.connections[-1].commands[-1].endswith(b"UID SEARCH BODY x")


def test_an_answer_within_the_bound_is_the_upstreams() -> None:
    server = FakeServer()
    link = make_link(server)
    assert start(link, server).called
    answer = defer.ensureDeferred(link.use_within(_noop, 10.0))
    server.run(0.1)
    assert answer.called and answer.result is None
    server.run(20.0)  # the timer is gone: nothing fires later


async def _busy_for_ten_seconds(client: UpstreamClient) -> None:
    """An operation that keeps the upstream answering (a long sync, a big fetch)."""
    for _ in range(50):
        await client.noop()
        await task.deferLater(client.protocol.clock, 0.2, lambda: None)


def test_a_client_waits_its_turn_behind_an_operation_that_progresses() -> None:
    """Busy is not dead: while the operation ahead keeps getting answers, a client's
    operation waits for it (well past client_wait) instead of failing."""
    server = FakeServer()
    link = make_link(server)
    assert start(link, server).called
    holder = start(link, server, _busy_for_ten_seconds)
    waiter = start(link, server)
    server.run(link.client_wait + 2.0)
    assert not waiter.called
    server.run(10.0)
    assert holder.called and holder.result is None
    assert waiter.called and waiter.result is None


# -- spare work gives way to the link's other users ------------------------------------


def _noop_count(connection: FakeConnection) -> int:
    return sum(1 for c in connection.commands if c.endswith(b"NOOP"))


def test_spare_work_waits_while_a_client_keeps_the_link_busy() -> None:
    """A client reading bodies one after another: the background's turn comes once the
    client has left the link alone for SPARE_QUIET_SECONDS, not between two reads."""
    server = FakeServer()
    link = make_link(server)
    assert start(link, server).called
    spare = defer.ensureDeferred(link.use(_noop, spare=True))
    for _ in range(20):  # 2 s of a client's commands, 0.1 s apart
        assert start(link, server).called
        server.run(0.1)
        assert not spare.called
    server.run(link_module.SPARE_QUIET_SECONDS - 0.2)
    assert not spare.called
    server.run(0.3)
    assert spare.called and spare.result is None


def test_spare_work_on_a_quiet_link_runs_at_once() -> None:
    server = FakeServer()
    link = make_link(server)
    spare = defer.ensureDeferred(link.use(_noop, spare=True))
    server.clock.advance(0)
    assert spare.called and spare.result is None
    assert start(link, server).called
    server.run(link_module.SPARE_QUIET_SECONDS + 0.1)
    connection = server.connections[-1]
    before = _noop_count(connection)
    spare = defer.ensureDeferred(link.use(_noop, spare=True))
    server.clock.advance(0)
    assert spare.called and _noop_count(connection) == before + 1


def test_spare_work_does_not_wait_for_spare_work() -> None:
    """A background pass's turns follow one another without a pause between them."""
    server = FakeServer()
    link = make_link(server)
    first = defer.ensureDeferred(link.use(_noop, spare=True))
    second = defer.ensureDeferred(link.use(_noop, spare=True))
    server.clock.advance(0)
    assert first.called and second.called


def test_spare_work_gets_its_turn_on_a_link_that_is_never_quiet() -> None:
    server = FakeServer()
    link = make_link(server)
    assert start(link, server).called
    spare = defer.ensureDeferred(link.use(_noop, spare=True))
    waited = 0.0
    while not spare.called and waited < 30:
        start(link, server)
        server.run(0.1)
        waited += 0.1
    assert spare.called and spare.result is None
    assert (
        link_module.SPARE_AT_LATEST_SECONDS - 0.2
        <= waited
        <= (link_module.SPARE_AT_LATEST_SECONDS + 0.3)
    )
    # The rest of the pass then takes its turns among the client's for a while...
    follower = defer.ensureDeferred(link.use(_noop, spare=True))
    start(link, server)
    server.run(0.1)
    assert follower.called and follower.result is None
    # ... and after that waits for a quiet link again.
    server.run(link_module.SPARE_BURST_SECONDS)
    start(link, server)
    late = defer.ensureDeferred(link.use(_noop, spare=True))
    for _ in range(5):
        start(link, server)
        server.run(0.1)
    assert not late.called
    server.run(link_module.SPARE_QUIET_SECONDS + 0.2)
    assert late.called and late.result is None


def test_a_client_refused_as_busy_still_counts_as_having_wanted_the_link() -> None:
    """A client's operation that gave up waiting (UpstreamBusy) leaves the count of
    those waiting as it found it: spare work is not held back for ever after."""
    server = FakeServer()
    link = make_link(server)
    assert start(link, server).called
    server.stalled = True
    holder = start(link, server, _slow_search)
    waiter = start(link, server)
    server.run(link.client_wait + 0.5)
    assert isinstance(error_of(waiter), UpstreamBusy)
    server.run(40.0)
    error_of(holder)
    assert link._pressing == 0


# -- the watched mailbox opened ahead of the client's reads ---------------------------


def _names(commands: list[bytes]) -> list[bytes]:
    """Each command's name and first argument, tag left out (DONE has no tag)."""
    return [b" ".join(c.split(b" ")[1:3]) if c != b"DONE" else c for c in commands]


def test_a_mailbox_a_client_selects_is_opened_at_once_not_when_idle_is_due() -> None:
    """The client reads from it next: its first read would pay the EXAMINE's round trip."""
    server = FakeServer()
    link = make_link(server)
    assert start(link, server).called
    connection = server.connections[-1]
    before = len(connection.commands)
    link.watch("Sent", lambda _: None)
    server.clock.advance(0)
    assert _names(connection.commands[before:]) == [b'EXAMINE "Sent"']
    server.run(link_module.IDLE_DELAY_SECONDS + 0.2)
    assert link.state is LinkState.IDLING  # IDLE then follows on it, no second EXAMINE
    assert _names(connection.commands[before:]) == [b'EXAMINE "Sent"', b"IDLE"]


def test_a_link_idling_elsewhere_opens_the_new_mailbox_in_the_same_write_as_done() -> None:
    server = FakeServer()
    link, connection = idling(server)
    link.watch("Sent", lambda _: None)
    server.clock.advance(0)
    assert _names(connection.reads[-1]) == [b"DONE", b'EXAMINE "Sent"']
    server.run(link_module.IDLE_DELAY_SECONDS + 0.2)
    assert link.state is LinkState.IDLING
    assert _names(connection.commands[-1:]) == [b"IDLE"]


def test_a_mailbox_the_connection_has_open_is_not_opened_again() -> None:
    server = FakeServer()
    link = make_link(server)

    async def select_inbox(client: UpstreamClient) -> None:
        await client.ensure_selected("INBOX")

    assert start(link, server, select_inbox).called
    connection = server.connections[-1]
    before = len(connection.commands)
    link.watch("INBOX", lambda _: None)
    server.clock.advance(0)
    assert connection.commands[before:] == []
    server.run(link_module.IDLE_DELAY_SECONDS + 0.2)
    assert _names(connection.commands[before:]) == [b"IDLE"]
