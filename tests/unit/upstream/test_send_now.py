"""A command the upstream connection writes is handed to the kernel at once, on a real
reactor and a real socket: Twisted would send it only on its next pass over I/O, after
whatever work the caller does next (a first sync stores messages right after asking
for the next ones, to overlap the round trip)."""

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
        self.greeting.addErrback(lambda _: None)  # if the test fails before it comes
        self.made.callback(self)


def _received(peer: socket.socket) -> bytes | None:
    """What the peer can read now, without waiting; None if nothing yet."""
    try:
        return peer.recv(1024, socket.MSG_DONTWAIT)
    except BlockingIOError:
        return None


@pytest_twisted.ensureDeferred
async def test_a_command_is_out_before_the_reactor_runs_again() -> None:
    listener = socket.create_server(("127.0.0.1", 0))
    listener.settimeout(5)
    factory = _Factory()
    connector = reactor.connectTCP("127.0.0.1", listener.getsockname()[1], factory, timeout=5)
    protocol = await factory.made  # the kernel's backlog took the connection
    peer, _ = listener.accept()
    try:
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
    finally:
        connector.disconnect()
        peer.close()
        listener.close()
