"""A hostile or broken upstream costs at most its connection: scripted misbehaviour
against the real UpstreamProtocol, with memory measured where it could grow."""

from __future__ import annotations

import tracemalloc
from collections.abc import Iterator
from contextlib import contextmanager

import pytest
from twisted.internet import defer
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport

from imapproxy.protocol import DEFAULT_MAX_LITERAL
from imapproxy.upstream import connection
from imapproxy.upstream.connection import UpstreamProtocol
from imapproxy.upstream.errors import UpstreamUnavailable

MiB = 1 << 20


def connected() -> tuple[UpstreamProtocol, StringTransport, Clock]:
    clock = Clock()
    protocol = UpstreamProtocol(clock)
    transport = StringTransport()
    protocol.makeConnection(transport)
    protocol.dataReceived(b"* OK ready\r\n")
    return protocol, transport, clock


def run(protocol: UpstreamProtocol, line: bytes, **kwargs: float) -> defer.Deferred:
    d = defer.ensureDeferred(
        protocol.run(lambda tag: [[tag.encode() + b" " + line + b"\r\n"]], **kwargs)  # type: ignore[arg-type]
    )
    return d


def failure_of(d: defer.Deferred) -> UpstreamUnavailable:
    assert d.called, "the command is still waiting"
    failure = d.result
    d.addErrback(lambda _: None)
    assert isinstance(failure.value, UpstreamUnavailable), failure
    return failure.value


def dropped(transport: StringTransport) -> bool:
    return bool(transport.disconnecting or transport.disconnected)


@contextmanager
def peak_memory() -> Iterator[list[int]]:
    """Yields a list that holds the peak of traced allocations afterwards (bytes)."""
    out: list[int] = []
    tracemalloc.start()
    try:
        yield out
    finally:
        out.append(tracemalloc.get_traced_memory()[1])
        tracemalloc.stop()


def stream(protocol: UpstreamProtocol, total: int, chunk: bytes, stop: bool = True) -> int:
    """Feed total bytes of chunk repeatedly (as a socket would), stopping once the
    connection failed unless not stop; returns bytes fed."""
    fed = 0
    while fed < total and not (stop and protocol.broken):
        protocol.dataReceived(chunk)
        fed += len(chunk)
    return fed


# -- sizes ------------------------------------------------------------------------


def test_a_literal_of_several_gb_fails_the_connection_when_announced() -> None:
    protocol, transport, _ = connected()
    d = run(protocol, b"UID FETCH 1 (BODY.PEEK[])")
    with peak_memory() as peak:
        protocol.dataReceived(b"* 1 FETCH (UID 1 BODY[] {5000000000}\r\n")
        # The fake goes on streaming the announced literal; none of it is kept.
        assert stream(protocol, 300 * MiB, b"\0" * MiB, stop=False) == 300 * MiB
    assert "literal too big" in str(failure_of(d))
    assert dropped(transport)
    assert peak[0] < 4 * MiB, peak


def test_a_literal_just_above_the_message_limit_is_refused_before_buffering() -> None:
    protocol, transport, _ = connected()
    d = run(protocol, b"UID FETCH 1 (BODY.PEEK[])")
    with peak_memory() as peak:
        protocol.dataReceived(b"* 1 FETCH (UID 1 BODY[] {%d}\r\n" % (DEFAULT_MAX_LITERAL + 1))
        stream(protocol, 200 * MiB, b"x" * MiB, stop=False)
    assert "literal too big" in str(failure_of(d))
    assert dropped(transport)
    assert peak[0] < 4 * MiB, peak


def test_a_body_at_the_limit_is_read_in_bounded_memory() -> None:
    """A legitimate large body costs about twice its size (its chunks, then the joined
    value), not more, and the command succeeds."""
    protocol, _, _ = connected()
    size = 40 * MiB
    d = run(protocol, b"UID FETCH 1 (BODY.PEEK[])")
    with peak_memory() as peak:
        protocol.dataReceived(b"* 1 FETCH (UID 1 BODY[] {%d}\r\n" % size)
        stream(protocol, size, b"y" * (64 * 1024))
        protocol.dataReceived(b")\r\nP1 OK done\r\n")
        result = d.result
        assert len(result.data("FETCH")) == 1
        del result, d
    assert peak[0] < 2 * size + 8 * MiB, peak


def test_a_line_without_end_fails_at_the_line_limit() -> None:
    protocol, transport, _ = connected()
    d = run(protocol, b"NOOP")
    with peak_memory() as peak:
        fed = stream(protocol, 300 * MiB, b"* OK " + b"a" * (MiB - 5))
    assert "line too long" in str(failure_of(d))
    assert dropped(transport)
    assert fed <= protocol.reader.max_line + 2 * MiB
    assert peak[0] < 2 * protocol.reader.max_line + 16 * MiB, peak


def test_many_literals_in_one_response_are_capped_as_a_whole() -> None:
    protocol, _, _ = connected()
    protocol.limit_messages(4 * MiB)
    d = run(protocol, b"UID FETCH 1 (BODY.PEEK[])")
    part = b"z" * (4 * MiB)
    protocol.dataReceived(b"* 1 FETCH (UID 1")
    for n in range(100):
        if protocol.broken:
            break
        protocol.dataReceived(b" BODY[%d] {%d}\r\n" % (n, len(part)) + part)
    assert "response too big" in str(failure_of(d))
    # max_response = max(line, literal) + 16 MiB: far less than 100 parts.
    assert n * len(part) <= protocol.reader.max_response


