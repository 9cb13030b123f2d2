"""Large answers go to a slow client as it reads: never a whole second copy in the buffer."""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

from twisted.internet.testing import MemoryReactorClock, StringTransport

from imapproxy.registry import AccountRegistry
from imapproxy.server.connection import OUTPUT_HIGH_WATER, SLICE, ClientConnection
from imapproxy.server.session import ServerContext
from imapproxy.store import Store
from imapproxy.upstream.address import UpstreamAddress


class SlowClientTransport(StringTransport):
    """Pauses its producer when more than bufferSize is unread, like a TCP transport."""

    bufferSize = 64 * 1024

    def write(self, data: bytes) -> None:
        super().write(data)
        if len(self.value()) > self.bufferSize and self.producer is not None:
            self.producer.pauseProducing()

    def writeSequence(self, data: Iterable[bytes]) -> None:
        self.write(b"".join(data))

    def client_reads(self) -> bytes:
        taken = self.value()
        self.clear()
        if self.producer is not None:
            self.producer.resumeProducing()
        return taken


def _connection(tmp_path: Path) -> tuple[ClientConnection, SlowClientTransport, MemoryReactorClock]:
    clock = MemoryReactorClock()
    registry = AccountRegistry(
        clock, Store(tmp_path / "r"), UpstreamAddress.parse("imap+plain://127.0.0.1:1")
    )
    connection = ClientConnection(ServerContext(clock, registry))
    transport = SlowClientTransport()
    connection.makeConnection(transport)
    transport.client_reads()  # the greeting
    return connection, transport, clock


def test_a_large_literal_is_written_as_the_client_reads(tmp_path: Path) -> None:
    connection, transport, clock = _connection(tmp_path)
    body = bytes(range(256)) * (12 * 1024)  # 3 MiB
    connection.write_chunks([b"* 1 FETCH (BODY[] {%d}\r\n" % len(body), body, b")\r\n"])
    connection.write_chunks([b"a1 OK done\r\n"])
    drained = connection.drained()
    received = b""
    while not drained.called:
        assert len(transport.value()) <= OUTPUT_HIGH_WATER + SLICE
        received += transport.client_reads()
        clock.advance(0)
    received += transport.client_reads()
    assert received == b"* 1 FETCH (BODY[] {%d}\r\n" % len(body) + body + b")\r\na1 OK done\r\n"


def test_small_answers_are_written_at_once(tmp_path: Path) -> None:
    connection, transport, clock = _connection(tmp_path)
    connection.write_chunks([b"* OK a\r\n", b"* OK b\r\n"])
    assert transport.value() == b"* OK a\r\n* OK b\r\n"
    drained = connection.drained()
    clock.advance(0)
    assert drained.called
