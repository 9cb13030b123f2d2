"""ENVELOPE, BODYSTRUCTURE and BODY of a raw message, as Dovecot 2.3 answers them.

A message APPENDed while the upstream is unreachable exists only in the replica until
replay; its FETCH ENVELOPE/BODYSTRUCTURE must still answer, and answer what the
upstream will later say for the same bytes (a client caches both and would see the
message change under it otherwise). So this follows Dovecot's ``message-part-data.c``,
``imap-bodystructure.c``, ``imap-envelope.c`` and ``message-address.c`` rather than
RFC 3501 alone:

* The MIME tree is the one :mod:`imapproxy.message` finds for section cutting
  (Dovecot's ``message-parser.c`` quirks included), so part numbers and sizes agree.
* Header values are unfolded by dropping CR and LF (the blanks of a fold stay), except
  the Subject, whose blanks collapse to one space, trimmed. A repeated ENVELOPE field's
  last occurrence wins, a repeated Content-* field's first. ENVELOPE strings are the
  raw values (encoded words are not decoded; 8-bit bytes are passed through).
* Content-* fields count only in a MIME entity: a multipart's child, or a message
  (top level or message/rfc822 content) with a MIME-Version or Content-Type field.
* Type, subtype, parameter names and values and the encoding keep their case (RFC 2231
  continuations joined); a text part without a charset gets ``("charset" "us-ascii")``
  added, at the end.
* Sizes count a bare LF as CRLF (Dovecot's virtual size); lines are the LFs in the body.
* Missing address parts are filled in as Dovecot does (``MISSING_MAILBOX``,
  ``MISSING_DOMAIN``); Sender and Reply-To default to From.

Values are plain IMAP values (:mod:`imapproxy.protocol`); the caller serializes them
the way it serializes the upstream's answers, so the bytes served are the same.
"""

from __future__ import annotations

from collections.abc import Iterator

from imapproxy.message._content_type import _Cursor
from imapproxy.message._structure import _Part, _structure

Value = None | int | bytes | tuple["Value", ...]

__all__ = ["body", "bodystructure", "envelope"]

_ENVELOPE_FIELDS = (
    b"date",
    b"subject",
    b"from",
    b"sender",
    b"reply-to",
    b"to",
    b"cc",
    b"bcc",
    b"in-reply-to",
    b"message-id",
)
_ADDRESS_FIELDS = {b"from", b"sender", b"reply-to", b"to", b"cc", b"bcc"}


# --------------------------------------------------------------------------- headers


def _fields(header: bytes) -> Iterator[tuple[bytes, bytes]]:
    """(lower-case name, unfolded value) of each field, in order."""
    lines = header.split(b"\n")
    current: list[bytes] = []
    for line in lines:
        if line.endswith(b"\r"):
            line = line[:-1]
        if line[:1] in (b" ", b"\t") and current:
            current.append(line)
            continue
        if current:
            yield _field(current)
        if not line:
            return
        current = [line]
    if current:
        yield _field(current)


def _field(lines: list[bytes]) -> tuple[bytes, bytes]:
    first = lines[0]
    colon = first.find(b":")
    if colon < 0:
        return first.strip().lower(), b""
    name = first[:colon].rstrip(b" \t").lower()
    value = b"".join([first[colon + 1 :], *lines[1:]])
    return name, value.lstrip(b" \t")


def _last_values(header: bytes, wanted: tuple[bytes, ...]) -> dict[bytes, bytes]:
    """The value of each wanted field; a repeated field's last one wins, as in Dovecot."""
    return {name: value for name, value in _fields(header) if name in wanted}


# --------------------------------------------------------------------------- addresses


