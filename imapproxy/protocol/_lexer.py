"""Turn a complete command or response line (with its literals) into values.

Readers collect a command/response as *parts*: ``[text0, literal0, text1,
literal1, ..., textN]`` where each text is one line segment with the literal
marker (``{n}``, ``{n+}``, ``~{n}``) and CRLF already removed, and each
literal is the literal's data. Because the whole line is present before we
lex, the lexer never has to suspend; resumability lives in the readers.

Lexing is context-free except for one IMAP quirk: a fetch item name such as
``BODY[HEADER.FIELDS (SUBJECT FROM)]<0>`` contains spaces and parens inside
its brackets, so an atom that reaches ``[`` swallows everything up to the
matching ``]``. Inside a response code (``[...]``) ``]`` ends atoms instead.
"""

from __future__ import annotations

import re

from ._errors import ParseError
from ._values import Atom, Value

__all__ = ["END", "Scanner"]

_ATOM = re.compile(rb'[^\x00-\x1f\x7f ()"{\[]+')
_ATOM_WITH_BRACKETS = re.compile(rb'[^\x00-\x1f\x7f ()"{]+')
_ATOM_IN_CODE = re.compile(rb'[^\x00-\x1f\x7f ()"{\[\]]+')
_QUOTED = re.compile(rb'"((?:[^"\\\r\n]|\\[^\r\n])*)"')
_ESCAPE = re.compile(rb"\\(.)", re.DOTALL)
_BRACKET_BODY = re.compile(rb'\[(?:[^\]"\r\n]|"(?:[^"\\\r\n]|\\.)*")*\]')
#: Fast path inside lists: ")" (1), "(" (2), a quoted string (3), or an atom that ends
#: at a space, ")" or the end (4); an atom running into "[" takes the slow path.
_LIST_TOKEN = re.compile(
    rb' *(?:(\))|(\()|"((?:[^"\\\r\n]|\\[^\r\n])*)"|([^\x00-\x1f\x7f ()"{\[]+)(?=[ )]|\Z))'
)


class _End:
    """Marker returned by :meth:`Scanner.read_value` at ``)`` or end of input."""

    def __repr__(self) -> str:
        return "END"


END = _End()


