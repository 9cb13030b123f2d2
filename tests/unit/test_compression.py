"""The DEFLATE layer of COMPRESS (RFC 4978): raw deflate, sync flushes, bounded inflation."""

from __future__ import annotations

import zlib

import pytest

from imapproxy.compression import CompressionError, Deflate


def _client() -> tuple[zlib._Compress, zlib._Decompress]:
    return zlib.compressobj(6, zlib.DEFLATED, -15), zlib.decompressobj(-15)


def test_each_batch_is_decodable_as_soon_as_it_arrives() -> None:
    server = Deflate()
    _, inflater = _client()
    for batch in ([b"* OK one\r\n"], [b"* 1 FETCH (", memoryview(b"UID 1)\r\n")]):
        assert inflater.decompress(server.compress(batch)) == b"".join(bytes(c) for c in batch)


def test_input_is_inflated_in_bounded_pieces() -> None:
    server = Deflate(piece=4096)
    deflater, _ = _client()
    text = b"".join(b"a%d NOOP\r\n" % n for n in range(5000))
    server.feed(deflater.compress(text) + deflater.flush(zlib.Z_SYNC_FLUSH))
    out = b""
    while piece := server.inflate():
        assert len(piece) <= 4096
        out += piece
    assert out == text


def test_a_bomb_stays_compressed_until_taken() -> None:
    server = Deflate()
    bomb = zlib.compressobj(9, zlib.DEFLATED, -15)
    data = bomb.compress(b"\0" * (32 << 20)) + bomb.flush(zlib.Z_SYNC_FLUSH)
    assert len(data) < 64 << 10
    server.feed(data)
    assert len(server.inflate()) == 64 << 10
    assert server.pending > 0  # the rest waits, compressed
    total = 64 << 10
    while piece := server.inflate():
        total += len(piece)
    assert total == 32 << 20


@pytest.mark.parametrize(
    "garbage",
    [b"\xff\xfe not deflate", zlib.compress(b"zlib header, not raw deflate")],
)
def test_invalid_input_raises(garbage: bytes) -> None:
    server = Deflate()
    server.feed(garbage)
    with pytest.raises(CompressionError):
        while server.inflate():
            pass


def test_data_after_the_end_of_the_stream_is_refused() -> None:
    server = Deflate()
    deflater, _ = _client()
    server.feed(deflater.compress(b"a NOOP\r\n") + deflater.flush(zlib.Z_FINISH))
    with pytest.raises(CompressionError):
        server.inflate()
