"""COMPRESS=DEFLATE (RFC 4978): raw deflate both ways, with bounded inflation (used
towards clients and towards the upstream alike).

Sans-IO: the connection hands output batches to :meth:`Deflate.compress` and input
bytes to :meth:`Deflate.feed`, then takes decompressed input in pieces of at most
``piece`` bytes from :meth:`Deflate.inflate`. Each batch of output ends with a sync
flush, so the client can decode every response as soon as it arrives. Inflation never
produces more than one piece per call: a small, highly compressed input (a "zip bomb")
cannot make us hold more than what the caller chooses to take, and the compressed rest
waits until it does.
"""

from __future__ import annotations

import zlib
from collections.abc import Iterable

__all__ = ["PIECE", "CompressionError", "Deflate"]

#: Decompressed bytes handed on per step.
PIECE = 64 * 1024
#: Raw deflate (no zlib header), as RFC 4978 §3 requires; the largest window.
WBITS = -15


class CompressionError(Exception):
    """The peer's compressed stream is not valid deflate data."""


class Deflate:
    def __init__(self, level: int = 6, piece: int = PIECE) -> None:
        self._compressor = zlib.compressobj(level, zlib.DEFLATED, WBITS)
        self._decompressor = zlib.decompressobj(WBITS)
        #: Compressed bytes received but not yet inflated.
        self._pending = b""
        #: The last step filled a whole piece: the inflater may hold more output.
        self._full = False
        self.piece = piece

    @property
    def pending(self) -> int:
        return len(self._pending)

    def compress(self, chunks: Iterable[bytes | memoryview]) -> bytes:
        """One batch of output, compressed and sync-flushed."""
        out = [self._compressor.compress(chunk) for chunk in chunks]
        out.append(self._compressor.flush(zlib.Z_SYNC_FLUSH))
        return b"".join(out)

    def feed(self, data: bytes) -> None:
        self._pending += data

    def inflate(self) -> bytes:
        """The next piece of decompressed input (b"" when more input is needed).

        Raises CompressionError on invalid data or data after the end of the stream."""
        if not self._pending and not self._full:
            return b""
        try:
            piece = self._decompressor.decompress(self._pending, self.piece)
        except zlib.error as exc:
            raise CompressionError(str(exc)) from None
        if self._decompressor.eof:
            raise CompressionError("the compressed stream ended")
        self._pending = self._decompressor.unconsumed_tail
        self._full = len(piece) == self.piece
        return piece
