"""QRESYNC towards the upstream (RFC 7162 §3.2.5), against a scripted peer: ENABLE
pipelined in front of the first SELECT only, the EXAMINE's VANISHED (EARLIER) and FETCH
responses taken as the resync, a refusal costing one retry, and nothing of it where the
upstream does not offer it; plain VANISHED heard while idling is news like EXPUNGE."""

from __future__ import annotations

from typing import Any

import pytest
from twisted.internet import defer

from imapproxy.protocol import ResponseReader, SequenceSet, UntaggedData
from imapproxy.upstream.client import SelectInfo, UpstreamClient
from imapproxy.upstream.connection import UpstreamProtocol
from imapproxy.upstream.vanished import MAX_UID, uids_within, vanished_ranges
from tests.unit.upstream.test_client_mailboxes import connected, sent
from tests.unit.upstream.test_link import FakeServer, idling

QRESYNC = {"IMAP4REV1", "CONDSTORE", "QRESYNC", "ENABLE"}
PARAMETER = (7, 5, SequenceSet(((1, 10),)), None)
ANSWER = (
    b"* 8 EXISTS\r\n* OK [UIDVALIDITY 7] v\r\n* OK [UIDNEXT 12] n\r\n"
    b"* OK [HIGHESTMODSEQ 9] m\r\n* VANISHED (EARLIER) 3,5:6\r\n"
    b"* 2 FETCH (UID 2 FLAGS (\\Seen) MODSEQ (8))\r\n"
)


def _select(client: UpstreamClient, qresync: Any = PARAMETER) -> defer.Deferred[SelectInfo]:
    return defer.ensureDeferred(client.select("INBOX", readonly=True, qresync=qresync))


def _info(d: defer.Deferred[SelectInfo]) -> SelectInfo:
    assert d.called
    assert isinstance(d.result, SelectInfo), d.result
    return d.result


def test_enable_goes_in_front_of_the_first_select_in_the_same_write() -> None:
    client, transport, protocol = connected(QRESYNC)
    assert client.qresync
    d = _select(client)
    # Both lines leave before any answer: no round trip of its own.
    assert sent(transport) == b'P1 ENABLE QRESYNC\r\nP2 EXAMINE "INBOX" (QRESYNC (7 5 1:10))\r\n'
    protocol.dataReceived(
        b"* ENABLED QRESYNC\r\nP1 OK enabled\r\n" + ANSWER + b"P2 OK [READ-ONLY] ok\r\n"
    )
    info = _info(d)
    assert client.qresync_enabled
    assert info.qresync and info.highestmodseq == 9 and info.exists == 8
    assert info.vanished == ((3, 3), (5, 6))
    assert [item["UID"] for item in info.changed] == [2]
    # The next SELECT carries no ENABLE (once per connection), still the parameter.
    d = _select(client, (7, 9, SequenceSet(((1, 11),)), None))
    assert sent(transport) == b'P3 EXAMINE "INBOX" (QRESYNC (7 9 1:11))\r\n'
    protocol.dataReceived(ANSWER + b"P3 OK ok\r\n")
    assert _info(d).qresync


def test_a_first_select_without_a_parameter_still_enables_for_later_ones() -> None:
    """ENABLE is allowed only before the first SELECT (RFC 5161 §3.1): a connection whose
    first SELECT is a client's read enables then, or could never resync with QRESYNC."""
    client, transport, protocol = connected(QRESYNC)
    d = _select(client, None)
    assert sent(transport) == b'P1 ENABLE QRESYNC\r\nP2 EXAMINE "INBOX" (CONDSTORE)\r\n'
    protocol.dataReceived(b"* ENABLED QRESYNC\r\nP1 OK\r\n" + ANSWER + b"P2 OK ok\r\n")
    info = _info(d)
    assert not info.qresync and info.vanished == () and info.changed == ()
    assert client.qresync


def test_without_qresync_offered_nothing_is_enabled_and_condstore_is_named() -> None:
    client, transport, protocol = connected({"IMAP4REV1", "CONDSTORE"})
    assert not client.qresync
    d = _select(client)
    assert sent(transport) == b'P1 EXAMINE "INBOX" (CONDSTORE)\r\n'
    protocol.dataReceived(ANSWER + b"P1 OK ok\r\n")
    info = _info(d)
    assert not info.qresync and info.vanished == () and info.highestmodseq == 9


def test_without_condstore_offered_a_highestmodseq_is_not_taken() -> None:
    """Chosen from CAPABILITY: a modseq from an upstream that does not announce
    CONDSTORE would lead to CHANGEDSINCE, which it need not understand."""
    client, transport, protocol = connected({"IMAP4REV1"})
    d = _select(client)
    assert sent(transport) == b'P1 EXAMINE "INBOX"\r\n'
    protocol.dataReceived(ANSWER + b"P1 OK ok\r\n")
    assert _info(d).highestmodseq is None


