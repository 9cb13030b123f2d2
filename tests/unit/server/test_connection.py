"""The client-facing connection over an in-memory transport: framing, errors, states.

No upstream is involved, except where a login must complete: there a scripted
upstream is wired to the registry in memory.
"""

from __future__ import annotations

import base64
import logging
from pathlib import Path

import pytest
from twisted.internet import defer
from twisted.internet.address import IPv4Address
from twisted.internet.protocol import Protocol
from twisted.internet.testing import MemoryReactorClock, StringTransport
from twisted.test import iosim

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


class ScriptedUpstream(Protocol):
    """Just enough of an IMAP server to log in: accepts one password, refuses the rest."""

    def __init__(self, password: bytes) -> None:
        self.password = password
        self.buffer = b""
        self.received = b""

    def connectionMade(self) -> None:
        self.transport.write(b"* OK [CAPABILITY IMAP4rev1 AUTH=PLAIN] scripted upstream\r\n")

    def dataReceived(self, data: bytes) -> None:
        self.received += data
        self.buffer += data
        while b"\r\n" in self.buffer:
            line, self.buffer = self.buffer.split(b"\r\n", 1)
            tag, _, rest = line.partition(b" ")
            command = rest.split(b" ", 1)[0].upper()
            if command == b"LOGIN":
                if line.endswith(b" " + self.password) or line.endswith(
                    b'"' + self.password + b'"'
                ):
                    self.transport.write(tag + b" OK [CAPABILITY IMAP4rev1] logged in\r\n")
                else:
                    self.transport.write(tag + b" NO [AUTHENTICATIONFAILED] nope\r\n")
            elif command == b"CAPABILITY":
                self.transport.write(b"* CAPABILITY IMAP4rev1\r\n" + tag + b" OK done\r\n")
            elif command == b"LOGOUT":
                self.transport.write(b"* BYE bye\r\n" + tag + b" OK done\r\n")
            else:
                self.transport.write(tag + b" OK done\r\n")


class ProxyWithUpstream:
    """The client-facing connection, a real registry and store, and an upstream wired
    in memory: every connection the registry opens goes to a new ScriptedUpstream."""

    def __init__(self, tmp_path: Path, upstream_password: bytes) -> None:
        self.clock = MemoryReactorClock()
        self.state_dir = tmp_path / "state"
        self.store = Store(self.state_dir / "replica")
        self.registry = AccountRegistry(
            self.clock, self.store, UpstreamAddress.parse("imap+plain://127.0.0.1:1")
        )
        self.registry.in_thread = lambda f, *args: defer.maybeDeferred(f, *args)
        self.registry.verifier_quiet = 0.0
        self.upstream_password = upstream_password
        self.upstreams: list[ScriptedUpstream] = []
        self.pumps: list[iosim.IOPump] = []
        self.connection = ClientConnection(ServerContext(self.clock, self.registry))
        self.transport = StringTransport()
        self.connection.makeConnection(self.transport)

    def send(self, line: bytes, tag: bytes) -> bytes:
        """Send a command line; run clock and upstreams until its tagged reply is in."""
        self.transport.clear()
        self.connection.dataReceived(line)
        for _ in range(2000):
            self._connect_pending()
            for pump in self.pumps:
                pump.pump()
            self.clock.advance(0.01)
            replies = self.transport.value().split(b"\r\n")
            done = [r for r in replies if r.startswith(tag + b" ")]
            if done:
                return done[0]
        raise AssertionError(f"no reply to {line!r}: {self.transport.value()!r}")

    def _connect_pending(self) -> None:
        while self.clock.tcpClients:
            host, port, factory, _timeout, _bind = self.clock.tcpClients.pop(0)
            server = ScriptedUpstream(self.upstream_password)
            client = factory.buildProtocol(IPv4Address("TCP", host, port))
            self.upstreams.append(server)
            self.pumps.append(
                iosim.connect(
                    server,
                    iosim.makeFakeServer(server),
                    client,
                    iosim.makeFakeClient(client),
                    greet=False,
                )
            )


def test_passwords_are_not_in_the_log_or_the_state_directory(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    right, wrong = b"s3cret-right-pw", b"s3cret-wrong-pw"
    proxy = ProxyWithUpstream(tmp_path, right)
    failed = proxy.send(b"a1 LOGIN alice " + wrong + b"\r\n", b"a1")
    assert failed.startswith(b"a1 NO [AUTHENTICATIONFAILED]")
    token = base64.b64encode(b"\0alice\0" + wrong)
    failed = proxy.send(b"a2 AUTHENTICATE PLAIN " + token + b"\r\n", b"a2")
    assert failed.startswith(b"a2 NO [AUTHENTICATIONFAILED]")
    logged_in = proxy.send(b"a3 LOGIN alice " + right + b"\r\n", b"a3")
    assert logged_in.startswith(b"a3 OK ")
    assert proxy.connection.session is not None and proxy.connection.session.runtime is not None
    # The passwords did travel (so the search below is not vacuous): to the upstream.
    assert all(p in b"".join(u.received for u in proxy.upstreams) for p in (right, wrong))
    proxy.send(b"a4 LOGOUT\r\n", b"a4")
    proxy.store.close()

    log = "\n".join([record.getMessage() for record in caplog.records] + [caplog.text]).encode()
    assert b"alice" in log, "the log was not captured: the search below would prove nothing"
    files = [path for path in proxy.state_dir.rglob("*") if path.is_file()]
    assert files, "the store wrote nothing"
    for secret in (right, wrong):
        forms = (secret, base64.b64encode(secret), secret.hex().encode())
        for form in forms:
            assert form not in log, f"the log contains a password ({form!r})"
            for path in files:
                assert form not in path.read_bytes(), f"{path} contains a password ({form!r})"
