"""``BINARY[]`` of a whole message, or of a multipart or message/rfc822 part (RFC 3516).

RFC 3516 asks for the section "after performing CTE-related decoding"; for a section
that holds MIME parts of its own that means re-encoding it as binary MIME.  Dovecot
does it this way, and so do we, byte for byte (tested against it):

* Every leaf part whose transfer encoding is not an identity (base64,
  quoted-printable) gets its first ``Content-Transfer-Encoding`` field dropped, a
  ``Content-Transfer-Encoding: binary`` field added at the end of its header (before
  the empty line), and its body decoded.
* Everything else (7bit, 8bit, binary parts, multipart framing, boundaries, the CRLF
  before each boundary) is kept as it is; message/rfc822 parts are converted inside.
* A leaf part with an encoding we cannot undo makes the whole section fail
  (UnknownEncoding, answered ``NO [UNKNOWN-CTE]`` as Dovecot does).

Nothing here does I/O.
"""

from __future__ import annotations

from imapproxy.message._header import _matching_fields
from imapproxy.message._structure import _Part
from imapproxy.message._transfer import IDENTITY, UnknownEncoding, decode, transfer_encoding

_BINARY_FIELD = b"Content-Transfer-Encoding: binary\r\n"
_CTE = frozenset({b"content-transfer-encoding"})


def binary_of(raw: bytes, part: _Part, start: int, end: int) -> bytes:
    """``raw[start:end]`` (a span that holds ``part`` whole, or its body when it is a
    multipart or message/rfc822) with every encoded leaf part in it made binary."""
    out: list[bytes] = []
    pos = _convert(raw, part, start, out)
    out.append(raw[pos:end])
    return b"".join(out)


def _convert(raw: bytes, part: _Part, pos: int, out: list[bytes]) -> int:
    """Append ``raw[pos:]`` up to the end of ``part`` (converted); return where it ended."""
    if part.multipart or (part.rfc822 and part.children):
        for child in part.children:
            pos = _convert(raw, child, pos, out)
        return pos
    header = raw[part.start : part.body_start]
    encoding = transfer_encoding(header)
    if encoding in IDENTITY:
        return pos
    body = decode(raw[part.body_start : part.end], encoding)
    if body is None:
        raise UnknownEncoding(encoding.decode("ascii", "replace"))
    spans, _ = _matching_fields(header, _CTE)
    begin, finish, _ = spans[0]
    out.append(raw[pos : part.start])
    out.append(_add_field(header[:begin] + header[finish:]) + body)
    return part.end


def _add_field(header: bytes) -> bytes:
    """The header with the binary field added before its empty line (or at its end)."""
    for blank in (b"\r\n\r\n", b"\n\n"):
        if header.endswith(blank):
            cut = len(header) - len(blank) // 2
            return header[:cut] + _BINARY_FIELD + header[cut:]
    if header in (b"\r\n", b"\n"):  # no fields at all, only the empty line
        return _BINARY_FIELD + header
    return header + _BINARY_FIELD
