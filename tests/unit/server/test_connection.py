"""The client-facing connection over an in-memory transport: framing, errors, states.

No upstream is involved: everything here happens before LOGIN, or is refused by the
protocol layer before a handler runs.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from twisted.internet.testing import MemoryReactorClock, StringTransport

from imapproxy.registry import AccountRegistry
from imapproxy.server.connection import ClientConnection
from imapproxy.server.session import ServerContext
from imapproxy.store import Store
from imapproxy.upstream.address import UpstreamAddress


class Client:
    def __init__(self, tmp_path: Path) -> None:
        self.clock = MemoryReactorClock()
        store = Store(tmp_path / "replica")
        registry = AccountRegistry(
            self.clock, store, UpstreamAddress.parse("imap+plain://127.0.0.1:1")
        )
        self.connection = ClientConnection(ServerContext(self.clock, registry, max_append=1024))
        self.transport = StringTransport()
        self.connection.makeConnection(self.transport)

    def send(self, data: bytes) -> list[bytes]:
        self.transport.clear()
        self.connection.dataReceived(data)
        for _ in range(20):
            self.clock.advance(0)
        return self.transport.value().split(b"\r\n")[:-1]


@pytest.fixture
def client(tmp_path: Path) -> Client:
    return Client(tmp_path)


def test_greeting_carries_capabilities(tmp_path: Path) -> None:
    c = Client(tmp_path)
    greeting = c.transport.value()
    assert greeting.startswith(b"* OK [CAPABILITY IMAP4rev1 ")
    assert b"AUTH=PLAIN" in greeting and b"IDLE" in greeting


def test_garbage_gets_untagged_bad_and_connection_stays_usable(client: Client) -> None:
    assert client.send(b"\x01\x02 garbage\r\n")[0].startswith(b"* BAD ")
    assert client.send(b"a1 NOOP\r\n") == [b"a1 OK NOOP completed"]


def test_unknown_command_and_bad_arguments_get_tagged_bad_with_reason(client: Client) -> None:
    reply = client.send(b"a1 FROB\r\n")
    assert reply[0].startswith(b"a1 BAD ") and len(reply[0]) > len(b"a1 BAD ")
    reply = client.send(b"a2 FETCH 0:x FLAGS\r\n")
    assert reply[0].startswith(b"a2 BAD ")
    reply = client.send(b"a3 LOGIN (unbalanced\r\n")
    assert reply[0].startswith(b"a3 BAD ")
    assert client.send(b"a4 NOOP\r\n") == [b"a4 OK NOOP completed"]


def test_commands_of_another_state_are_refused(client: Client) -> None:
    assert client.send(b"a1 SELECT INBOX\r\n") == [
        b"a1 BAD command not valid in not authenticated state"
    ]
    assert client.send(b"a2 FETCH 1 FLAGS\r\n")[0].startswith(b"a2 BAD command not valid")


def test_pipelined_commands_are_answered_in_order(client: Client) -> None:
    reply = client.send(b"a1 NOOP\r\na2 CAPABILITY\r\na3 NOOP\r\n")
    tagged = [line.split(b" ")[0] for line in reply if not line.startswith(b"*")]
    assert tagged == [b"a1", b"a2", b"a3"]


def test_too_long_line_is_refused_without_losing_the_connection(client: Client) -> None:
    reply = client.send(b"a1 NOOP " + b"x" * 70000 + b"\r\n")
    assert reply[0].startswith(b"a1 BAD") or reply[0].startswith(b"* BAD")
    assert client.send(b"a2 NOOP\r\n") == [b"a2 OK NOOP completed"]


def test_literal_over_the_limit_gets_toobig_without_being_read(client: Client) -> None:
    reply = client.send(b"a1 APPEND INBOX {999999999}\r\n")
    assert reply[0].startswith(b"a1 NO [TOOBIG]")
    assert client.send(b"a2 NOOP\r\n") == [b"a2 OK NOOP completed"]


def test_logout_says_bye_and_closes(client: Client) -> None:
    reply = client.send(b"a1 LOGOUT\r\n")
    assert reply[0].startswith(b"* BYE")
    assert reply[1] == b"a1 OK LOGOUT completed"
    assert client.transport.disconnecting


def test_passwords_are_not_in_the_log(client: Client, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level("DEBUG")
    client.send(b"a1 LOGIN alice s3cret-pw\r\n")
    assert b"s3cret-pw" not in caplog.text.encode()
