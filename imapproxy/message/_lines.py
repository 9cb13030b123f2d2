"""Line arithmetic over raw message bytes: where lines end, which newline precedes.

Dovecot accepts bare LF as well as CRLF line ends, so every helper here does too.
"""

from __future__ import annotations

CRLF = b"\r\n"


def _line_end(data: bytes, pos: int) -> int:
    """Offset just past the LF ending the line at ``pos`` (end of data if none)."""
    lf = data.find(b"\n", pos)
    return len(data) if lf < 0 else lf + 1


def _is_blank(line: bytes) -> bool:
    """True for an empty line, the one that ends a header block."""
    return line in (b"\n", b"\r\n")


def _newline_before(data: bytes, pos: int) -> int:
    """Length of the [CR]LF that ends just before ``pos`` (0 if none)."""
    if pos < 1 or data[pos - 1] != 0x0A:
        return 0
    return 2 if pos >= 2 and data[pos - 2] == 0x0D else 1


def _newline_after(data: bytes, pos: int) -> int:
    """Length of the [CR]LF starting at ``pos`` (0 if none)."""
    if data.startswith(CRLF, pos):
        return 2
    return 1 if data.startswith(b"\n", pos) else 0
