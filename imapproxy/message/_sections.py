"""Section addressing: ``BODY[part.text (fields)]`` cut from a raw message.

Section paths follow Dovecot's ``imap_msgpart_find``: ``N.1`` of a leaf part is the part
itself, ``1`` of a single-part message is its body, and ``1.MIME`` of a single-part
message is the message header.
"""

from __future__ import annotations

from imapproxy.message import _structure as structure
from imapproxy.message._binary_message import binary_of
from imapproxy.message._header import (
    _as_crlf,
    _filter_fields,
    _has_blank_line,
    _header_block_end,
    header_fields,
)
from imapproxy.message._lines import CRLF
from imapproxy.message._structure import _Part
from imapproxy.message._transfer import UnknownEncoding, decode, transfer_encoding

_TEXT_SECTIONS = frozenset({"HEADER", "HEADER.FIELDS", "HEADER.FIELDS.NOT", "TEXT", "MIME"})


def _find(root: _Part, path: tuple[int, ...]) -> _Part | None:
    """Resolve a part number path the way Dovecot's imap_msgpart_find does."""
    part: _Part | None = root
    for index, num in enumerate(path):
        if part is None:
            return None
        more = index + 1 < len(path)
        if part.multipart:
            part = part.children[num - 1] if 0 < num <= len(part.children) else None
        elif num != 1 or (more and not part.rfc822):
            return None
        if part is not None and part.rfc822 and more:
            part = part.children[0]
    return part


def _slice_header(raw: bytes, part: _Part) -> bytes:
    return raw[part.start : part.body_start]


def _slice_body(raw: bytes, part: _Part) -> bytes:
    return raw[part.body_start : part.end]


def _fields_of(
    raw: bytes, message: _Part, fields: tuple[str, ...], negate: bool, top_level: bool
) -> bytes:
    """HEADER.FIELDS[.NOT] of a message, matching Dovecot's two code paths.

    The top-level HEADER.FIELDS comes from Dovecot's cache: every line CRLF-terminated,
    the blank line always added (that is :func:`header_fields`).  Everything else runs
    Dovecot's header filter over the raw stream from the message's start to the first
    empty line, ignoring MIME boundaries: an unterminated last line stays so, and the
    blank line is only there if the stream had one.
    """
    header = raw[message.start : _header_block_end(raw, message.start)]
    if top_level and not negate:
        return header_fields(header, fields, negate=False)
    wanted = {name.lower().encode() for name in fields}
    kept = _filter_fields(header, wanted, negate)
    return _as_crlf(kept) + (CRLF if _has_blank_line(header) else b"")


def _message_text(
    raw: bytes, message: _Part, text: str, fields: tuple[str, ...], top_level: bool
) -> bytes:
    """HEADER / HEADER.FIELDS[.NOT] / TEXT of a message (the root or an rfc822 body)."""
    if text == "HEADER":
        return _slice_header(raw, message)
    if text == "TEXT":
        return _slice_body(raw, message)
    return _fields_of(raw, message, fields, text == "HEADER.FIELDS.NOT", top_level)


class ParsedMessage:
    """A raw message whose MIME structure is parsed once and then cut many times.

    A FETCH often asks for several sections of one message (``BODY.PEEK[1]
    BODY.PEEK[2] BODY.PEEK[1.MIME]``); build one ``ParsedMessage`` and call
    :meth:`section` for each.  The structure is parsed on the first section that needs
    it (the whole message and its top-level HEADER/TEXT/HEADER.FIELDS do not).
    """

    __slots__ = ("_root", "raw")

    def __init__(self, raw: bytes) -> None:
        self.raw = raw
        self._root: _Part | None = None

    def _structure(self) -> _Part:
        if self._root is None:
            self._root = structure._structure(self.raw)
        return self._root

    def section(
        self, part: tuple[int, ...], text: str | None, fields: tuple[str, ...] = ()
    ) -> bytes | None:
        """The bytes of ``BODY[<part>.<text> (<fields>)]``: see :func:`extract_section`."""
        upper = None if text is None else text.upper()
        if upper is not None and upper not in _TEXT_SECTIONS:
            raise ValueError(f"unknown section text {text!r}")
        if any(num < 1 for num in part):
            raise ValueError(f"part numbers start at 1: {part!r}")
        raw = self.raw
        if not part:
            if upper is None:
                return raw
            if upper == "MIME":
                raise ValueError("MIME needs a part number (Dovecot answers BAD)")
            # The top-level header ends at the first empty line whatever the structure.
            root = _Part(0, _header_block_end(raw, 0), len(raw))
            return _message_text(raw, root, upper, fields, top_level=True)
        found = _find(self._structure(), part)
        if found is None:
            return None
        if upper is None:
            return _slice_body(raw, found)
        if upper == "MIME":
            return _slice_header(raw, found)
        if not found.rfc822:
            return None
        return _message_text(raw, found.children[0], upper, fields, top_level=False)

    def binary(self, part: tuple[int, ...]) -> bytes | None:
        """``BINARY[<part>]`` (RFC 3516): the part's body with its transfer encoding
        undone.  ``()`` is the whole message, and a multipart or message/rfc822 part
        its body, with every encoded part inside made binary (see _binary_message).  A
        part that does not exist is ``b""`` (as BODY[] answers it); an unknown
        encoding raises UnknownEncoding."""
        if any(num < 1 for num in part):
            raise ValueError(f"part numbers start at 1: {part!r}")
        root = self._structure()
        if not part:
            return binary_of(self.raw, root, 0, len(self.raw))
        found = _find(root, part)
        if found is None:
            return b""
        if found.multipart or found.rfc822:
            return binary_of(self.raw, found, found.body_start, found.end)
        body = _slice_body(self.raw, found)
        encoding = transfer_encoding(_slice_header(self.raw, found))
        decoded = decode(body, encoding)
        if decoded is None:
            raise UnknownEncoding(encoding.decode("ascii", "replace"))
        return decoded


def extract_section(
    raw: bytes, part: tuple[int, ...], text: str | None, fields: tuple[str, ...] = ()
) -> bytes | None:
    """The bytes of ``BODY[<part>.<text> (<fields>)]`` for a raw message.

    ``part`` is the part number path (``()`` for the whole message), ``text`` one of
    None, HEADER, HEADER.FIELDS, HEADER.FIELDS.NOT, TEXT, MIME; ``fields`` the field
    names for the HEADER.FIELDS forms.  ``MIME`` without a part number is a syntax
    error (ValueError; Dovecot answers BAD).  Returns None when the part does not
    exist, including HEADER/TEXT of a part that is not message/rfc822.  RFC 3501 leaves
    that answer open; Dovecot sends an empty string, so the caller should answer
    ``BODY[...] ""`` to match it.

    Each call parses the message's structure again: for several sections of one
    message use :class:`ParsedMessage`.
    """
    return ParsedMessage(raw).section(part, text, fields)


def partial(data: bytes, start: int, length: int | None) -> bytes:
    """``<start.length>`` of a section: the bytes from ``start``, at most ``length``.

    A start at or beyond the end gives the empty string (RFC 3501 6.4.5), never NIL.
    """
    if start < 0 or (length is not None and length < 0):
        raise ValueError("partial offsets must not be negative")
    if length is None:
        return data[start:]
    return data[start : start + length]
