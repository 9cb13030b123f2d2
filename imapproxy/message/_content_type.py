"""The Content-Type tokenizer: media type and boundary, with Dovecot's tolerance.

A malformed Content-Type is ignored the way Dovecot ignores it (the part is then
text/plain), and broken parameters are skipped one byte at a time.
"""

from __future__ import annotations

from dataclasses import dataclass

# Dovecot truncates longer boundaries (RFC 2046 allows 70 characters).
_BOUNDARY_MAX = 80

# RFC 2045 token characters as Dovecot's rfc822_parse_mime_token accepts them: atext
# without "/", "=", "?", plus "." and any 8-bit byte.
_TOKEN = frozenset(
    b"!#$%&'*+-.^_`{|}~0123456789"
    b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz" + bytes(range(128, 256))
)


class _Cursor:
    """A tiny RFC 822 tokenizer over a header value, mirroring Dovecot's rules."""

    def __init__(self, data: bytes) -> None:
        self.data = data
        self.pos = 0

    def at_end(self) -> bool:
        return self.pos >= len(self.data)

    def peek(self) -> int:
        return self.data[self.pos] if self.pos < len(self.data) else -1

    def skip_cfws(self) -> bool:
        """Skip whitespace, folds and (nested) comments; False on an unclosed comment."""
        while not self.at_end():
            char = self.peek()
            if char in b" \t\r\n":
                self.pos += 1
            elif char == ord("("):
                if not self._skip_comment():
                    return False
            else:
                break
        return True

    def _skip_comment(self) -> bool:
        depth = 0
        while not self.at_end():
            char = self.peek()
            self.pos += 1
            if char == ord("\\"):
                self.pos += 1
            elif char == ord("("):
                depth += 1
            elif char == ord(")"):
                depth -= 1
                if depth == 0:
                    return True
        return False

    def token(self) -> bytes:
        start = self.pos
        while not self.at_end() and self.peek() in _TOKEN:
            self.pos += 1
        return self.data[start : self.pos]

    def quoted(self) -> bytes | None:
        """A quoted-string's content, unescaped and unfolded; None if unterminated."""
        out = bytearray()
        self.pos += 1
        while not self.at_end():
            char = self.peek()
            self.pos += 1
            if char == ord('"'):
                return bytes(out)
            if char == ord("\\") and not self.at_end() and self.peek() not in b"\r\n":
                out.append(self.peek())
                self.pos += 1
            elif char == ord("\n"):
                if out.endswith(b"\r"):
                    del out[-1]
            else:
                out.append(char)
        return None

    def raw_until_separator(self) -> bytes:
        """Dovecot's workaround for ``name==?utf-8?...``: take up to ``;`` or blank."""
        start = self.pos
        while not self.at_end() and self.peek() not in b"; \t\r\n":
            self.pos += 1
        return self.data[start : self.pos]


def _media_type(cur: _Cursor) -> bytes | None:
    """Parse ``type/subtype``; None if malformed (Dovecot then ignores the header)."""
    cur.skip_cfws()
    main = cur.token()
    cur.skip_cfws()
    if not main or cur.peek() != ord("/"):
        return None
    cur.pos += 1
    cur.skip_cfws()
    sub = cur.token()
    cur.skip_cfws()
    if not sub or not (cur.at_end() or cur.peek() == ord(";")):
        return None
    return (main + b"/" + sub).lower()


def _parameter(cur: _Cursor) -> tuple[bytes, bytes] | None:
    """Parse one ``; name=value`` parameter; None if malformed at the cursor."""
    if cur.peek() != ord(";"):
        return None
    cur.pos += 1
    if not cur.skip_cfws():
        return None
    name = cur.token()
    cur.skip_cfws()
    if not name or cur.peek() != ord("="):
        return None
    cur.pos += 1
    cur.skip_cfws()
    if cur.peek() == ord('"'):
        value = cur.quoted()
        if value is None:
            return None
    elif cur.peek() == ord("="):
        value = cur.raw_until_separator()
    else:
        value = cur.token()
    cur.skip_cfws()
    return name, value


def _boundary(cur: _Cursor) -> bytes | None:
    """Find the ``boundary`` parameter, skipping broken parameters like Dovecot does."""
    while not cur.at_end():
        start = cur.pos
        param = _parameter(cur)
        if param is None:
            cur.pos = start + 1
            continue
        if param[0].lower() == b"boundary":
            return param[1][:_BOUNDARY_MAX]
    return None


@dataclass(frozen=True)
class _ContentType:
    media_type: bytes
    boundary: bytes | None


def _content_type(value: bytes) -> _ContentType | None:
    """Media type and boundary of a Content-Type value."""
    cur = _Cursor(value)
    media_type = _media_type(cur)
    if media_type is None:
        return None
    boundary = _boundary(cur) if media_type.startswith(b"multipart/") else None
    return _ContentType(media_type, boundary)
