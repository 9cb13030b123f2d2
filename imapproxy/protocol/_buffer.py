"""The receive buffer shared by both readers.

A bytearray that is only ever appended to at the end and consumed from the
front; CPython makes front deletion O(1), and we remember how far we already
searched for LF so a long line arriving in small pieces is scanned once.
"""

from __future__ import annotations

__all__ = ["LINE_TOO_LONG", "ReceiveBuffer"]


class _TooLong:
    def __repr__(self) -> str:
        return "LINE_TOO_LONG"


#: Returned by :meth:`ReceiveBuffer.read_line` when no LF came within the limit.
LINE_TOO_LONG = _TooLong()


class ReceiveBuffer:
    def __init__(self) -> None:
        self._data = bytearray()
        self._searched = 0

    def __len__(self) -> int:
        return len(self._data)

    def __bool__(self) -> bool:
        return bool(self._data)

    def append(self, data: bytes) -> None:
        self._data += data

    def read_line(self, max_line: int) -> bytes | _TooLong | None:
        """Consume and return one line without its CRLF (a bare LF is accepted).

        None when no complete line is buffered yet; LINE_TOO_LONG when the line
        exceeds ``max_line``; the line is then left for :meth:`discard_line`.
        """
        idx = self._data.find(b"\n", self._searched)
        if idx < 0:
            self._searched = len(self._data)
            if len(self._data) > max_line + 1:
                return LINE_TOO_LONG
            return None
        self._searched = 0
        end = idx - 1 if idx > 0 and self._data[idx - 1] == 0x0D else idx
        if end > max_line:
            return LINE_TOO_LONG
        line = bytes(self._data[:end])
        del self._data[: idx + 1]
        return line

    def peek(self, size: int) -> bytes:
        """The first size bytes, left in place (to name the tag of a line being refused)."""
        return bytes(self._data[:size])

    def discard_line(self) -> bool:
        """Drop data through the next LF; True once the LF was found."""
        idx = self._data.find(b"\n")
        if idx < 0:
            self._data.clear()
            self._searched = 0
            return False
        del self._data[: idx + 1]
        self._searched = 0
        return True

    def take(self, n: int) -> bytes:
        """Consume and return up to ``n`` bytes (one copy)."""
        k = min(n, len(self._data))
        with memoryview(self._data) as view:
            chunk = bytes(view[:k])
        del self._data[:k]
        self._searched = 0
        return chunk

    def skip(self, n: int) -> int:
        """Drop up to ``n`` bytes; returns how many were dropped."""
        k = min(n, len(self._data))
        del self._data[:k]
        self._searched = 0
        return k
