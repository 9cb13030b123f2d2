"""UpstreamClient against a scripted peer: leaving a mailbox before it is deleted or
renamed, and what a read-write SELECT says about creating keywords."""

from __future__ import annotations

from twisted.internet import defer
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport

from imapproxy.upstream.client import UpstreamClient
from imapproxy.upstream.connection import UpstreamProtocol


def connected(capabilities: set[str]) -> tuple[UpstreamClient, StringTransport, UpstreamProtocol]:
    protocol = UpstreamProtocol(Clock(), command_timeout=5.0)
    transport = StringTransport()
    protocol.makeConnection(transport)
    protocol.dataReceived(b"* OK ready\r\n")
    return UpstreamClient(protocol, capabilities), transport, protocol


def sent(transport: StringTransport) -> bytes:
    data = transport.value()
    transport.clear()
    return data


def select(
    client: UpstreamClient,
    transport: StringTransport,
    protocol: UpstreamProtocol,
    name: str,
    tag: bytes,
    readonly: bool = False,
    permanent: bytes = b"(\\Seen \\Deleted \\*)",
) -> None:
    d = defer.ensureDeferred(client.select(name, readonly=readonly))
    assert b"SELECT" in sent(transport) or readonly
    protocol.dataReceived(
        b"* 0 EXISTS\r\n* OK [UIDVALIDITY 7] v\r\n* OK [PERMANENTFLAGS "
        + permanent
        + b"] p\r\n"
        + tag
        + b" OK done\r\n"
    )
    assert d.called and not isinstance(d.result, Exception)


def test_delete_of_the_selected_mailbox_unselects_first() -> None:
    client, transport, protocol = connected({"UNSELECT"})
    select(client, transport, protocol, "Doomed", b"P1")
    d = defer.ensureDeferred(client.delete("Doomed"))
    assert sent(transport) == b"P2 UNSELECT\r\n"
    protocol.dataReceived(b"P2 OK unselected\r\n")
    assert sent(transport) == b'P3 DELETE "Doomed"\r\n'
    protocol.dataReceived(b"P3 OK deleted\r\n")
    assert d.called and client.selected is None


def test_rename_of_a_parent_unselects_its_selected_child() -> None:
    client, transport, protocol = connected({"UNSELECT"})
    select(client, transport, protocol, "Old/child", b"P1")
    d = defer.ensureDeferred(client.rename("Old", "New"))
    assert sent(transport) == b"P2 UNSELECT\r\n"
    protocol.dataReceived(b"P2 OK unselected\r\n")
    assert sent(transport) == b'P3 RENAME "Old" "New"\r\n'
    protocol.dataReceived(b"P3 OK renamed\r\n")
    assert d.called


def test_without_unselect_a_failing_select_leaves_the_mailbox() -> None:
    client, transport, protocol = connected(set())
    select(client, transport, protocol, "Doomed", b"P1")
    d = defer.ensureDeferred(client.delete("Doomed"))
    assert sent(transport).startswith(b"P2 EXAMINE ")
    protocol.dataReceived(b"P2 NO [NONEXISTENT] no such mailbox\r\n")
    assert sent(transport) == b'P3 DELETE "Doomed"\r\n'
    protocol.dataReceived(b"P3 OK deleted\r\n")
    assert d.called


def test_delete_of_another_mailbox_sends_only_the_delete() -> None:
    client, transport, protocol = connected({"UNSELECT"})
    select(client, transport, protocol, "Oldies", b"P1")  # a prefix, not a child
    d = defer.ensureDeferred(client.delete("Old"))
    assert sent(transport) == b'P2 DELETE "Old"\r\n'
    protocol.dataReceived(b"P2 OK deleted\r\n")
    assert d.called and client.selected == "Oldies"


def test_read_write_select_tells_whether_keywords_may_be_created() -> None:
    client, transport, protocol = connected(set())
    select(client, transport, protocol, "Open", b"P1")
    select(client, transport, protocol, "Closed", b"P2", permanent=b"(\\Seen \\Deleted)")
    # EXAMINE answers PERMANENTFLAGS () whatever the mailbox allows: it tells nothing.
    select(client, transport, protocol, "Other", b"P3", readonly=True, permanent=b"()")
    assert client.keywords_allowed == {"Open": True, "Closed": False}
