"""Modified UTF-7 mailbox names (RFC 3501 section 5.1.3).

The proxy passes names through unchanged; these helpers exist for display,
logging and for clients that send raw UTF-8 to an IMAP4rev1 upstream.
"""

from __future__ import annotations

import base64
import binascii

from ._errors import ParseError

__all__ = ["decode_mutf7", "encode_mutf7"]


def _b64(data: bytes) -> str:
    return base64.b64encode(data, b"+,").decode("ascii").rstrip("=")


def encode_mutf7(name: str) -> str:
    """Encode a Unicode mailbox name into modified UTF-7."""
    out: list[str] = []
    pending: list[str] = []

    def flush() -> None:
        if pending:
            out.append("&" + _b64("".join(pending).encode("utf-16-be")) + "-")
            pending.clear()

    for ch in name:
        if 0x20 <= ord(ch) <= 0x7E:
            flush()
            out.append("&-" if ch == "&" else ch)
        else:
            pending.append(ch)
    flush()
    return "".join(out)


def decode_mutf7(name: str) -> str:
    """Decode a modified UTF-7 mailbox name; ParseError if it is malformed."""
    out: list[str] = []
    i = 0
    n = len(name)
    while i < n:
        ch = name[i]
        if not 0x20 <= ord(ch) <= 0x7E:
            raise ParseError("invalid character in modified UTF-7 name")
        if ch != "&":
            out.append(ch)
            i += 1
            continue
        end = name.find("-", i + 1)
        if end < 0:
            raise ParseError("unterminated modified UTF-7 shift")
        chunk = name[i + 1 : end]
        i = end + 1
        if not chunk:
            out.append("&")
            continue
        if len(chunk) % 4 == 1:
            raise ParseError("invalid modified UTF-7 base64")
        try:
            raw = base64.b64decode(chunk + "=" * (-len(chunk) % 4), b"+,", validate=True)
            text = raw.decode("utf-16-be")
        except (binascii.Error, UnicodeDecodeError, ValueError):
            raise ParseError("invalid modified UTF-7 base64") from None
        # Printable ASCII must not be encoded, and the encoding must be canonical.
        if any(0x20 <= ord(c) <= 0x7E for c in text) or _b64(raw) != chunk:
            raise ParseError("non-canonical modified UTF-7")
        out.append(text)
    return "".join(out)
