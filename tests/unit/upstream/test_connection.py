"""The upstream connection against a scripted peer: misbehaviour the real server won't show."""

from __future__ import annotations

import pytest
from twisted.internet import defer
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport

from imapproxy.protocol import UntaggedData
from imapproxy.upstream.connection import UpstreamProtocol
from imapproxy.upstream.errors import ClosedAsIdleEnded, UpstreamRefused, UpstreamUnavailable


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


def with_after(protocol: UpstreamProtocol, line: bytes, trailing: bytes) -> defer.Deferred:
    return defer.ensureDeferred(
        protocol.run(
            lambda tag: [[tag.encode() + b" " + line + b"\r\n"]],
            after=lambda tag: tag.encode() + b" " + trailing + b"\r\n",
        )
    )


def test_a_command_pipelined_behind_goes_in_the_same_write_and_keeps_its_answers() -> None:
    protocol, transport, _ = connected()
    d = with_after(protocol, b"EXAMINE INBOX", b"UID FETCH 1:100 (FLAGS)")
    assert transport.value() == b"P1 EXAMINE INBOX\r\nP2 UID FETCH 1:100 (FLAGS)\r\n"
    protocol.dataReceived(b"* 2 EXISTS\r\nP1 OK [READ-ONLY] examined\r\n")
    assert not d.called
    protocol.dataReceived(b"* 1 FETCH (UID 7 FLAGS ())\r\nP2 OK fetched\r\n")
    result = d.result
    assert [u.number for u in result.data("EXISTS")] == [2] and result.data("FETCH") == []
    assert result.after.status == "OK"
    assert [u.name for u in result.after_untagged] == ["FETCH"]
    after = run(protocol, b"NOOP")  # the link is free again
    protocol.dataReceived(b"P3 OK\r\n")
    assert after.result.text == ""


def test_several_commands_pipelined_behind_each_keep_their_own_answers() -> None:
    protocol, transport, _ = connected()
    lines = [b"UID FETCH 1:100 (FLAGS)", b"EXAMINE Gone", b"UID FETCH 1:100 (FLAGS)"]
    d = defer.ensureDeferred(
        protocol.run(
            lambda tag: [[tag.encode() + b" EXAMINE INBOX\r\n"]],
            after=[lambda tag, line=line: tag.encode() + b" " + line + b"\r\n" for line in lines],
        )
    )
    assert transport.value() == (
        b"P1 EXAMINE INBOX\r\nP2 UID FETCH 1:100 (FLAGS)\r\nP3 EXAMINE Gone\r\n"
        b"P4 UID FETCH 1:100 (FLAGS)\r\n"
    )
    protocol.dataReceived(b"* 2 EXISTS\r\nP1 OK [READ-ONLY] examined\r\n")
    protocol.dataReceived(b"* 1 FETCH (UID 7 FLAGS ())\r\nP2 OK fetched\r\n")
    protocol.dataReceived(b"P3 NO [NONEXISTENT] no such mailbox\r\n")
    assert not d.called
    protocol.dataReceived(b"* 9 EXISTS\r\nP4 BAD no mailbox selected\r\n")
    result = d.result
    assert [u.number for u in result.data("EXISTS")] == [2]
    answers = [(f.tag, f.tagged.status, [u.name for u in f.untagged]) for f in result.followers]
    assert answers == [("P2", "OK", ["FETCH"]), ("P3", "NO", []), ("P4", "BAD", ["EXISTS"])]
    assert not (transport.disconnecting or transport.disconnected)


def test_a_follower_answered_out_of_order_drops_the_link() -> None:
    protocol, transport, _ = connected()
    d = defer.ensureDeferred(
        protocol.run(
            lambda tag: [[tag.encode() + b" EXAMINE INBOX\r\n"]],
            after=[lambda tag: tag.encode() + b" NOOP\r\n"] * 2,
        )
    )
    protocol.dataReceived(b"P1 OK examined\r\nP3 OK\r\n")
    assert isinstance(d.result.value, UpstreamUnavailable)
    d.addErrback(lambda _: None)
    assert transport.disconnecting or transport.disconnected


def test_a_refused_command_with_one_behind_it_waits_for_both_then_fails() -> None:
    protocol, transport, _ = connected()
    d = with_after(protocol, b"EXAMINE Gone", b"UID FETCH 1:100 (FLAGS)")
    protocol.dataReceived(b"P1 NO [NONEXISTENT] no such mailbox\r\n")
    assert not d.called  # the trailing answer is still to come: the link stays in step
    protocol.dataReceived(b"P2 BAD no mailbox selected\r\n")
    assert isinstance(d.result.value, UpstreamRefused) and d.result.value.code.name == "NONEXISTENT"
    d.addErrback(lambda _: None)
    assert not (transport.disconnecting or transport.disconnected)


