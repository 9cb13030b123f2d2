"""The client's connection sends small writes at once, on a real reactor and socket:
with Nagle's algorithm on, the tagged OK written after a FETCH's literal waited for
the client to acknowledge the literal."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest_twisted
from twisted.internet import defer, reactor

from imapproxy.registry import AccountRegistry
from imapproxy.server.connection import ClientConnection, ServerFactory
from imapproxy.server.session import ServerContext
from imapproxy.store import Store
from imapproxy.upstream.address import UpstreamAddress


class _Factory(ServerFactory):
    def __init__(self, context: ServerContext) -> None:
        super().__init__(context)
        self.made: defer.Deferred[ClientConnection] = defer.Deferred()

    def buildProtocol(self, addr: object) -> ClientConnection:
        protocol = super().buildProtocol(addr)
        reactor.callLater(0, self.made.callback, protocol)
        return protocol


@pytest_twisted.ensureDeferred
async def test_the_client_socket_sends_small_writes_without_waiting_for_acks(
    tmp_path: Path,
) -> None:
    store = Store(tmp_path / "replica")
    registry = AccountRegistry(reactor, store, UpstreamAddress.parse("imap+plain://127.0.0.1:1"))
    factory = _Factory(ServerContext(reactor, registry))
    port = reactor.listenTCP(0, factory, interface="127.0.0.1")
    client = socket.create_connection(("127.0.0.1", port.getHost().port), timeout=5)
    try:
        connection = await factory.made
        assert not client.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY)  # the default
        handle = connection.transport.getHandle()
        assert handle.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY)
        connection.transport.loseConnection()
    finally:
        client.close()
        await port.stopListening()
        store.close()
