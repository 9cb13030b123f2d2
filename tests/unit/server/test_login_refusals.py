"""LOGIN and AUTHENTICATE fail closed: whatever the credential check raises, the client
gets NO and stays unauthenticated. Also: the check hears where the client is."""

from __future__ import annotations

import base64
from typing import Any

import pytest
from twisted.internet.address import IPv6Address
from twisted.internet.testing import MemoryReactorClock, StringTransport

from imapproxy.login_limits import LoginAbandoned
from imapproxy.registry import LoginFailed
from imapproxy.server.connection import ClientConnection
from imapproxy.server.session import ServerContext, State
from imapproxy.upstream.errors import UpstreamUnreachable


class RaisingRegistry:
    """A registry whose every login ends in ``error``; remembers what it was asked."""

    def __init__(self, error: BaseException) -> None:
        self.error = error
        self.calls: list[dict[str, Any]] = []

    async def login(self, username: bytes, password: bytes, **attempt: Any) -> Any:
        self.calls.append({"username": username, "password": password, **attempt})
        raise self.error


def client(registry: Any, peer: Any = None) -> tuple[ClientConnection, StringTransport, Any]:
    clock = MemoryReactorClock()
    connection = ClientConnection(ServerContext(clock, registry))
    transport = StringTransport(peerAddress=peer)
    connection.makeConnection(transport)
    return connection, transport, clock


def send(parts: tuple[ClientConnection, StringTransport, Any], data: bytes) -> list[bytes]:
    connection, transport, clock = parts
    transport.clear()
    connection.dataReceived(data)
    for _ in range(20):
        clock.advance(0)
    return transport.value().split(b"\r\n")[:-1]


ERRORS = [
    (LoginFailed(), b"NO [AUTHENTICATIONFAILED]"),
    (UpstreamUnreachable("down"), b"NO [UNAVAILABLE]"),
    (LoginAbandoned(), b"NO "),
    (KeyError("verifier"), b"NO [SERVERBUG]"),
    (TypeError("bad type"), b"NO [SERVERBUG]"),
    (ValueError("bad value"), b"NO [SERVERBUG]"),
    (MemoryError(), b"NO [SERVERBUG]"),
    (AssertionError(), b"NO [SERVERBUG]"),
    (RuntimeError("anything"), b"NO [SERVERBUG]"),
]
LOGINS = {
    "LOGIN": b"a1 LOGIN alice s3cret\r\n",
    "AUTHENTICATE PLAIN": b"a1 AUTHENTICATE PLAIN "
    + base64.b64encode(b"\0alice\0s3cret")
    + b"\r\n",
}


@pytest.mark.parametrize("how", LOGINS)
@pytest.mark.parametrize(("error", "answer"), ERRORS, ids=[type(e).__name__ for e, _ in ERRORS])
def test_any_error_in_the_check_is_a_tagged_no_and_no_session(
    how: str, error: BaseException, answer: bytes
) -> None:
    registry = RaisingRegistry(error)
    parts = client(registry)
    reply = send(parts, LOGINS[how])
    assert reply[-1].startswith(b"a1 " + answer), reply
    assert b"s3cret" not in b"\n".join(reply)
    session = parts[0].session
    assert session is not None and session.state is State.NOT_AUTHENTICATED
    assert session.runtime is None
    assert send(parts, b"a2 SELECT INBOX\r\n")[-1].startswith(b"a2 BAD ")
    assert registry.calls and registry.calls[0]["password"] == b"s3cret"


def test_the_check_is_told_the_source_and_whether_the_client_left() -> None:
    registry = RaisingRegistry(LoginFailed())
    parts = client(registry, IPv6Address("TCP", "2001:db8:7:8::99", 50000))
    send(parts, b"a1 LOGIN alice s3cret\r\n")
    call = registry.calls[0]
    assert call["source"] == "2001:db8:7::/48"
    assert call["abandoned"]() is False
    parts[0].connectionLost(None)
    assert call["abandoned"]() is True