def test_the_trailing_answer_first_drops_the_link() -> None:
    protocol, transport, _ = connected()
    d = with_after(protocol, b"EXAMINE INBOX", b"NOOP")
    protocol.dataReceived(b"P2 OK\r\n")
    assert isinstance(d.result.value, UpstreamUnavailable)
    d.addErrback(lambda _: None)
    assert transport.disconnecting or transport.disconnected


def test_consume_takes_responses_as_they_come_and_they_are_not_kept() -> None:
    """A first sync's message list of any size: each response goes to consume as it
    arrives, is not kept in the Result and does not count against max_retained."""
    protocol, _, _ = connected()
    protocol.max_retained = 200
    taken: list[int | None] = []

    def consume(data: UntaggedData) -> bool:
        if data.name != "FETCH":
            return False
        taken.append(data.number)
        return True

    d = defer.ensureDeferred(
        protocol.run(lambda tag: [[tag.encode() + b" FETCH 1:9 (UID)\r\n"]], consume=consume)
    )
    for number in range(1, 10):
        protocol.dataReceived(
            b"* %d FETCH (UID %d FLAGS (\\Seen \\Answered))\r\n" % (number, number)
        )
        assert taken[-1] == number  # taken at once, not at the tagged answer
    protocol.dataReceived(b"* 10 EXISTS\r\nP1 OK done\r\n")
    result = d.result
    assert result.data("FETCH") == []
    assert [u.number for u in result.data("EXISTS")] == [10]  # what consume left is kept
    assert not protocol.broken


def test_what_consume_leaves_still_counts_against_max_retained() -> None:
    protocol, _, _ = connected()
    protocol.max_retained = 100
    d = defer.ensureDeferred(
        protocol.run(
            lambda tag: [[tag.encode() + b" FETCH 1:9 (UID)\r\n"]], consume=lambda _: False
        )
    )
    for number in range(1, 10):
        protocol.dataReceived(
            b"* %d FETCH (UID %d FLAGS (\\Seen \\Answered))\r\n" % (number, number)
        )
    assert isinstance(d.result.value, UpstreamUnavailable)
    d.addErrback(lambda _: None)


def _idling(protocol: UpstreamProtocol, transport: StringTransport) -> defer.Deferred:
    idle = defer.ensureDeferred(
        protocol.run(lambda tag: [[tag.encode() + b" IDLE\r\n"]], lambda _: None)
    )
    protocol.dataReceived(b"+ idling\r\n")
    transport.clear()
    return idle


def test_a_command_behind_an_ending_idle_goes_out_at_once_and_gets_its_answer() -> None:
    protocol, transport, _ = connected()
    idle = _idling(protocol, transport)
    protocol.end_idle()
    noop = run(protocol, b"NOOP")
    assert transport.value() == b"DONE\r\nP2 NOOP\r\n"  # before IDLE's OK
    assert not noop.called
    # Both answers in one read: IDLE's, then the one for the command behind it.
    protocol.dataReceived(b"* 4 EXISTS\r\nP1 OK idle done\r\nP2 OK noop done\r\n")
    assert idle.result.text == "idle done"
    assert [u.number for u in idle.result.data("EXISTS")] == [4]  # IDLE's news stays IDLE's
    assert noop.result.text == "noop done"
    assert not protocol.broken


def test_a_command_behind_an_ending_idle_fails_as_such_when_the_connection_closes() -> None:
    protocol, transport, _ = connected()
    idle = _idling(protocol, transport)
    idle.addErrback(lambda _: None)
    protocol.end_idle()
    noop = run(protocol, b"NOOP")
    protocol.connectionLost(None)
    assert isinstance(noop.result.value, ClosedAsIdleEnded)
    noop.addErrback(lambda _: None)


def test_without_end_idle_a_command_waits_for_the_one_running() -> None:
    protocol, transport, _ = connected()
    idle = _idling(protocol, transport)
    protocol.write(b"DONE\r\n")
    noop = run(protocol, b"NOOP")
    assert transport.value() == b"DONE\r\n"
    protocol.dataReceived(b"P1 OK idle done\r\n")
    assert idle.called and transport.value() == b"DONE\r\nP2 NOOP\r\n"
    protocol.dataReceived(b"P2 OK noop done\r\n")
    assert noop.result.text == "noop done"
