"""COMPRESS DEFLATE towards the upstream (RFC 4978) against a scripted peer: the switch
happens exactly after the OK, bytes that came with the OK are inflated, and a broken
stream costs the connection, never a wrong answer."""

from __future__ import annotations

import zlib

import pytest
from twisted.internet import defer

from imapproxy.upstream.errors import UpstreamRefused, UpstreamUnavailable
from tests.unit.upstream.test_connection import connected, run


class Peer:
    """The server's side of a deflated stream."""

    def __init__(self) -> None:
        self.out = zlib.compressobj(6, zlib.DEFLATED, -15)
        self.inflate = zlib.decompressobj(-15)

    def send(self, data: bytes) -> bytes:
        return self.out.compress(data) + self.out.flush(zlib.Z_SYNC_FLUSH)


def test_after_the_ok_both_directions_are_deflated_including_bytes_sent_with_it() -> None:
    protocol, transport, _ = connected()
    d = defer.ensureDeferred(protocol.compress())
    assert transport.value() == b"P1 COMPRESS DEFLATE\r\n"
    transport.clear()
    peer = Peer()
    # The OK and the first compressed bytes in one read, as TCP may deliver them.
    protocol.dataReceived(b"P1 OK begin compression\r\n" + peer.send(b"* 4 EXISTS\r\n"))
    assert d.called and protocol.compressed
    sent = run(protocol, b"NOOP")
    assert peer.inflate.decompress(transport.value()) == b"P2 NOOP\r\n"
    protocol.dataReceived(peer.send(b"* 5 EXISTS\r\nP2 OK done\r\n"))
    assert sent.result.text == "done"
    assert [u.number for u in sent.result.data("EXISTS")] == [5]


def test_a_refused_compress_leaves_the_connection_plain() -> None:
    protocol, transport, _ = connected()
    d = defer.ensureDeferred(protocol.compress())
    protocol.dataReceived(b"P1 NO not now\r\n")
    with pytest.raises(UpstreamRefused):
        d.result.raiseException()
    d.addErrback(lambda _: None)
    assert not protocol.compressed
    transport.clear()
    sent = run(protocol, b"NOOP")
    assert transport.value() == b"P2 NOOP\r\n"
    protocol.dataReceived(b"P2 OK\r\n")
    assert sent.called


def test_invalid_compressed_data_drops_the_link() -> None:
    protocol, transport, _ = connected()
    d = defer.ensureDeferred(protocol.compress())
    protocol.dataReceived(b"P1 OK\r\n")
    assert d.called
    sent = run(protocol, b"NOOP")
    protocol.dataReceived(b"\xff\xfe not deflate at all")
    with pytest.raises(UpstreamUnavailable):
        sent.result.raiseException()
    sent.addErrback(lambda _: None)
    assert transport.disconnecting or transport.disconnected


def test_a_compressed_flood_is_cut_by_the_readers_limits() -> None:
    """A few kB that inflate to a line longer than the reader accepts: refused like the
    same line sent plain (the reader never holds more than its limit)."""
    protocol, transport, _ = connected()
    protocol.reader.max_line = 1 << 20
    protocol.reader.max_response = 1 << 20
    d = defer.ensureDeferred(protocol.compress())
    protocol.dataReceived(b"P1 OK\r\n")
    assert d.called
    sent = run(protocol, b"NOOP")
    bomb = Peer().send(b"* OK " + b"A" * (8 << 20))
    assert len(bomb) < 20_000
    protocol.dataReceived(bomb)
    with pytest.raises(UpstreamUnavailable):
        sent.result.raiseException()
    sent.addErrback(lambda _: None)
    assert transport.disconnecting or transport.disconnected
