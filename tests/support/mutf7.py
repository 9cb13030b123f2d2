"""Modified UTF-7 (RFC 3501 section 5.1.3), the encoding of IMAP mailbox names.

Tests need it twice: to name non-ASCII mailboxes on the wire, and to name their Maildir++
directories, which Dovecot stores in the same encoding by default.
"""

from __future__ import annotations

import base64


def _flush(chunk: list[str]) -> str:
    raw = "".join(chunk).encode("utf-16-be")
    return "&" + base64.b64encode(raw).decode("ascii").rstrip("=").replace("/", ",") + "-"


def encode(name: str) -> str:
    """Encode a Unicode mailbox name, e.g. ``"받은편지함"`` -> ``"&vBvHQNO4ycDVaA-"``."""
    out: list[str] = []
    pending: list[str] = []
    for char in name:
        if 0x20 <= ord(char) <= 0x7E:
            if pending:
                out.append(_flush(pending))
                pending = []
            out.append("&-" if char == "&" else char)
        else:
            pending.append(char)
    if pending:
        out.append(_flush(pending))
    return "".join(out)


def decode(name: str) -> str:
    """Decode a modified UTF-7 mailbox name back to Unicode."""
    out: list[str] = []
    i = 0
    while i < len(name):
        char = name[i]
        if char != "&":
            out.append(char)
            i += 1
            continue
        end = name.index("-", i)
        chunk = name[i + 1 : end]
        if not chunk:
            out.append("&")
        else:
            data = chunk.replace(",", "/")
            data += "=" * (-len(data) % 4)
            out.append(base64.b64decode(data).decode("utf-16-be"))
        i = end + 1
    return "".join(out)
