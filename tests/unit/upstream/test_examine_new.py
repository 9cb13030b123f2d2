"""UpstreamClient.examine_new: the EXAMINEs of several never-synced mailboxes, each
with its message list's FETCH behind it, in one write; each mailbox's answer its own,
a refused one reported and the others kept."""

from __future__ import annotations

from typing import Any

from twisted.internet import defer

from imapproxy.protocol import FetchAttribute, SequenceSet
from imapproxy.upstream.client import SelectInfo
from imapproxy.upstream.errors import UpstreamRefused
from tests.unit.upstream.test_client_mailboxes import connected, sent

CAPS = {"IMAP4REV1", "CONDSTORE", "QRESYNC", "ENABLE"}
ITEMS = (FetchAttribute("FLAGS"),)


def _examined(uidvalidity: int, exists: int) -> bytes:
    return (
        b"* %d EXISTS\r\n* OK [UIDVALIDITY %d] v\r\n* OK [UIDNEXT %d] n\r\n"
        b"* OK [HIGHESTMODSEQ 4] m\r\n" % (exists, uidvalidity, exists + 1)
    )


def _examine_new(client: Any, names: list[str]) -> defer.Deferred[Any]:
    firsts = [SequenceSet(((1, 1000),))] + [SequenceSet(((1, 200),))] * (len(names) - 1)
    return defer.ensureDeferred(client.examine_new(names, firsts, ITEMS))


def test_every_examine_and_fetch_go_in_one_write_and_keep_their_own_answers() -> None:
    client, transport, protocol = connected(CAPS)
    d = _examine_new(client, ["INBOX", "Gone", "Sent"])
    assert sent(transport) == (
        b'P1 ENABLE QRESYNC\r\nP2 EXAMINE "INBOX" (CONDSTORE)\r\n'
        b"P3 UID FETCH 1:1000 (UID FLAGS)\r\n"
        b'P4 EXAMINE "Gone" (CONDSTORE)\r\nP5 UID FETCH 1:200 (UID FLAGS)\r\n'
        b'P6 EXAMINE "Sent" (CONDSTORE)\r\nP7 UID FETCH 1:200 (UID FLAGS)\r\n'
    )
    protocol.dataReceived(
        b"* ENABLED QRESYNC\r\nP1 OK enabled\r\n"
        + _examined(7, 2)
        + b"P2 OK [READ-ONLY] examined\r\n"
        + b"* 1 FETCH (UID 1 FLAGS (\\Seen))\r\n* 2 FETCH (UID 5 FLAGS ())\r\nP3 OK done\r\n"
        + b"P4 NO [NONEXISTENT] no such mailbox\r\nP5 BAD no mailbox selected\r\n"
        + _examined(9, 1)
        + b"P6 OK [READ-ONLY] examined\r\n* 1 FETCH (UID 3 FLAGS ())\r\nP7 OK done\r\n"
    )
    inbox, gone, sent_box = d.result
    assert isinstance(inbox, SelectInfo) and isinstance(sent_box, SelectInfo)
    assert (inbox.uidvalidity, inbox.exists) == (7, 2)
    assert [item["UID"] for item in inbox.first or ()] == [1, 5]
    assert isinstance(gone, UpstreamRefused) and gone.status == "NO"
    assert (sent_box.uidvalidity, sent_box.exists) == (9, 1)
    assert [item["UID"] for item in sent_box.first or ()] == [3]
    assert client.selected == "Sent" and client.qresync_enabled
    # The last one examined is the connection's selection until the next command.
    assert client.still_selected(sent_box) and not client.still_selected(inbox)
    d = defer.ensureDeferred(client.noop())
    assert not client.still_selected(sent_box)
    protocol.dataReceived(b"P8 OK done\r\n")
    assert d.called and not client.still_selected(sent_box)


def _answered(names: list[str], answer: bytes) -> tuple[Any, Any, defer.Deferred[Any]]:
    """(client, protocol, examine_new's Deferred) once the upstream sent answer."""
    client, transport, protocol = connected(CAPS)
    d = _examine_new(client, names)
    sent(transport)
    protocol.dataReceived(answer)
    return client, protocol, d


def test_a_refused_last_examine_leaves_nothing_selected() -> None:
    client, _, d = _answered(
        ["INBOX", "Gone"],
        b"* ENABLED QRESYNC\r\nP1 OK enabled\r\n"
        + _examined(7, 0)
        + b"P2 OK [READ-ONLY] examined\r\nP3 OK done\r\n"
        + b"P4 NO [NONEXISTENT] no such mailbox\r\nP5 BAD no mailbox selected\r\n",
    )
    inbox, gone = d.result
    assert isinstance(inbox, SelectInfo) and isinstance(gone, UpstreamRefused)
    assert client.selected is None and not client.still_selected(inbox)


def test_a_refused_first_examine_is_raised_once_everything_is_answered() -> None:
    _, protocol, d = _answered(
        ["Gone", "Sent"],
        b"* ENABLED QRESYNC\r\nP1 OK enabled\r\nP2 NO [NONEXISTENT] no\r\nP3 BAD none\r\n"
        + _examined(9, 0)
        + b"P4 OK [READ-ONLY] examined\r\nP5 OK done\r\n",
    )
    assert isinstance(d.result.value, UpstreamRefused)
    d.addErrback(lambda _: None)
    assert protocol.usable