def test_an_upstream_that_refuses_the_parameter_is_asked_again_without_it() -> None:
    """A broken ENABLE (iCloud's reputation): the EXAMINE with the parameter gets BAD,
    one plain EXAMINE follows, and QRESYNC is not tried again on that connection."""
    client, transport, protocol = connected(QRESYNC)
    d = _select(client)
    sent(transport)
    protocol.dataReceived(b"P1 OK nothing enabled\r\nP2 BAD unknown parameter\r\n")
    assert sent(transport) == b'P3 EXAMINE "INBOX" (CONDSTORE)\r\n'
    protocol.dataReceived(ANSWER + b"P3 OK ok\r\n")
    assert not _info(d).qresync
    assert not client.qresync
    d = _select(client)
    assert sent(transport) == b'P4 EXAMINE "INBOX" (CONDSTORE)\r\n'


def test_an_enable_without_enabled_qresync_does_not_count() -> None:
    client, transport, protocol = connected(QRESYNC)
    d = _select(client, None)
    sent(transport)
    protocol.dataReceived(b"* ENABLED\r\nP1 OK\r\n" + ANSWER + b"P2 OK ok\r\n")
    _info(d)
    assert not client.qresync


def test_a_new_uidvalidity_means_the_parameter_was_ignored() -> None:
    """RFC 7162 §3.2.5: with another UIDVALIDITY the server ignores the rest and
    reports nothing; the caller must not read the silence as "nothing changed"."""
    client, transport, protocol = connected(QRESYNC)
    d = _select(client, (6, 5, SequenceSet(((1, 10),)), None))
    sent(transport)
    protocol.dataReceived(b"* ENABLED QRESYNC\r\nP1 OK\r\n" + ANSWER + b"P2 OK ok\r\n")
    info = _info(d)
    assert not info.qresync and info.vanished == ()


def test_a_mailbox_without_modseqs_ignores_the_parameter() -> None:
    client, transport, protocol = connected(QRESYNC)
    d = _select(client)
    sent(transport)
    protocol.dataReceived(
        b"* ENABLED QRESYNC\r\nP1 OK\r\n* 8 EXISTS\r\n* OK [UIDVALIDITY 7] v\r\n"
        b"* OK [NOMODSEQ] none\r\nP2 OK ok\r\n"
    )
    info = _info(d)
    assert not info.qresync and info.highestmodseq is None


def _vanished(line: bytes) -> UntaggedData:
    reader = ResponseReader()
    reader.receive_data(line + b"\r\n")
    event = reader.next_event()
    assert isinstance(event, UntaggedData)
    return event


@pytest.mark.parametrize(
    ("line", "earlier", "ranges"),
    [
        (b"* VANISHED (EARLIER) 41,43:116,118", True, [(41, 41), (43, 116), (118, 118)]),
        (b"* VANISHED 405", False, [(405, 405)]),
        (b"* VANISHED 9:7", False, [(7, 9)]),
        (b"* VANISHED (EARLIER) 1:4294967295", True, [(1, MAX_UID)]),
    ],
)
def test_vanished_is_read_as_ranges(line: bytes, earlier: bool, ranges: list[Any]) -> None:
    assert vanished_ranges(_vanished(line)) == (earlier, ranges)


def test_membership_in_ranges_without_expanding_them() -> None:
    ranges = [(1, MAX_UID)]
    assert uids_within(ranges, [1, 5, 10**9]) == {1, 5, 10**9}
    overlapping = [(10, 20), (12, 14), (30, 30)]
    assert uids_within(overlapping, range(1, 40)) == set(range(10, 21)) | {30}
    assert uids_within([], [1, 2]) == set()


def test_plain_vanished_while_idling_is_news_like_expunge() -> None:
    """After ENABLE QRESYNC the upstream reports expunges as VANISHED, never EXPUNGE
    (RFC 7162 §3.2.10): the link must resync on it as it does on EXPUNGE."""
    server = FakeServer()
    link, connection = idling(server)
    told: list[str] = []
    link.watch("INBOX", told.append)
    connection.send(b"* VANISHED 2:3\r\n")
    server.run(0.5)
    assert told == ["INBOX"]


def test_a_pipelined_command_s_answer_is_kept_apart() -> None:
    """connection.run(before=...): the leading command's tagged answer is Result.before;
    its untagged responses join the command's; a refusal of it fails nothing itself."""
    _client, transport, protocol = connected(set())
    protocol_: UpstreamProtocol = protocol
    d = defer.ensureDeferred(
        protocol_.run(
            lambda tag: [[f"{tag} NOOP\r\n".encode()]], before=lambda t: f"{t} X\r\n".encode()
        )
    )
    assert sent(transport) == b"P1 X\r\nP2 NOOP\r\n"
    protocol.dataReceived(b"* 1 EXISTS\r\nP1 NO not known\r\nP2 OK\r\n")
    assert d.called
    result = d.result
    assert result.before is not None and result.before.status == "NO"
    assert [u.name for u in result.untagged] == ["EXISTS"]  # type: ignore[union-attr]