def test_what_one_command_keeps_is_capped() -> None:
    protocol, transport, _ = connected()
    protocol.limit_messages(4 * MiB)
    d = run(protocol, b"UID FETCH 1:* (BODY.PEEK[])")
    body = b"w" * (4 * MiB)
    with peak_memory() as peak:
        for uid in range(1, 1000):
            if protocol.broken:
                break
            protocol.dataReceived(b"* %d FETCH (UID %d BODY[] {%d}\r\n" % (uid, uid, len(body)))
            protocol.dataReceived(body + b")\r\n")
    assert "for one command" in str(failure_of(d))
    assert dropped(transport)
    assert protocol.max_retained == 2 * 4 * MiB + connection.RETAINED_SLACK
    assert peak[0] < protocol.max_retained + 3 * len(body) + 4 * MiB, peak


# -- time ---------------------------------------------------------------------------


def test_silence_fails_the_command_within_the_stall_limit() -> None:
    protocol, transport, clock = connected()
    d = run(protocol, b"NOOP")
    clock.pump([1.0] * int(connection.STALL_SECONDS - 1))
    assert not d.called
    clock.pump([1.0] * 2)
    assert "sent nothing" in str(failure_of(d))
    assert dropped(transport)


def test_patience_lets_a_slow_server_think() -> None:
    protocol, _, clock = connected()
    d = run(protocol, b"UID SEARCH BODY x", patience=30.0)
    clock.pump([1.0] * 25)
    assert not d.called
    protocol.dataReceived(b"* SEARCH 1\r\nP1 OK done\r\n")
    assert d.result.data("SEARCH")


def test_a_body_that_keeps_streaming_is_alive() -> None:
    """A minute-long download at 64 KiB/s is not a stalled link."""
    protocol, _, clock = connected()
    d = run(protocol, b"UID FETCH 1 (BODY.PEEK[])")
    size = 60 * 64 * 1024
    protocol.dataReceived(b"* 1 FETCH (UID 1 BODY[] {%d}\r\n" % size)
    for _ in range(60):
        clock.advance(1.0)
        protocol.dataReceived(b"b" * (64 * 1024))
        assert not d.called
    protocol.dataReceived(b")\r\nP1 OK done\r\n")
    assert len(d.result.data("FETCH")) == 1


def test_a_drip_of_one_byte_a_second_fails() -> None:
    protocol, transport, clock = connected()
    d = run(protocol, b"UID FETCH 1 (BODY.PEEK[])")
    response = b"* 1 FETCH (UID 1 BODY[] {100000}\r\n" + b"d" * 100000
    elapsed = 0
    for byte in response:
        if d.called:
            break
        protocol.dataReceived(bytes([byte]))
        clock.advance(1.0)
        elapsed += 1
    assert "too slow" in str(failure_of(d))
    assert elapsed <= connection.RATE_WINDOW + 2 * connection.CHECK_INTERVAL
    assert dropped(transport)


def test_an_upload_in_progress_is_alive() -> None:
    """An APPEND of a large message over a slow uplink: each slice the transport takes
    is progress, though nothing comes back until the end."""
    protocol, transport, clock = connected()
    message = b"m" * (8 * MiB)
    head = b"P1 APPEND INBOX {%d+}\r\n" % len(message)
    d = defer.ensureDeferred(protocol.run(lambda tag: [[head, message, b"\r\n"]], timeout=600))
    producer = transport.producer
    assert producer is not None
    while transport.producer is not None:
        clock.advance(5.0)  # one slice every 5 s
        producer.resumeProducing()
        assert not d.called
    protocol.dataReceived(b"P1 OK [APPENDUID 1 9] done\r\n")
    assert d.result.text == "done"


# -- the wrong answers ------------------------------------------------------------


@pytest.mark.parametrize(
    "wire",
    [
        b"\x00\xff\xfe garbage \x01\r\n",
        b"P7 OK answer to a command never sent\r\n",
        b"+ continue what?\r\n",
        b"* 1 FETCH (UID 1 FLAGS (\\Seen)\r\n",
        b"* 1 FETCH (UID 1 BODY[] {3}\r\nabc UID 2))\r\n",
        b'* LIST () "/ INBOX\r\n',
    ],
)
def test_wrong_answers_fail_the_command_and_nothing_more_is_read(wire: bytes) -> None:
    protocol, transport, _ = connected()
    seen: list[object] = []
    protocol.on_untagged = seen.append
    d = run(protocol, b"NOOP")
    protocol.dataReceived(wire)
    protocol.dataReceived(b"* 9 EXISTS\r\nP1 OK late\r\n")
    failure_of(d)
    assert dropped(transport)
    assert seen == []


def test_garbage_after_an_answer_drops_the_link_and_the_next_command_fails_fast() -> None:
    protocol, transport, _ = connected()
    d = run(protocol, b"NOOP")
    protocol.dataReceived(b"P1 OK done\r\n* 1 FETCH ((((\r\n")
    assert d.result.text == "done"
    assert dropped(transport)
    assert isinstance(failure_of(run(protocol, b"NOOP")), UpstreamUnavailable)


def test_a_tagged_answer_between_commands_drops_the_link() -> None:
    protocol, transport, _ = connected()
    protocol.dataReceived(b"P1 OK nothing was sent\r\n")
    assert dropped(transport)
    d = run(protocol, b"NOOP")
    assert isinstance(failure_of(d), UpstreamUnavailable)
