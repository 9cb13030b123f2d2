"""UpstreamProtocol.sent: what was written has left the process when it fires, on a
real reactor and a real socket (Twisted sends on its next pass over I/O, not within
write(), which is why the first sync waits for it before spending the CPU)."""

from __future__ import annotations

import socket

import pytest_twisted
from twisted.internet import defer, reactor
from twisted.internet.protocol import ClientFactory

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
        self.greeting.addErrback(lambda _: None)  # none comes: the peer is a plain socket
        self.made.callback(self)


def _received(peer: socket.socket) -> bytes | None:
    """What the peer can read now, without waiting; None if nothing yet."""
    try:
        return peer.recv(1024, socket.MSG_DONTWAIT)
    except BlockingIOError:
        return None


@pytest_twisted.ensureDeferred
async def test_what_was_written_is_out_when_sent_fires() -> None:
    listener = socket.create_server(("127.0.0.1", 0))
    listener.settimeout(5)
    factory = _Factory()
    connector = reactor.connectTCP("127.0.0.1", listener.getsockname()[1], factory, timeout=5)
    protocol = await factory.made  # the kernel's backlog took the connection
    peer, _ = listener.accept()
    try:
        protocol.transport.write(b"A1 NOOP\r\n")
        # The premise: written, not yet sent (the reactor has not run since).
        assert _received(peer) is None
        await protocol.sent()
        assert _received(peer) == b"A1 NOOP\r\n"
    finally:
        connector.disconnect()
        peer.close()
        listener.close()