class _Addresses:
    """Dovecot's message_address_parse (with FILL_MISSING) over one header value."""

    def __init__(self, value: bytes) -> None:
        self.cur = _Cursor(value)
        self.comment = b""

    def skip(self) -> None:
        cur = self.cur
        while not cur.at_end():
            char = cur.peek()
            if char in b" \t\r\n":
                cur.pos += 1
            elif char == ord("("):
                start = cur.pos
                if not cur._skip_comment():
                    cur.pos = len(cur.data)
                    return
                self.comment = cur.data[start + 1 : cur.pos - 1]
            else:
                return

    def word(self) -> bytes | None:
        self.skip()
        cur = self.cur
        if cur.peek() == ord('"'):
            return cur.quoted()
        start = cur.pos
        while not cur.at_end() and cur.peek() not in b' \t\r\n()<>[]:;@\\,."':
            cur.pos += 1
        return cur.data[start : cur.pos] if cur.pos > start else None

    def phrase(self) -> bytes:
        words: list[bytes] = []
        while True:
            self.skip()
            if self.cur.peek() == ord("."):
                self.cur.pos += 1
                words.append(b".")
                continue
            word = self.word()
            if word is None:
                break
            words.append(word)
        out = b""
        for word in words:
            out += word if (word == b"." or out.endswith(b".") or not out) else b" " + word
        return out

    def dot_atom(self) -> bytes:
        out = b""
        while True:
            word = self.word()
            if word is None:
                return out
            out += word
            self.skip()
            if self.cur.peek() != ord("."):
                return out
            self.cur.pos += 1
            out += b"."

    def domain(self) -> bytes:
        self.skip()
        cur = self.cur
        if cur.peek() == ord("["):
            end = cur.data.find(b"]", cur.pos)
            end = len(cur.data) if end < 0 else end + 1
            literal = cur.data[cur.pos : end]
            cur.pos = end
            return literal
        return self.dot_atom()

    def addr_spec(self) -> tuple[bytes, bytes]:
        local = self.dot_atom()
        self.skip()
        host = b""
        if self.cur.peek() == ord("@"):
            self.cur.pos += 1
            host = self.domain()
        return local, host

    def address(self, name: bytes | None) -> tuple[Value, ...]:
        local, host = self.addr_spec()
        self.skip()
        if self.cur.peek() == ord(">"):
            self.cur.pos += 1
        return (name or None, None, local or b"MISSING_MAILBOX", host or b"MISSING_DOMAIN")

    def parse(self) -> tuple[tuple[Value, ...], ...]:
        out: list[tuple[Value, ...]] = []
        cur = self.cur
        in_group = False
        while not cur.at_end():
            self.skip()
            if cur.at_end():
                break
            if cur.peek() == ord(","):
                cur.pos += 1
                continue
            if cur.peek() == ord(";") and in_group:
                cur.pos += 1
                out.append((None, None, None, None))
                in_group = False
                continue
            start = cur.pos
            self.comment = b""
            phrase = self.phrase()
            self.skip()
            char = cur.peek()
            if char == ord("<"):
                cur.pos += 1
                out.append(self.address(phrase))
            elif char == ord(":") and not in_group:
                cur.pos += 1
                out.append((None, None, phrase or b"MISSING_MAILBOX", None))
                in_group = True
            else:
                cur.pos = start
                self.comment = b""
                local, host = self.addr_spec()
                self.skip()
                name = self.comment or None
                out.append((name, None, local or b"MISSING_MAILBOX", host or b"MISSING_DOMAIN"))
                if cur.pos == start:
                    cur.pos += 1  # a character no rule takes: skip it, as Dovecot does
        if in_group:
            out.append((None, None, None, None))
        return tuple(out)


def _address_list(value: bytes | None) -> Value:
    if value is None:
        return None
    parsed = _Addresses(value).parse()
    return parsed or None


def _nstring(value: bytes | None) -> bytes | None:
    return None if value is None else value.replace(b"\r", b"").replace(b"\n", b"")


def _for_humans(value: bytes | None) -> bytes | None:
    """Subject: blanks (tabs, folds) collapsed to one space, trimmed at both ends."""
    if value is None:
        return None
    return b" ".join(value.replace(b"\r", b" ").replace(b"\n", b" ").split())


def _envelope_of(header: bytes) -> tuple[Value, ...]:
    values = _last_values(header, _ENVELOPE_FIELDS)
    sender = _address_list(values.get(b"from"))
    return (
        _nstring(values.get(b"date")),
        _for_humans(values.get(b"subject")),
        sender,
        _address_list(values[b"sender"]) if b"sender" in values else sender,
        _address_list(values[b"reply-to"]) if b"reply-to" in values else sender,
        _address_list(values.get(b"to")),
        _address_list(values.get(b"cc")),
        _address_list(values.get(b"bcc")),
        _nstring(values.get(b"in-reply-to")),
        _nstring(values.get(b"message-id")),
    )


