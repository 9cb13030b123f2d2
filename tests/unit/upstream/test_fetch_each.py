"""UpstreamClient.fetch_each against a scripted peer: each message as it arrives."""

from __future__ import annotations

from typing import Any

from twisted.internet import defer

from imapproxy.protocol import FetchAttribute, SequenceSet
from tests.unit.upstream.test_client_mailboxes import connected, sent


def test_each_message_is_handed_over_as_it_arrives_and_flag_news_is_left() -> None:
    client, transport, protocol = connected(set())
    got: list[dict[str, Any]] = []
    heard: list[Any] = []
    protocol.on_untagged = heard.append
    d = defer.ensureDeferred(
        client.fetch_each(
            SequenceSet(((3, 4),)), (FetchAttribute("FLAGS"),), got.append, by_sequence=True
        )
    )
    assert sent(transport) == b"P1 FETCH 3:4 (UID FLAGS)\r\n"
    protocol.dataReceived(b"* 3 FETCH (UID 30 FLAGS (\\Seen))\r\n")
    assert [item["UID"] for item in got] == [30]
    # Flag changes made elsewhere, unasked (with QRESYNC enabled they name the UID):
    # not messages of the list.
    protocol.dataReceived(b"* 1 FETCH (FLAGS (\\Deleted))\r\n* 4 FETCH (UID 41 FLAGS ())\r\n")
    protocol.dataReceived(b"* 9 FETCH (UID 90 MODSEQ (7))\r\n")
    protocol.dataReceived(b"P1 OK done\r\n")
    assert [item["UID"] for item in got] == [30, 41]
    assert d.called and d.result is None
    assert {getattr(u, "number", None) for u in heard} >= {1, 9}


def test_a_refused_fetch_raises_after_what_came() -> None:
    client, _, protocol = connected(set())
    got: list[dict[str, Any]] = []
    d = defer.ensureDeferred(
        client.fetch_each(SequenceSet(((1, 2),)), (), got.append, by_sequence=True)
    )
    protocol.dataReceived(b"* 1 FETCH (UID 5)\r\nP1 NO [SERVERBUG] broken\r\n")
    assert [item["UID"] for item in got] == [5]
    failure = []
    d.addErrback(failure.append)
    assert failure and "broken" in str(failure[0].value)
