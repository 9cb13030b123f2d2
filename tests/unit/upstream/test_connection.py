"""The upstream connection against a scripted peer: misbehaviour the real server won't show."""

from __future__ import annotations

import pytest
from twisted.internet import defer
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport

from imapproxy.upstream.connection import UpstreamProtocol
from imapproxy.upstream.errors import UpstreamRefused, UpstreamUnavailable


def connected() -> tuple[UpstreamProtocol, StringTransport, Clock]:
    clock = Clock()
    protocol = UpstreamProtocol(clock, command_timeout=5.0)
    transport = StringTransport()
    protocol.makeConnection(transport)
    protocol.dataReceived(b"* OK ready\r\n")
    return protocol, transport, clock


def run(protocol: UpstreamProtocol, line: bytes) -> defer.Deferred:
    return defer.ensureDeferred(protocol.run(lambda tag: [[tag.encode() + b" " + line + b"\r\n"]]))


def test_greeting_and_a_command_with_untagged_data() -> None:
    protocol, transport, _ = connected()
    assert protocol.greeting.called
    d = run(protocol, b"NOOP")
    assert transport.value() == b"P1 NOOP\r\n"
    protocol.dataReceived(b"* 3 EXISTS\r\nP1 OK done\r\n")
    result = d.result
    assert result.text == "done"
    assert [u.number for u in result.data("EXISTS")] == [3]


def test_no_reaches_the_caller_with_code_and_text() -> None:
    protocol, _, _ = connected()
    d = run(protocol, b"SELECT nope")
    protocol.dataReceived(b"P1 NO [TRYCREATE] no such mailbox\r\n")
    failure = d.result
    d.addErrback(lambda _: None)
    assert isinstance(failure.value, UpstreamRefused)
    assert failure.value.code.name == "TRYCREATE"
    assert failure.value.text == "no such mailbox"


def test_garbage_from_upstream_fails_the_command_and_drops_the_link() -> None:
    protocol, transport, _ = connected()
    d = run(protocol, b"NOOP")
    protocol.dataReceived(b"* 1 FETCH (UID\r\n")
    protocol.dataReceived(b"P1 OK\r\n")
    with pytest.raises(UpstreamUnavailable):
        d.result.raiseException()
    d.addErrback(lambda _: None)
    assert transport.disconnecting or transport.disconnected


def test_connection_lost_mid_command() -> None:
    protocol, _, _ = connected()
    d = run(protocol, b"UID FETCH 1:* (BODY.PEEK[])")
    protocol.dataReceived(b"* 1 FETCH (UID 1 BODY[] {100}\r\npartial")
    protocol.connectionLost(None)
    assert isinstance(d.result.value, UpstreamUnavailable)
    d.addErrback(lambda _: None)


def test_a_stalled_upstream_times_out() -> None:
    protocol, transport, clock = connected()
    d = run(protocol, b"NOOP")
    clock.advance(6)
    assert transport.disconnecting or transport.disconnected
    assert isinstance(d.result.value, UpstreamUnavailable)
    d.addErrback(lambda _: None)


def test_unexpected_tag_drops_the_link() -> None:
    protocol, transport, _ = connected()
    d = run(protocol, b"NOOP")
    protocol.dataReceived(b"X9 OK what\r\n")
    assert isinstance(d.result.value, UpstreamUnavailable)
    assert transport.disconnecting or transport.disconnected
    d.addErrback(lambda _: None)


def pipelined(protocol: UpstreamProtocol, *lines: bytes) -> defer.Deferred:
    makers = [lambda tag, line=line: [tag.encode() + b" " + line + b"\r\n"] for line in lines]
    return defer.ensureDeferred(protocol.run_pipelined(makers))


def test_pipelined_commands_go_in_one_write_and_each_gets_its_own_answers() -> None:
    protocol, transport, _ = connected()
    d = pipelined(protocol, b"EXAMINE INBOX", b"UID FETCH 1:* (FLAGS)")
    # Both are on the wire before any answer: one round trip.
    assert transport.value() == b"P1 EXAMINE INBOX\r\nP2 UID FETCH 1:* (FLAGS)\r\n"
    protocol.dataReceived(b"* 2 EXISTS\r\nP1 OK [READ-ONLY] examined\r\n")
    assert not d.called
    protocol.dataReceived(b"* 1 FETCH (UID 7 FLAGS ())\r\nP2 OK fetched\r\n")
    examined, fetched = d.result
    assert [u.number for u in examined.data("EXISTS")] == [2]
    assert examined.data("FETCH") == []
    assert [u.number for u in fetched.data("FETCH")] == [1]
    # The link is free again: a plain command runs next.
    after = run(protocol, b"NOOP")
    protocol.dataReceived(b"P3 OK\r\n")
    assert after.result.text == ""


def test_a_refused_pipelined_command_is_its_outcome_and_the_others_still_count() -> None:
    protocol, _, _ = connected()
    d = pipelined(protocol, b"EXAMINE Gone", b"UID FETCH 1:* (FLAGS)")
    protocol.dataReceived(b"P1 NO [NONEXISTENT] no such mailbox\r\nP2 BAD no mailbox selected\r\n")
    examined, fetched = d.result
    assert isinstance(examined, UpstreamRefused) and examined.code.name == "NONEXISTENT"
    assert isinstance(fetched, UpstreamRefused) and fetched.status == "BAD"


def test_a_connection_lost_under_pipelined_commands_fails_them_all_once() -> None:
    protocol, _, _ = connected()
    d = pipelined(protocol, b"EXAMINE INBOX", b"UID FETCH 1:* (FLAGS)", b"NOOP")
    protocol.dataReceived(b"P1 OK examined\r\n* 1 FETCH (UID 7")
    protocol.connectionLost(None)
    assert isinstance(d.result.value, UpstreamUnavailable)
    d.addErrback(lambda _: None)


def test_an_answer_out_of_order_drops_the_link() -> None:
    protocol, transport, _ = connected()
    d = pipelined(protocol, b"EXAMINE INBOX", b"NOOP")
    protocol.dataReceived(b"P2 OK\r\n")
    assert isinstance(d.result.value, UpstreamUnavailable)
    d.addErrback(lambda _: None)
    assert transport.disconnecting or transport.disconnected