def envelope(raw: bytes) -> tuple[Value, ...]:
    """FETCH ENVELOPE of a whole message."""
    root = _structure(raw)
    return _envelope_of(raw[root.start : root.body_start])


# --------------------------------------------------------------------------- content fields


def _token(cur: _Cursor) -> bytes:
    cur.skip_cfws()
    return cur.token()


def _parameters(cur: _Cursor) -> list[tuple[bytes, bytes]]:
    """``; name=value`` pairs, names lower-cased, RFC 2231 continuations joined."""
    plain: list[tuple[bytes, bytes]] = []
    while True:
        cur.skip_cfws()
        if cur.peek() != ord(";"):
            return _join_continuations(plain)
        cur.pos += 1
        cur.skip_cfws()
        name = cur.token()
        cur.skip_cfws()
        if not name or cur.peek() != ord("="):
            return _join_continuations(plain)
        cur.pos += 1
        cur.skip_cfws()
        if cur.peek() == ord('"'):
            value = cur.quoted()
            if value is None:
                return _join_continuations(plain)
        elif cur.peek() == ord("="):
            value = cur.raw_until_separator()
        else:
            value = cur.token()
        plain.append((name, value))


def _join_continuations(params: list[tuple[bytes, bytes]]) -> list[tuple[bytes, bytes]]:
    """RFC 2231: ``name*0``, ``name*1*``… become one ``name`` (or ``name*``) value."""
    if not any(b"*" in name for name, _ in params):
        return params
    out: list[tuple[bytes, bytes]] = []
    pieces: dict[bytes, list[tuple[int, bytes, bool]]] = {}
    order: list[bytes] = []
    for name, value in params:
        base, star, rest = name.partition(b"*")
        if not star:
            out.append((name, value))
            continue
        number_text = rest.rstrip(b"*")
        if number_text.isdigit():
            extended = rest.endswith(b"*")
            if base not in pieces:
                pieces[base] = []
                order.append(base)
            pieces[base].append((int(number_text), value, extended))
        else:
            out.append((name, value))
    for base in order:
        parts = sorted(pieces[base])
        extended = parts[0][2]
        out.append((base + (b"*" if extended else b""), b"".join(v for _, v, _ in parts)))
    return out


class _Content:
    """The Content-* fields of one entity, as Dovecot keeps them."""

    def __init__(self, header: bytes, is_mime: bool) -> None:
        self.type: bytes | None = None
        self.subtype: bytes = b""
        self.params: list[tuple[bytes, bytes]] = []
        self.encoding: bytes | None = None
        self.id: bytes | None = None
        self.description: bytes | None = None
        self.md5: bytes | None = None
        self.disposition: bytes | None = None
        self.disposition_params: list[tuple[bytes, bytes]] = []
        self.language: tuple[bytes, ...] | None = None
        self.location: bytes | None = None
        if is_mime:
            self._read(header)

    def _read(self, header: bytes) -> None:
        seen: set[bytes] = set()
        for name, value in _fields(header):
            if not name.startswith(b"content-") or name in seen:
                continue
            seen.add(name)
            value = value.replace(b"\r", b"").replace(b"\n", b"")
            kind = name[len(b"content-") :]
            if kind == b"type":
                self._type(value)
            elif kind == b"transfer-encoding":
                token = _token(_Cursor(value))
                self.encoding = token or None
            elif kind == b"id":
                self.id = value
            elif kind == b"description":
                self.description = value
            elif kind == b"md5":
                self.md5 = value
            elif kind == b"location":
                self.location = value
            elif kind == b"disposition":
                cur = _Cursor(value)
                token = _token(cur)
                if token:
                    self.disposition = token
                    self.disposition_params = _parameters(cur)
            elif kind == b"language":
                self.language = _languages(value)

    def _type(self, value: bytes) -> None:
        cur = _Cursor(value)
        main = _token(cur)
        cur.skip_cfws()
        sub = b""
        if cur.peek() == ord("/"):
            cur.pos += 1
            sub = _token(cur)
        if not main:
            return
        self.type, self.subtype = main, sub
        self.params = _parameters(cur)

    @property
    def is_text(self) -> bool:
        return self.type is None or self.type.lower() == b"text"