class Scanner:
    """A cursor over command/response parts producing :data:`Value` items.

    ``numbers`` turns digit-only atoms into ``int`` and ``NIL`` into ``None``
    (response mode); commands keep atoms as :class:`Atom` because the same
    text can be a number or an astring depending on the command.
    """

    def __init__(
        self,
        parts: list[bytes],
        *,
        numbers: bool,
        max_depth: int = 100,
        index: int = 0,
        pos: int = 0,
    ) -> None:
        self.parts = parts
        self.numbers = numbers
        self.max_depth = max_depth
        self.index = index
        self.pos = pos
        self.code_mode = False
        #: Index of a text part where a "[" found no "]" (see _read_atom).
        self._no_bracket_in = -1

    @property
    def text(self) -> bytes:
        return self.parts[self.index]

    def skip_spaces(self) -> None:
        text = self.parts[self.index]
        while self.pos < len(text) and text[self.pos] == 0x20:
            self.pos += 1

    def at_end(self) -> bool:
        """True when only spaces remain in the whole input."""
        self.skip_spaces()
        return self.pos >= len(self.text) and self.index + 1 >= len(self.parts)

    def peek_char(self) -> int | None:
        """The next byte of the current text part, or None at its end."""
        self.skip_spaces()
        text = self.text
        return text[self.pos] if self.pos < len(text) else None

    def read_value(self, depth: int = 0, partial: bool = False) -> Value | _End:
        """Read one value; :data:`END` at ``)`` (not consumed) or end of input."""
        self.skip_spaces()
        text = self.parts[self.index]
        pos = self.pos
        if pos >= len(text):
            if self.index + 1 < len(self.parts):
                literal = self.parts[self.index + 1]
                self.index += 2
                self.pos = 0
                return literal
            return END
        c = text[pos]
        if c == 0x28:  # (
            self.pos = pos + 1
            return self._read_list(depth, partial)
        if c == 0x29:  # )
            return END
        if c == 0x22:  # "
            m = _QUOTED.match(text, pos)
            if not m:
                raise ParseError("invalid quoted string")
            self.pos = m.end()
            data = m.group(1)
            return _ESCAPE.sub(rb"\1", data) if b"\\" in data else data
        if c == 0x7B:  # {
            raise ParseError("literal not at end of line")
        if c == 0x5D and self.code_mode:  # ]
            return END
        return self._read_atom(text, pos)

    def _read_list(self, depth: int, partial: bool) -> Value:
        """The items of a list whose "(" was just consumed, through its ")".

        Nested lists are kept on an explicit stack rather than by recursion, so
        ``max_depth`` is the only limit on nesting (never Python's recursion limit).
        """
        if depth >= self.max_depth:
            raise ParseError("lists nested too deeply")
        outer: list[list[Value]] = []  # the enclosing lists still open
        items: list[Value] = []
        while True:
            if not self.code_mode:
                # Fast path: ")" or "(" or a quoted string or a plain atom, in one match.
                m = _LIST_TOKEN.match(self.parts[self.index], self.pos)
                if m:
                    self.pos = m.end()
                    kind = m.lastindex
                    if kind == 1:
                        if not outer:
                            return tuple(items)
                        done = tuple(items)
                        items = outer.pop()
                        items.append(done)
                    elif kind == 2:
                        if depth + len(outer) + 1 >= self.max_depth:
                            raise ParseError("lists nested too deeply")
                        outer.append(items)
                        items = []
                    elif kind == 3:
                        quoted = m.group(3)
                        items.append(_ESCAPE.sub(rb"\1", quoted) if b"\\" in quoted else quoted)
                    else:
                        items.append(self._atom_value(m.group(4)))
                    continue
            if self.peek_char() == 0x28:  # "(" (slow path: in a response code)
                if depth + len(outer) + 1 >= self.max_depth:
                    raise ParseError("lists nested too deeply")
                self.pos += 1
                outer.append(items)
                items = []
                continue
            item = self.read_value(depth + len(outer) + 1, partial)
            if item is END:
                if self.peek_char() == 0x29:
                    self.pos += 1
                elif not partial:
                    raise ParseError("unterminated list")
                if not outer:
                    return tuple(items)
                done = tuple(items)
                items = outer.pop()
                items.append(done)
                continue
            items.append(item)  # type: ignore[arg-type]

    def _read_atom(self, text: bytes, pos: int) -> Value:
        start = pos
        if self.code_mode:
            m = _ATOM_IN_CODE.match(text, pos)
            if m:
                pos = m.end()
        else:
            while True:
                m = _ATOM.match(text, pos)
                if m:
                    pos = m.end()
                if pos < len(text) and text[pos] == 0x5B:  # [
                    if self._no_bracket_in != self.index:
                        b = _BRACKET_BODY.match(text, pos)
                        if b:
                            pos = b.end()
                            continue
                        # The scan for "]" stopped at the end of this text part or at
                        # something the lexer itself refuses (a bad quote, a control
                        # character) before we could get there: no later "[" in this
                        # part can be closed either. Trying anyway would rescan the
                        # rest of the line at every "[" (quadratic).
                        self._no_bracket_in = self.index
                    # An unclosed "[": it and the rest of the atom are plain characters.
                    m = _ATOM_WITH_BRACKETS.match(text, pos)
                    assert m is not None
                    pos = m.end()
                break
        if pos == start:
            raise ParseError("unexpected character")
        self.pos = pos
        return self._atom_value(text[start:pos])

    def _atom_value(self, raw: bytes) -> Value:
        if self.numbers:
            # bytes.isdigit is ASCII digits only; "007" stays an atom so it is not
            # rewritten as 7 (a mailbox or keyword named 007 is not a number).
            if raw.isdigit() and (raw[0] != 0x30 or len(raw) == 1):
                return int(raw)
            if len(raw) == 3 and raw.upper() == b"NIL":
                return None
        try:
            return Atom(raw.decode("utf-8"))
        except UnicodeDecodeError:
            raise ParseError("invalid UTF-8 in atom") from None

    def read_all(self, partial: bool = False) -> list[Value]:
        """Read values to the end of input; a stray ``)`` is an error."""
        values: list[Value] = []
        while True:
            item = self.read_value(0, partial)
            if item is END:
                if self.at_end():
                    return values
                if partial:
                    self.pos += 1
                    continue
                raise ParseError("unexpected )")
            values.append(item)  # type: ignore[arg-type]
