"""Content-Transfer-Encoding decoding for FETCH BINARY (RFC 3516).

BINARY[part] is the part's body with its transfer encoding undone: base64 and
quoted-printable are decoded here, 7bit/8bit/binary (and no header at all) pass
through as they are.  An encoding we do not know gives None, which the FETCH handler
answers with ``NO [UNKNOWN-CTE]`` (RFC 3516 §4.3), as Dovecot does.
"""

from __future__ import annotations

import binascii

from imapproxy.message._header import _field_value, _matching_fields

#: The encodings that leave the body as it is.
IDENTITY = frozenset({b"", b"7bit", b"8bit", b"binary"})
_CTE = frozenset({b"content-transfer-encoding"})


class UnknownEncoding(ValueError):
    """A part's Content-Transfer-Encoding is not one BINARY can undo (RFC 3516 UNKNOWN-CTE)."""


def transfer_encoding(mime_header: bytes) -> bytes:
    """The first Content-Transfer-Encoding of a MIME header, lower case (b"" if none).

    A value that starts only on a continuation line is not understood (Dovecot answers
    UNKNOWN-CTE for it): it comes back with its line break, which no decoder knows."""
    spans, _ = _matching_fields(mime_header, _CTE)
    if not spans:
        return b""
    begin, end, _ = spans[0]
    value = _field_value(mime_header, begin, end)
    first_line = value.split(b"\n", 1)[0]
    words = value.split()
    if words and not first_line.strip():
        return b"\n" + words[0].lower()
    return words[0].lower() if words else b""


def decode(body: bytes, encoding: bytes) -> bytes | None:
    """The body with ``encoding`` undone; None when the encoding is unknown."""
    if encoding in IDENTITY:
        return body
    if encoding == b"base64":
        return _base64(body)
    if encoding == b"quoted-printable":
        return _quoted_printable(body)
    return None


def _base64(body: bytes) -> bytes:
    """Lenient base64: characters outside the alphabet are skipped, like Dovecot does."""
    kept = bytes(c for c in body if c in _B64_ALPHABET)
    kept = kept.split(b"=", 1)[0]
    kept = kept[: len(kept) - len(kept) % 4] + _tail(kept[len(kept) - len(kept) % 4 :])
    return binascii.a2b_base64(kept) if kept else b""


_B64_ALPHABET = frozenset(b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/=")


def _tail(rest: bytes) -> bytes:
    """Pad a final short group (2 or 3 characters carry data; 1 carries none)."""
    if len(rest) < 2:
        return b""
    return rest + b"=" * (4 - len(rest))


def _quoted_printable(body: bytes) -> bytes:
    """RFC 2045 §6.7: ``=XX`` escapes, soft line breaks, and trailing blanks dropped."""
    out = bytearray()
    lines = body.split(b"\n")
    for index, line in enumerate(lines):
        last = index == len(lines) - 1
        had_cr = line.endswith(b"\r")
        if had_cr:
            line = line[:-1]
        line = line.rstrip(b" \t")
        soft = line.endswith(b"=")
        if soft:
            line = line[:-1]
        out += _unescape(line)
        if not last and not soft:
            out += b"\r\n" if had_cr else b"\n"
    return bytes(out)


_HEX = frozenset(b"0123456789ABCDEFabcdef")


def _unescape(line: bytes) -> bytes:
    out = bytearray()
    pos = 0
    while True:
        eq = line.find(b"=", pos)
        if eq < 0:
            out += line[pos:]
            return bytes(out)
        out += line[pos:eq]
        pair = line[eq + 1 : eq + 3]
        if len(pair) == 2 and pair[0] in _HEX and pair[1] in _HEX:
            out.append(int(pair, 16))
            pos = eq + 3
        else:
            out += b"="
            pos = eq + 1