def _languages(value: bytes) -> tuple[bytes, ...] | None:
    cur = _Cursor(value)
    out: list[bytes] = []
    while True:
        cur.skip_cfws()
        start = cur.pos
        while not cur.at_end() and cur.peek() not in b' \t\r\n(),;"':
            cur.pos += 1
        if cur.pos == start:
            break
        out.append(cur.data[start : cur.pos])
        cur.skip_cfws()
        if cur.peek() != ord(","):
            break
        cur.pos += 1
    return tuple(out) or None


def _param_list(params: list[tuple[bytes, bytes]], default_charset: bool) -> Value:
    flat: list[Value] = []
    for name, value in params:
        flat += [name, value]
    if default_charset and not any(n.lower() == b"charset" for n, _ in params):
        flat += [b"charset", b"us-ascii"]
    return tuple(flat) or None


def _disposition(content: _Content) -> Value:
    if content.disposition is None:
        return None
    return (content.disposition, _param_list(content.disposition_params, False))


# --------------------------------------------------------------------------- structure


def _virtual_size(raw: bytes, start: int, end: int) -> int:
    """Size with bare LFs counted as CRLF, counted in place: a 30 MB body is not
    copied to be measured."""
    return end - start + raw.count(b"\n", start, end) - raw.count(b"\r\n", start, end)


def _is_mime(raw: bytes, part: _Part, in_multipart: bool) -> bool:
    """A multipart's child always; a message only with MIME-Version or Content-Type."""
    if in_multipart:
        return True
    header = raw[part.start : part.body_start]
    return any(name in (b"mime-version", b"content-type") for name, _ in _fields(header))


def _write(raw: bytes, part: _Part, extended: bool, in_multipart: bool) -> tuple[Value, ...]:
    header = raw[part.start : part.body_start]
    content = _Content(header, _is_mime(raw, part, in_multipart))
    if part.multipart:
        children: list[Value] = [_write(raw, child, extended, True) for child in part.children]
        if not children:
            children = [_EMPTY_EXTENDED if extended else _EMPTY]
        out: list[Value] = [*children, content.subtype or b"x-unknown"]
        if extended:
            out += [
                _param_list(content.params, False),
                _disposition(content),
                content.language,
                content.location,
            ]
        return tuple(out)
    start, end = part.body_start, part.end
    text = not part.rfc822 and content.is_text
    if part.rfc822:
        kind: list[Value] = [b"message", b"rfc822"]
    elif content.type is None:
        kind = [b"text", b"plain"]
    else:
        kind = [content.type, content.subtype]
    out = [
        *kind,
        _param_list(content.params, text),
        content.id,
        content.description,
        content.encoding or b"7bit",
        _virtual_size(raw, start, end),
    ]
    if text:
        out.append(raw.count(b"\n", start, end))
    elif part.rfc822:
        child = part.children[0]
        out += [
            _envelope_of(raw[child.start : child.body_start]),
            _write(raw, child, extended, False),
            raw.count(b"\n", start, end),
        ]
    if extended:
        out += [content.md5, _disposition(content), content.language, content.location]
    return tuple(out)


_EMPTY: tuple[Value, ...] = (
    b"text",
    b"plain",
    (b"charset", b"us-ascii"),
    None,
    None,
    b"7bit",
    0,
    0,
)
_EMPTY_EXTENDED: tuple[Value, ...] = (*_EMPTY, None, None, None, None)


def bodystructure(raw: bytes) -> tuple[Value, ...]:
    """FETCH BODYSTRUCTURE of a whole message."""
    return _write(raw, _structure(raw), True, False)


def body(raw: bytes) -> tuple[Value, ...]:
    """FETCH BODY (the non-extensible BODYSTRUCTURE) of a whole message."""
    return _write(raw, _structure(raw), False, False)
