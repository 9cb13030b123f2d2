"""A command the upstream connection writes is handed to the kernel at once, on a real
reactor and a real socket: Twisted would send it only on its next pass over I/O, after
whatever work the caller does next (a first sync stores messages right after asking
for the next ones, to overlap the round trip); and Nagle's algorithm does not hold a
small write back (TCP_NODELAY)."""

from __future__ import annotations

import socket
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import pytest_twisted
from twisted.internet import defer, reactor
from twisted.internet.protocol import ClientFactory
from twisted.internet.testing import StringTransport

from imapproxy.send_now import no_delay
from imapproxy.upstream.connection import UpstreamProtocol


class _Factory(ClientFactory):
    def __init__(self) -> None:
        self.made: defer.Deferred[UpstreamProtocol] = defer.Deferred()

    def buildProtocol(self, addr: object) -> UpstreamProtocol:
        protocol = _Connected(reactor)
        protocol.made = self.made
        return protocol


class _Connected(UpstreamProtocol):
    made: defer.Deferred[UpstreamProtocol]

    def connectionMade(self) -> None:
        super().connectionMade()
        self.greeting.addErrback(lambda _: None)  # if the test fails before it comes
        self.made.callback(self)


def _received(peer: socket.socket) -> bytes | None:
    """What the peer can read now, without waiting; None if nothing yet."""
    try:
        return peer.recv(1024, socket.MSG_DONTWAIT)
    except BlockingIOError:
        return None


@asynccontextmanager
async def _connected() -> AsyncIterator[tuple[UpstreamProtocol, socket.socket]]:
    """An upstream protocol on a real connection, and the socket at its other end."""
    listener = socket.create_server(("127.0.0.1", 0))
    listener.settimeout(5)
    factory = _Factory()
    connector = reactor.connectTCP("127.0.0.1", listener.getsockname()[1], factory, timeout=5)
    protocol = await factory.made  # the kernel's backlog took the connection
    peer, _ = listener.accept()
    try:
        yield protocol, peer
    finally:
        connector.disconnect()
        peer.close()
        listener.close()


@pytest_twisted.ensureDeferred
async def test_a_command_is_out_before_the_reactor_runs_again() -> None:
    async with _connected() as (protocol, peer):
        # The premise: Twisted holds a plain write until the reactor runs again.
        protocol.transport.write(b"X1 NOOP\r\n")
        assert _received(peer) is None
        running = defer.ensureDeferred(protocol.run(lambda tag: [[f"{tag} NOOP\r\n".encode()]]))
        sent = _received(peer)
        assert sent is not None and sent.startswith(b"X1 NOOP\r\n") and sent.endswith(b" NOOP\r\n")
        tag = sent.split(b"\r\n")[1].split()[0]
        peer.sendall(b"* OK ready\r\n" + tag + b" OK done\r\n")
        result = await running
        assert result.text == "done"


def _no_delay(sock: socket.socket) -> bool:
    return bool(sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY))


class _Wrapper:
    """Stands for a TLS wrapper: the socket's transport is one ``.transport`` below."""

    def __init__(self, transport: object) -> None:
        self.transport = transport


@pytest_twisted.ensureDeferred
async def test_the_upstream_socket_sends_small_writes_without_waiting_for_acks() -> None:
    async with _connected() as (protocol, peer):
        assert not _no_delay(peer)  # the premise: a TCP socket starts with Nagle on
        handle = protocol.transport.getHandle()
        assert _no_delay(handle)
        # Below a wrapper too, as under TLS.
        handle.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 0)
        no_delay(_Wrapper(protocol.transport))
        assert _no_delay(handle)


def test_a_transport_without_a_tcp_socket_is_left_alone() -> None:
    transport = StringTransport()
    no_delay(transport)
    no_delay(_Wrapper(None))
    transport.write(b"still usable")
    assert transport.value() == b"still usable"
