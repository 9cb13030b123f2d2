"""The client-side, resumable response reader.

Literals are folded into the response's values. A literal is read with one
copy: bytes that arrive while a literal is open are kept as the very objects
the transport handed us and joined once at the end, so a 30 MB body costs a
single pass over memory however small the chunks.

The upstream is not trusted with our memory: a line, a literal and a whole
response each have a cap, checked as soon as the bytes (or a literal's announced
size) arrive, so a hostile or broken server costs at most its connection, never
an unbounded buffer. The literal cap matches the largest message the proxy
accepts (``DEFAULT_MAX_LITERAL``, the default APPEND limit): a bigger literal
fails the connection when it is announced, before a byte of it is buffered.
"""

from __future__ import annotations

import re

from ._buffer import LINE_TOO_LONG, ReceiveBuffer
from ._errors import ParseError
from ._events import NEED_DATA, Sentinel
from ._responses import Response, is_text_line, parse_response

__all__ = ["DEFAULT_MAX_LITERAL", "ResponseReader"]

#: The largest literal accepted by default: the proxy's default APPEND limit.
DEFAULT_MAX_LITERAL = 64 << 20
#: Room in one response for what comes with its largest literal (a FETCH of a
#: body also carries its header, envelope and structure).
RESPONSE_SLACK = 16 << 20

_LITERAL_MARKER = re.compile(rb"~?\{(\d{1,20})\+?\}\Z")


class ResponseReader:
    """Turn server bytes into Response objects.

    ``next_event`` returns a Response or ``NEED_DATA`` and raises ParseError
    on a malformed response or an exceeded limit; the reader is unusable
    afterwards (the connection should be dropped). ``last_size`` is the wire
    size of the response just returned, for callers that cap what they keep.

    The limits are generous because dropping the link over a big but valid
    response hurts every client, and bounded because the upstream may be
    hostile: a ``* SEARCH`` of many UIDs is a long line (``max_line``, 64 MiB),
    a body is one literal (``max_literal``, the largest message the proxy
    takes), a response is its lines and literals together (``max_response``,
    by default the larger of those plus ``RESPONSE_SLACK``), and a
    BODYSTRUCTURE of deeply nested MIME parts nests deeply (``max_depth``, 256:
    servers cap MIME nesting near 100, plus the envelope levels).
    ``raw_fetch_items``: see ``parse_response``.
    """

    def __init__(
        self,
        max_line: int = 64 << 20,
        max_literal: int = DEFAULT_MAX_LITERAL,
        max_depth: int = 256,
        max_response: int | None = None,
        raw_fetch_items: frozenset[str] = frozenset(),
    ) -> None:
        self.raw_fetch_items = raw_fetch_items
        self.max_line = max_line
        self.max_literal = max_literal
        self.max_depth = max_depth
        self.max_response = (
            max(max_line, max_literal) + RESPONSE_SLACK if max_response is None else max_response
        )
        self.last_size = 0
        self._buf = ReceiveBuffer()
        self._parts: list[bytes] = []
        self._chunks: list[bytes] = []
        self._need = 0
        self._in_literal = False
        #: Bytes of the response being read so far (lines and announced literals).
        self._size = 0

    def receive_data(self, data: bytes) -> None:
        """Add bytes from the server."""
        if not isinstance(data, bytes):
            data = bytes(data)
        if self._in_literal and self._need and not self._buf:
            k = min(self._need, len(data))
            self._chunks.append(data if k == len(data) else data[:k])
            self._need -= k
            data = data[k:]
        self._buf.append(data)

    def buffered(self) -> int:
        """Bytes received but not yet returned as a response (nor part of one in progress).

        After STARTTLS's OK this must be 0: anything the server sent behind the OK, in
        clear, is an injection attempt (CVE-2011-0411), not part of the TLS session.
        """
        return len(self._buf) + sum(len(c) for c in self._chunks) + sum(map(len, self._parts))

    def take_unread(self) -> bytes:
        """Hand back (and forget) the bytes received after the last complete response.

        After a COMPRESS OK they are the start of the compressed stream, to be inflated
        before they are read as responses. A response half read here is an error: the
        server cannot have switched to compression in the middle of one."""
        if self._parts or self._chunks or self._in_literal:
            raise ParseError("a response was cut by the switch to compression")
        return self._buf.take(len(self._buf))

    def next_event(self) -> Response | Sentinel:
        while True:
            if self._in_literal:
                if self._need:
                    if not self._buf:
                        return NEED_DATA
                    chunk = self._buf.take(self._need)
                    self._chunks.append(chunk)
                    self._need -= len(chunk)
                    if self._need:
                        return NEED_DATA
                chunks, self._chunks = self._chunks, []
                self._parts.append(chunks[0] if len(chunks) == 1 else b"".join(chunks))
                self._in_literal = False
            line = self._buf.read_line(min(self.max_line, self.max_response - self._size))
            if line is None:
                return NEED_DATA
            if line is LINE_TOO_LONG:
                if self._parts:
                    raise ParseError("response too big")
                raise ParseError("response line too long")
            assert isinstance(line, bytes)
            self._size += len(line) + 2
            # A marker is at most 24 bytes at the very end: no need to scan the line.
            m = _LITERAL_MARKER.search(line, len(line) - 24) if line[-1:] == b"}" else None
            if m and not (not self._parts and is_text_line(line)):
                size = int(m.group(1))
                if size > self.max_literal:
                    raise ParseError(f"literal too big ({size} bytes announced)")
                self._size += size
                if self._size > self.max_response:
                    raise ParseError("response too big")
                self._parts.append(line[: m.start()])
                self._need = size
                self._in_literal = True
                continue
            self._parts.append(line)
            parts, self._parts = self._parts, []
            self.last_size, self._size = self._size, 0
            if not parts[0].strip():
                if len(parts) == 1:
                    continue  # tolerate blank lines between responses
                raise ParseError("malformed response")
            return parse_response(parts, self.max_depth, self.raw_fetch_items)
